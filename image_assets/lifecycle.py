"""Revocation and retention of built images.

The store's tags are the source of truth (Revoked, ParentImageId, ManagedBy); the orchestration
layer records every change as an observation on the image's asset (key = its ImageName), so the
UI shows when an image was revoked or deleted, and why.
"""

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from image_assets import channels as channelsmod
from image_assets import distribution
from image_assets.catalog import Catalog
from image_assets.errors import ImageAssetsError
from image_assets.stores import MANAGED_BY, ImageRecord, Store

TAG_VALUE_LIMIT = 256  # EC2 tag values: at most 256 Unicode characters
REVOKED_TAG = "Revoked"


class LifecycleError(ImageAssetsError):
    pass


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _stamp(at: datetime) -> str:
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _created(image: ImageRecord) -> datetime:
    text = image.created or "1970-01-01T00:00:00Z"
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- revocation -------------------------------------------------------------------------------


@dataclass
class Revocation:
    image_id: str
    name: str
    tag: str  # the Revoked tag value
    via: str  # the image whose revocation caused this one (itself for the root)
    already: bool = False  # was revoked before: tag kept as it was, nothing recorded again
    deprecation: str = ""  # what happened to the store's deprecation time
    channels: list = field(default_factory=list)  # channels.Move: channels moved off this image
    region: str = ""  # set on a copy in a distribution region (its source is the image revoked there)

    def as_dict(self) -> dict:
        return asdict(self)


def revoked_value(at: datetime, reason: str, root_id: str, image_id: str) -> str:
    reason = re.sub(r"\s+", " ", reason).strip()
    via = "" if root_id == image_id else f" (built on revoked {root_id})"
    return f"{_stamp(at)}{via}: {reason}"[:TAG_VALUE_LIMIT]


def descendants(images: list[ImageRecord], image_id: str) -> list[ImageRecord]:
    """Managed images built on image_id, transitively (by ParentImageId tags), parents first."""
    children: dict[str, list[ImageRecord]] = {}
    for image in images:
        children.setdefault(image.tags.get("ParentImageId", ""), []).append(image)
    out, queue, seen = [], [image_id], {image_id}
    while queue:
        for child in children.get(queue.pop(0), []):
            if child.id not in seen:
                seen.add(child.id)
                out.append(child)
                queue.append(child.id)
    return out


def revoke(store: Store, image_id: str, reason: str, at: datetime | None = None, catalog: Catalog | None = None,
           by: str = "") -> list[Revocation]:
    """Tag the image and every managed image built on it (transitively) Revoked; set deprecation.
    With the catalog, their copies in distribution regions too (same Revoked value), and each
    channel that pointed at one of them, in any region, moves back (channels.off_revoked)."""
    reason = (reason or "").strip()
    if not reason:
        raise LifecycleError("a revocation needs a reason (--reason TEXT)")
    at = at or utcnow()
    image = store.get(image_id)
    if image is None:
        raise LifecycleError(f"image {image_id} does not exist in {store.where}")
    if not image.managed:
        raise LifecycleError(f"image {image_id} ({image.name}) is not managed by image-assets "
                             f"(no ManagedBy={MANAGED_BY} tag): only images this project built can be revoked")
    out = []
    for target in [image, *descendants(store.managed_images(), image_id)]:
        entry = Revocation(target.id, target.tags.get("ImageName", ""), target.revoked, image_id)
        if entry.tag:
            entry.already = True  # keep the first reason and time; still walk its descendants
        else:
            entry.tag = revoked_value(at, reason, image_id, target.id)
            store.tag(target.id, {REVOKED_TAG: entry.tag})
            entry.deprecation = store.deprecate(target.id, at)
        out.append(entry)
    if catalog is None:
        return out
    regional = {store.region: store}
    for entry in list(out):
        if entry.name not in catalog.images:
            continue
        for region, there in distribution.region_stores(catalog, store, entry.name).items():
            regional[region] = there
            for copy in distribution.copies_of(there, entry.image_id):
                twin = Revocation(copy.id, entry.name, copy.revoked, image_id, region=region)
                if twin.tag:
                    twin.already = True
                else:
                    twin.tag = entry.tag
                    there.tag(copy.id, {REVOKED_TAG: twin.tag})
                    twin.deprecation = there.deprecate(copy.id, at)
                out.append(twin)
    by_id = {entry.image_id: entry for entry in out}
    for region, there in regional.items():
        revoked: dict[str, set[str]] = {}
        for entry in out:
            if (entry.region or store.region) == region:
                revoked.setdefault(entry.name, set()).add(entry.image_id)
        for move in channelsmod.off_revoked(catalog, there, revoked, by or channelsmod.who()):
            by_id[move.from_image_id].channels.append(move)
    return out


# --- retention --------------------------------------------------------------------------------


@dataclass
class Decision:
    image_id: str
    name: str
    created: str
    delete: bool
    reason: str
    snapshots: list[str] = field(default_factory=list)
    parent_image_id: str = ""
    region: str = ""  # set on a copy in a distribution region
    deleted_at: str = ""  # set when retention deleted it

    def as_dict(self) -> dict:
        return asdict(self)


def _newest_first(images: list[ImageRecord]) -> list[ImageRecord]:
    # CreationDate has 1-second resolution on the sandbox: the version and id break ties stably.
    return sorted(images, key=lambda i: (i.created, i.tags.get("ImageVersion", ""), i.id), reverse=True)


def plan_retention(catalog: Catalog, images: list[ImageRecord], current: Mapping[str, str | None],
                   now: datetime | None = None, held: Mapping[str, str] | None = None) -> list[Decision]:
    """Keep or delete each managed image; pure, so it is tested without a store.

    Kept: the newest `keep` per image name, anything younger than `min_age`, the current
    materialization of every asset, images a release channel points at (`held`: id -> reason),
    images not yet available, and every ancestor of a kept image.
    Names not in the catalog, or whose asset has no materialization in this Dagster instance,
    are left alone entirely: without a policy or the current image, deleting would be a guess.
    """
    now = now or utcnow()
    # Only this deployment's images: another Dagster instance sharing the account has its own
    # current images, which this instance cannot see (an image without the tag is never deleted).
    images = [i for i in images if i.managed and i.tags.get("Deployment") == catalog.deployment]
    by_name: dict[str, list[ImageRecord]] = {}
    for image in images:
        by_name.setdefault(image.tags.get("ImageName", ""), []).append(image)
    current_ids = {v for v in current.values() if v}
    held = held or {}
    decisions: dict[str, Decision] = {}
    for name, group in by_name.items():
        policy = catalog.images[name].retention if name in catalog.images else None
        for rank, image in enumerate(_newest_first(group)):
            def decide(delete: bool, reason: str, image=image):
                decisions[image.id] = Decision(image.id, name, image.created, delete, reason,
                                               list(image.snapshots), image.tags.get("ParentImageId", ""))
            if policy is None:
                decide(False, f"image name {name!r} is not in the catalog: no retention policy")
            elif not current.get(name):
                decide(False, f"asset {name!r} has no materialization in this Dagster instance")
            elif image.id in current_ids:
                decide(False, "current materialization")
            elif image.id in held:
                decide(False, held[image.id])
            elif rank < policy.keep:
                decide(False, f"among the newest {policy.keep}")
            elif now - _created(image) < policy.min_age_delta:
                decide(False, f"younger than min_age {policy.min_age}")
            elif image.state == "pending":
                decide(False, "pending (a build in progress)")
            else:
                decide(True, f"beyond the newest {policy.keep} and older than {policy.min_age}")
    # The parent of a kept image stays, and so on up its chain (kept children must stay traceable).
    for decision in list(decisions.values()):
        child, seen = decision, {decision.image_id}
        while not child.delete and child.parent_image_id in decisions and child.parent_image_id not in seen:
            parent = decisions[child.parent_image_id]
            if parent.delete:
                parent.delete, parent.reason = False, f"parent of kept image {child.image_id}"
            seen.add(parent.image_id)
            child = parent
    return sorted(decisions.values(), key=lambda d: (d.name, d.created, d.image_id))


def apply_retention(store: Store, decisions: list[Decision]) -> list[Decision]:
    """Deregister each image planned for deletion and delete its snapshots; returns those deleted."""
    deleted = []
    for decision in decisions:
        if not decision.delete:
            continue
        image = store.get(decision.image_id)
        if image is None:
            continue  # gone already (another run, or by hand)
        if not image.managed:  # re-checked right before the delete
            raise LifecycleError(f"refusing to delete {decision.image_id}: not managed by image-assets")
        decision.snapshots = store.deregister(image)
        deleted.append(decision)
    return deleted


def plan_copies(decisions: list[Decision], copies: Mapping[str, list[ImageRecord]]) -> list[Decision]:
    """A copy (region -> copies) goes with its source: deleted when the source is, else kept."""
    by_source = {d.image_id: d for d in decisions}
    out = []
    for region, images in copies.items():
        for copy in images:
            source = by_source.get(copy.tags.get(distribution.SOURCE_TAG, ""))
            if source is None:
                delete, reason = False, "copy of an image not in this plan"
            else:
                delete, reason = source.delete, f"copy of {'deleted' if source.delete else 'kept'} {source.image_id}"
            out.append(Decision(copy.id, copy.tags.get("ImageName", ""), copy.created, delete, reason,
                                list(copy.snapshots), copy.tags.get("ParentImageId", ""), region))
    return out


def retention(catalog: Catalog, store: Store, current: Mapping[str, str | None], dry_run: bool,
              now: datetime | None = None) -> list[Decision]:
    """Plan retention and, unless `dry_run`, apply it: the decisions, each deleted one with its
    `deleted_at`."""
    regional = distribution.region_stores(catalog, store)
    copies = {r: [i for i in s.managed_images(Deployment=catalog.deployment) if i.tags.get(distribution.SOURCE_TAG)]
              for r, s in regional.items()}
    # A channel holds its image in every region: a held copy holds its source (and so itself).
    held = channelsmod.held(catalog, store)
    for region, there in regional.items():
        source_of = {c.id: c.tags[distribution.SOURCE_TAG] for c in copies[region]}
        for copy_id, why in channelsmod.held(catalog, there).items():
            if copy_id in source_of:
                held.setdefault(source_of[copy_id], f"{why} (its copy {copy_id})")
    decisions = plan_retention(catalog, store.managed_images(Deployment=catalog.deployment), current, now, held)
    decisions += plan_copies(decisions, copies)
    if dry_run:
        return decisions
    at = _stamp(now or utcnow())
    # Copies first: a source is never gone while a copy of it that should go is still there.
    deleted = [d for r, there in regional.items() for d in apply_retention(there, [d for d in decisions if d.region == r])]
    deleted += apply_retention(store, [d for d in decisions if not d.region])
    for decision in deleted:
        decision.deleted_at = at
    return decisions
