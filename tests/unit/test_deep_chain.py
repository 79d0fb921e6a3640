"""A catalog whose parent chain is 1,500 images deep: loaded, selected by the sensors and walked by
the lineage without recursion (Python's recursion limit is 1,000 frames)."""

import pytest
import yaml

from image_assets import lineage
from image_assets.catalog import load_catalog
from image_assets.stores import MANAGED_BY, ImageRecord
from unit.test_git_sensor import VARIABLES, git, only_request, selected, world  # noqa: F401 (fixture)

DEPTH = 1500


def deep_images() -> dict:
    images = {"base": {"layer": "vendor", "vendor": {"owners": ["amazon"], "name": "al2023-*"}}}
    parent = "base"
    for i in range(DEPTH):
        images[f"g{i}"] = {"layer": "global", "parent": parent, "template": "templates/linux"}
        parent = f"g{i}"
    images["g0"]["repos"] = ["roles"]
    images["g0-sibling"] = {"layer": "global", "parent": "g0", "template": "templates/linux"}
    return images


def test_a_1500_deep_chain_loads_and_a_tag_rebuilds_all_of_it_parents_first(world):
    world.repos = {"roles": world.repos["roles"]}
    path = world.tmp / "images.yaml"
    path.write_text(yaml.safe_dump({"defaults": {"target": "sandbox", "git_timeout_seconds": 10},
                                    "repos": world.repos, "images": deep_images()}, sort_keys=False))
    catalog = load_catalog(path)
    assert len(catalog.chain(f"g{DEPTH - 1}")) == DEPTH + 1
    assert len(catalog.descendants("base")) == DEPTH + 1
    from image_assets.orchestration.defs import build_defs

    defs = build_defs(catalog)
    cursor = world.tick(defs=defs).cursor
    world.tag("roles", "v1.1.0", new_commit=True)
    request = only_request(world.tick(cursor, defs=defs))
    assert selected(request) == ["g0", "g1", "g0-sibling"] + [f"g{i}" for i in range(2, DEPTH)]


def test_the_lineage_walks_a_1500_deep_chain_of_image_tags():
    records = {"ami-root": ImageRecord("ami-root", "vendor", "available", "")}
    parent = "ami-root"
    for i in range(DEPTH):
        records[f"ami-{i}"] = ImageRecord(f"ami-{i}", f"g{i}", "available", "",
                                          {"ManagedBy": MANAGED_BY, "ImageName": f"g{i}", "ParentImageId": parent})
        parent = f"ami-{i}"
    chain = lineage.walk(records.get, parent)
    assert [link.image_id for link in chain] == [f"ami-{i}" for i in reversed(range(DEPTH))] + ["ami-root"]
    # A forged loop in the tags still stops the walk with a clear error.
    records["ami-0"].tags["ParentImageId"] = f"ami-{DEPTH - 1}"
    with pytest.raises(lineage.LineageError, match="loop"):
        lineage.walk(records.get, parent)
