"""Distribution: copies of a built image in the catalog's `distribute.regions`, and launch
permission for `distribute.accounts`, made in the image's asset step once its checks pass.

A copy carries the image's own tags (its lineage included: ParentImageId names the parent in the
home region) plus SourceImageId and SourceRegion, which is how revocation and retention find every
copy of an image. A retried step reuses a finished copy instead of making a second one.
"""

from __future__ import annotations

from collections.abc import Callable

from image_assets.catalog import Catalog
from image_assets.stores import ImageRecord, Store

SOURCE_TAG = "SourceImageId"
SOURCE_REGION_TAG = "SourceRegion"


def regions(catalog: Catalog, name: str) -> list[str]:
    spec = catalog.images[name].distribute
    return list(spec.regions) if spec else []


def region_stores(catalog: Catalog, home: Store, name: str | None = None) -> dict[str, Store]:
    """The store of every region copies go to (of one image, or of every image)."""
    names = [name] if name else list(catalog.images)
    wanted = dict.fromkeys(r for n in names for r in regions(catalog, n))
    return {region: home.in_region(region) for region in wanted}


def copies_of(store: Store, image_id: str) -> list[ImageRecord]:
    return store.managed_images(**{SOURCE_TAG: image_id})


def distribute(catalog: Catalog, home: Store, name: str, image_id: str,
               log: Callable[[str], None] = print) -> dict[str, str]:
    """Copy the image to each region (reusing a finished copy) and share it; region -> copy id."""
    spec = catalog.images[name].distribute
    if not spec:
        return {}
    source = home.require_available(image_id, f"{name}: distributed")
    tags = {k: v for k, v in source.tags.items() if k != "Revoked"}
    tags.update({SOURCE_TAG: image_id, SOURCE_REGION_TAG: home.region})
    if spec.accounts:
        home.share(image_id, spec.accounts)
    out = {}
    for region, store in region_stores(catalog, home, name).items():
        # Copies are tagged once available (copy_image deregisters one that fails), so a tagged
        # copy is a finished one: a retried step reuses it.
        finished = [c for c in copies_of(store, image_id) if c.available]
        copy = finished[0] if finished else store.copy_image(source, home.region, tags)
        if spec.accounts:
            store.share(copy.id, spec.accounts)
        log(f"{name}: {image_id} {'already copied' if finished else 'copied'} to {region} as {copy.id}"
            + (f", launch permission for {len(spec.accounts)} account(s)" if spec.accounts else ""))
        out[region] = copy.id
    return out
