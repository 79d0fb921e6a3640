"""The resources every image step and job gets: packer and the image store. Settings are read when
a resource is built (its fields' defaults, or dg.EnvVar in the Definitions), never at import."""

import dagster as dg
from pydantic import Field

from image_assets import stores
from image_assets.packer import PackerCli
from image_assets.stores import Store


class PackerResource(dg.ConfigurableResource, PackerCli):
    """packer as a Dagster resource: PackerCli's fields are its config (shown in the UI)."""


class ImageStore(dg.ConfigurableResource):
    """The image store of the catalog's target. A test hands in its own store by overriding `store`."""

    target: str = Field(description="Where images are built and kept: sandbox, aws or local (the catalog's `target`).")
    region: str = Field(description="The home region (the catalog's `defaults.region`); each distribution "
                                    "region's store is reached from the same target.")

    def store(self) -> Store:
        """The store, connected on first use and then cached for the process (for the sandbox:
        started first if it is not running). Raises StoreError when it cannot be reached."""
        return stores.connect(self.target, self.region)


def resources_for(catalog) -> dict:
    """The resources of a catalog's Definitions (tests pass the same, or their own store)."""
    return {"packer": PackerResource(), "image_store": ImageStore(target=catalog.target, region=catalog.defaults.region)}
