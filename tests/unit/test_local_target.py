"""A `target: local` catalog refuses Windows templates and vendors without a docker image (the chain built
through Dagster: tests/test_local_target.py)."""

import shutil
from pathlib import Path

import pytest
import yaml
from conftest import PROJECT

from image_assets.catalog import CatalogError, load_catalog

CONTENT = {"ansible": "packer/ansible", "scripts": "packer/scripts/linux", "check": "packer/scripts/content-check.sh"}


def write_catalog(dest: Path, images: dict, deployment: str) -> Path:
    shutil.copytree(PROJECT / "packer", dest / "packer", dirs_exist_ok=True)
    path = dest / "images.yaml"
    path.write_text(yaml.safe_dump({"defaults": {"target": "local", "deployment": deployment}, "images": images},
                                   sort_keys=False))
    return path


def test_local_catalog_refuses_windows_and_ec2_only_vendors(tmp_path, monkeypatch):
    monkeypatch.delenv("IMAGE_ASSETS_TARGET", raising=False)
    images = {"win": {"layer": "vendor", "vendor": {"owners": ["801119661308"], "name": "Windows*"}},
              "global-windows": {"layer": "global", "parent": "win", "template": "packer/aws/windows",
                                 "content": {"scripts": "packer/scripts/windows", "check": "packer/scripts/content-check.sh"}}}
    with pytest.raises(CatalogError, match="vendor.image"):
        load_catalog(write_catalog(tmp_path, images, "t"))
    images["win"]["vendor"]["image"] = "some/windows"
    with pytest.raises(CatalogError, match="global-windows.*docker.local source.*Windows"):
        load_catalog(write_catalog(tmp_path, images, "t"))
    with pytest.raises(CatalogError, match="owners and name"):
        load_catalog(write_catalog(tmp_path, {"v": {"layer": "vendor", "vendor": {"name": "x"}}}, "t"))
    monkeypatch.setenv("IMAGE_ASSETS_TARGET", "sandbox")
    with pytest.raises(CatalogError, match="set vendor.owners"):
        load_catalog(write_catalog(tmp_path, {"v": {"layer": "vendor", "vendor": {"image": "x"}}}, "t"))
