"""The Dagster UI as a person sees it: `dagster dev` on a built demo tree, pages taken by real
headless Chromium (image_assets/devtools/ui_screenshots.py) and read back as text."""

import os
import shutil

import dagster as dg
import pytest
from conftest import PROJECT, write_demo_catalog

from image_assets.devtools import ui_screenshots as ui
from image_assets.catalog import load_catalog
from image_assets.orchestration.records import latest_metadata

pytestmark = pytest.mark.skipif(not ui.chromium(), reason="chromium not found: apt-get install -y chromium "
                                                          "(.ci/run installs it when missing)")


@pytest.mark.timeout(1800)  # the Debian tree is built for real first (6-9 minutes here)
def test_ui_pages_show_the_image_tree(tmp_path, work_dir):
    catalog_path = write_demo_catalog(tmp_path / "project", machines=True)  # as bin/demo builds it: every check runs
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(PROJECT / "dagster.yaml", home / "dagster.yaml")
    assert ui.ensure_built(home, catalog_path)
    assert not ui.ensure_built(home, catalog_path)  # a built tree is not built again
    catalog = load_catalog(catalog_path)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        meta = latest_metadata(instance, ui.SERVICE)

    with ui.dagster_dev(home, catalog_path, tmp_path / "dagster-dev.log") as (base, group):
        shots = ui.take(base, tmp_path / "shots", catalog, meta)
    with pytest.raises(ProcessLookupError):  # webserver, daemon and code servers all stopped
        os.killpg(group, 0)

    for name, (png, text, missing) in shots.items():
        assert not missing, f"the {name} page lacks {missing}; it shows: {text[:3000]}"
        assert png.stat().st_size > 20_000, f"{png} looks blank"
    # The lineage graph with its layer groups open: the images themselves are drawn, not only groups.
    assert all(ui.shown(name, shots["lineage"][1]) for name in ("debian-11", "global-linux", "service-urllib3"))
    asset = shots["asset"][1]
    assert meta["image_id"] in asset and meta["parent_image_id"] in asset and meta["root_image_id"] in asset
    assert "python310" in asset  # the parent's name (its upstream asset), not only its image id
    # What a platform engineer looks for first comes first in the metadata table.
    order = [asset.index(f" {key} ") for key in ("image_id", "parent_image_id", "root_image_id", "git_refs",
                                                   "fingerprint", "build_seconds")]
    assert order == sorted(order), order
    assert all(f"{repo}" in asset and ref.split("@")[1] in asset for repo, ref in meta["git_refs"].items())
    chain = shots["asset-lineage"][1]  # the image and its ancestors down to the vendor image, as full nodes
    assert all(f"{name} Latest event" in chain for name in catalog.chain(ui.SERVICE)), chain[:3000]
    checks = shots["checks"][1]
    assert all(f"{check} Succeeded" in checks for check in ("exists_and_available", "tags_complete",
                                                            "not_revoked", "template_valid", "up_to_date"))
    assert "git_tag_sensor" in shots["sensors"][1] and "vendor_image_sensor" in shots["sensors"][1]
    sensor = shots["git-tag-sensor"][1]  # its cursor: the tag and commit it saw in each repo
    assert all(ref.split("@")[1] in sensor for ref in meta["git_refs"].values()), sensor[:3000]
