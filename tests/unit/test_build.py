"""The asset graph of the demo catalog, and definitions that load without git, cloud or packer (the builds
themselves: tests/test_build.py)."""

import os
import subprocess
import sys

import dagster as dg
from conftest import PROJECT

from image_assets.catalog import load_catalog
from image_assets.orchestration.defs import build_defs


def test_asset_graph_shape_for_the_demo_catalog():
    catalog = load_catalog()
    defs = build_defs(catalog)
    graph = defs.resolve_asset_graph()
    keys = {key.path[0] for key in graph.get_all_asset_keys()}
    assert keys == set(catalog.images)
    for name, image in catalog.images.items():
        node = graph.get(dg.AssetKey([name]))
        assert node.group_name == image.layer.value
        parents = {key.path[0] for key in node.parent_keys}
        assert parents == ({image.parent} if image.parent else set())
        kinds = set(defs.resolve_assets_def(dg.AssetKey([name])).specs_by_key[dg.AssetKey([name])].kinds)
        assert "aws" in kinds and (("packer" in kinds) != bool(image.vendor))


def test_importing_definitions_makes_no_git_cloud_or_packer_call(tmp_path):
    # With git and packer off PATH and no sandbox port reachable, the import must still succeed.
    env = {**os.environ, "PATH": str(tmp_path), "IMAGE_ASSETS_SANDBOX_PORT": "1"}
    code = "import definitions; print(len(definitions.defs.resolve_asset_graph().get_all_asset_keys()))"
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) == len(load_catalog().images)
