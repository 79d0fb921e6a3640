"""Revocation and retention of built images, as plain functions and as Dagster jobs.

The store's tags are the source of truth (Revoked, ParentImageId, ManagedBy); every change is
also recorded as an AssetObservation on the image's asset (key = its ImageName), so the UI shows
when an image was revoked or deleted, and why.
"""

import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import dagster as dg

from image_assets import channels as channelsmod
from image_assets import distribution
from image_assets.orchestration.records import latest_metadata_of
from image_assets.catalog import Catalog
from image_assets.errors import ImageAssetsError, StoreError
from image_assets.stores import MANAGED_BY, ImageRecord, Store, connect

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
        for region, there in distribution.region_stores(catalog, entry.name).items():
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


def revocation_observation(entry: Revocation, reason: str) -> dg.AssetObservation:
    return dg.AssetObservation(
        asset_key=dg.AssetKey([entry.name]),
        description=f"image {entry.image_id} revoked: {entry.tag}",
        metadata={"action": "revoked", "image_id": entry.image_id, "reason": reason, "revoked": entry.tag,
                  "revoked_via": entry.via, "deprecation": entry.deprecation,
                  **({"region": entry.region} if entry.region else {})},
    )


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
              record: Callable[[dg.AssetObservation], None], now: datetime | None = None) -> list[Decision]:
    regional = distribution.region_stores(catalog)
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
        record(dg.AssetObservation(
            asset_key=dg.AssetKey([decision.name]),
            description=f"image {decision.image_id} deleted by retention: {decision.reason}",
            metadata={"action": "deleted", "image_id": decision.image_id, "reason": decision.reason,
                      "deleted_at": at, "created": decision.created, "snapshots": decision.snapshots,
                      **({"region": decision.region} if decision.region else {})},
        ))
    return decisions


def current_images(catalog: Catalog, instance: dg.DagsterInstance) -> dict[str, str | None]:
    """The image id of every asset's latest materialization (None: never materialized)."""
    return {name: (meta or {}).get("image_id") for name, meta in latest_metadata_of(instance, catalog.images).items()}


# --- Dagster jobs and schedule ----------------------------------------------------------------


class RevokeConfig(dg.Config):
    image_id: str
    reason: str


class RetentionConfig(dg.Config):
    dry_run: bool = False


def _store(catalog: Catalog) -> Store:
    try:
        return connect(catalog.target, catalog.defaults.region)
    except StoreError as exc:
        raise dg.Failure(description=str(exc)) from None


def lifecycle_jobs(catalog: Catalog) -> list[dg.JobDefinition]:
    @dg.op(name="revoke_image_and_descendants")
    def revoke_op(context: dg.OpExecutionContext, config: RevokeConfig) -> None:
        try:
            entries = revoke(_store(catalog), config.image_id, config.reason, catalog=catalog,
                             by=channelsmod.who(context.run.tags))
        except (LifecycleError, StoreError) as exc:
            raise dg.Failure(description=str(exc)) from None
        for entry in entries:
            if entry.already:
                context.log.info(f"{entry.image_id} ({entry.name}) was already revoked: {entry.tag}")
            else:
                context.log.info(f"revoked {entry.image_id} ({entry.name}): {entry.tag}; {entry.deprecation}")
                context.log_event(revocation_observation(entry, config.reason))
            for move in entry.channels:
                context.log.info(str(move))
                context.log_event(move.observation())

    @dg.op(name="apply_retention")
    def retention_op(context: dg.OpExecutionContext, config: RetentionConfig) -> None:
        try:
            decisions = retention(catalog, _store(catalog), current_images(catalog, context.instance),
                                  config.dry_run, context.log_event)
        except (LifecycleError, StoreError) as exc:
            raise dg.Failure(description=str(exc)) from None
        verb = "would delete" if config.dry_run else "deleted"
        for d in decisions:
            context.log.info(f"{verb if d.delete else 'keep'} {d.image_id} ({d.name}, {d.created}): {d.reason}")

    # One op each: the in-process executor avoids a step process per run.
    @dg.job(name="revoke_image", executor_def=dg.in_process_executor,
            description="Tag an image and every image built on it Revoked, with a reason; set deprecation.")
    def revoke_image():
        revoke_op()

    @dg.job(name="image_retention", executor_def=dg.in_process_executor,
            description="Deregister images (and delete their snapshots) beyond each image's retention policy.")
    def image_retention():
        retention_op()

    return [revoke_image, image_retention]


def retention_schedule(job: dg.JobDefinition) -> dg.ScheduleDefinition:
    # Ships stopped: deleting images is switched on deliberately (UI or `dagster schedule start`).
    return dg.ScheduleDefinition(name="image_retention_daily", job=job, cron_schedule="0 4 * * *",
                                 execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.STOPPED)
