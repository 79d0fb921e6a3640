"""The two resources every image step and job gets: packer and the image store. A test hands in its
own store; settings are read when a resource is built, never at import."""

import dagster as dg

from image_assets.orchestration.assets import vendor_asset
from image_assets.orchestration.defs import build_defs
from image_assets.orchestration.resources import ImageStore, PackerResource
from image_assets.stores import ImageRecord


class VendorOnlyStore:
    """A store that knows one vendor image and records what it was asked (the sandbox is not under test)."""

    target, region, where = "sandbox", "eu-west-3", "a store the test made"

    def __init__(self):
        self.asked = []

    def newest_vendor_image(self, query) -> ImageRecord:
        self.asked.append(query.name)
        return ImageRecord("ami-0feedfacefeedface", "vendor-2026.12", "available", "2026-12-01T00:00:00Z")


def test_a_test_hands_in_its_own_store_and_nothing_else_is_connected(demo_catalog):
    given = VendorOnlyStore()

    class GivenStore(ImageStore):
        def store(self):
            return given

    # The fast tier refuses any sandbox: the step reaches only the store handed in.
    result = dg.materialize([vendor_asset(demo_catalog, "al2023")], resources={
        "image_store": GivenStore(target=demo_catalog.target, region=demo_catalog.defaults.region)})
    assert result.success
    materialized = result.asset_materializations_for_node("al2023")[0].metadata
    assert materialized["image_id"].value == "ami-0feedfacefeedface"
    assert given.asked == [demo_catalog.images["al2023"].vendor.name]


def test_the_definitions_carry_both_resources_with_their_fields_described(demo_catalog):
    resources = build_defs(demo_catalog).resources
    assert set(resources) == {"packer", "image_store"}
    assert (resources["image_store"].target, resources["image_store"].region) == \
        (demo_catalog.target, demo_catalog.defaults.region)
    for resource in resources.values():
        fields = type(resource).model_fields
        assert fields and all(f.description for f in fields.values()), type(resource).__name__


def test_packer_settings_are_read_when_the_resource_is_built(monkeypatch):
    monkeypatch.setenv("IMAGE_ASSETS_PACKER", "/opt/packer-a/packer")
    monkeypatch.setenv("IMAGE_ASSETS_PACKER_CLEANUP_SECONDS", "42")
    first = PackerResource()
    monkeypatch.setenv("IMAGE_ASSETS_PACKER", "/opt/packer-b/packer")
    assert (first.binary, first.cleanup_timeout_seconds) == ("/opt/packer-a/packer", 42.0)
    assert PackerResource().binary == "/opt/packer-b/packer"
    assert PackerResource(binary="packer-1.6").binary == "packer-1.6"  # config wins over the environment
