"""Where an image came from, and whether it is outdated, from image tags alone.

Every image the project builds carries `ParentImageId`; following it upwards reaches the vendor
root, the first image without `ManagedBy=image-assets`. Nothing here reads Dagster: callers pass
the current image of each asset (its latest materialization) where freshness needs it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

from image_assets.catalog import MAX_DEPTH, Catalog
from image_assets.stores import MANAGED_BY, ImageRecord, Store
from image_assets.errors import ImageAssetsError


class LineageError(ImageAssetsError):
    pass


@dataclass
class Link:
    image_id: str
    name: str  # ImageName tag; the store's name (AMI name) for an unmanaged (vendor) image
    layer: str  # ImageLayer tag; "vendor" for the unmanaged root
    version: str
    state: str  # the store's state, or "missing" when the image no longer exists
    managed: bool
    parent_image_id: str = ""
    root_image_id: str = ""  # RootImageId tag, to cross-check the walk
    revoked: str = ""
    created: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def link(image_id: str, image: ImageRecord | None) -> Link:
    if image is None:
        return Link(image_id, "", "", "", "missing", False)
    tags, managed = image.tags, image.managed
    return Link(
        image_id=image_id,
        name=tags.get("ImageName", "") if managed else image.name,
        layer=tags.get("ImageLayer", "") if managed else "vendor",
        version=tags.get("ImageVersion", ""),
        state=image.state,
        managed=managed,
        parent_image_id=tags.get("ParentImageId", "") if managed else "",
        root_image_id=tags.get("RootImageId", "") if managed else "",
        revoked=image.revoked,
        created=image.created,
    )


def walk(lookup: Callable[[str], ImageRecord | None], image_id: str) -> list[Link]:
    """The image and its ancestors, child first, ending at the first unmanaged or missing image."""
    chain: list[Link] = []
    walked: set[str] = set()
    current = image_id
    while current:
        # As deep as a catalog may be, plus its vendor root; a forged tag loop stops at once.
        if current in walked or len(chain) > MAX_DEPTH:
            shown = [l.image_id for l in chain[:5]] + (["..."] if len(chain) > 10 else []) + \
                [l.image_id for l in chain[max(5, len(chain) - 5):]] + [current]
            raise LineageError(f"ParentImageId tags of {image_id} loop or run deeper than {MAX_DEPTH}: "
                               + " -> ".join(shown))
        walked.add(current)
        chain.append(link(current, lookup(current)))
        current = chain[-1].parent_image_id if chain[-1].managed else ""
    return chain


def lineage(store: Store, image_id: str, known: Mapping[str, ImageRecord] | None = None,
            expected: Sequence[str] = ()) -> list[Link]:
    """The walk from `image_id`, over the store's records. `known`: records just read (the image,
    its parent); `expected`: ids the walk will likely pass (the parent's recorded lineage), read in
    one call. The walk still follows the ParentImageId tags; an id not read ahead is looked up alone."""
    records = dict(known or {})
    ahead = [i for i in expected if i not in records]
    records.update(store.get_many(ahead) if ahead else {})
    return walk(lambda i: records[i] if i in records else store.get(i), image_id)


def problems(chain: list[Link]) -> list[str]:
    """Inconsistencies a reader of the lineage should see (the walk itself never guesses)."""
    out = []
    head, root = chain[0], chain[-1]
    if not head.managed and head.state != "missing":
        out.append(f"{head.image_id} is not managed by image-assets (no ManagedBy={MANAGED_BY} tag)")
    if root.state == "missing":
        out.append(f"{root.image_id} no longer exists (deregistered, or lost with a sandbox reset): the lineage ends there")
    if head.root_image_id and len(chain) > 1 and head.root_image_id != root.image_id:
        out.append(f"RootImageId tag of {head.image_id} is {head.root_image_id}, but the ParentImageId chain "
                   f"ends at {root.image_id}")
    return out


# --- Outdated images ---------------------------------------------------------------------------


@dataclass
class Freshness:
    name: str
    image_id: str
    parent: str  # the parent asset
    built_on: str  # ParentImageId: the parent image it was built on
    expected_parent: str | None  # the parent asset's current image (None: never materialized)
    status: str  # "current" | "outdated" | "unknown" | "missing" (the store no longer has the image)
    cause: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def freshness(catalog: Catalog, name: str, chain: list[Link], current: Mapping[str, str | None]) -> Freshness:
    """Compare each ancestor in the image's lineage with the current image of the asset at that level.

    Outdated = the parent asset has a newer image than the one this image was built on, or the
    same holds for an ancestor (the parent is itself outdated): rebuilding the subtree fixes both.
    """
    assets = catalog.chain(name)  # [name, parent, ..., vendor]
    ids = [l.image_id for l in chain]
    parent = assets[1] if len(assets) > 1 else ""
    result = Freshness(name, ids[0], parent, ids[1] if len(ids) > 1 else "", current.get(parent), "current")
    for level in range(1, len(assets)):
        want = current.get(assets[level])
        if level >= len(ids):
            result.status = "unknown"
            result.cause = (f"lineage of {ids[0]} ends at {ids[-1]} ({chain[-1].state}) before reaching "
                            f"{assets[level]!r}; the image cannot be traced")
            return result
        if want and ids[level] != want:
            result.status = "outdated"
            if level == 1:
                result.cause = f"parent {parent!r} has a newer image {want}; this image was built on {ids[1]}"
            else:
                result.cause = (f"ancestor {assets[level - 1]!r} image {ids[level - 1]} was built on "
                                f"{assets[level]!r} {ids[level]}, whose current image is {want}")
            return result
    if len(ids) > len(assets):
        result.status = "unknown"
        result.cause = f"lineage of {ids[0]} has {len(ids)} levels but the catalog chain {assets} has {len(assets)}"
    return result


def managed_index(store: Store) -> Callable[[str], ImageRecord | None]:
    """A lookup over all managed images in one listing; other ids (vendor roots) on demand."""
    index: dict[str, ImageRecord | None] = {img.id: img for img in store.managed_images()}

    def lookup(image_id: str) -> ImageRecord | None:
        if image_id not in index:
            index[image_id] = store.get(image_id)
        return index[image_id]

    return lookup


def outdated(catalog: Catalog, store: Store, current: Mapping[str, str | None]) -> list[Freshness]:
    """Freshness of the current image of every built asset that has one."""
    lookup = managed_index(store)
    out = []
    for name, image in catalog.images.items():
        if image.parent and current.get(name):
            chain = walk(lookup, current[name])
            if chain[0].state == "missing":
                out.append(Freshness(name, current[name], image.parent, "", current.get(image.parent), "missing",
                                     missing_cause(store, name, current[name])))
            else:
                out.append(freshness(catalog, name, chain, current))
    return out


def missing_cause(store: Store, name: str, image_id: str) -> str:
    """Why an image the asset recorded is not in the store, and what to do."""
    return (f"{store.where} no longer has {image_id}, the image {name!r} recorded (deregistered, or lost with "
            f"the sandbox: `python -m image_assets.sandbox reset`, or a restart by a version that did not keep "
            f"images); rebuild: dagster asset materialize -m definitions --select '{name}*'")
