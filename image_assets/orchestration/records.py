"""What the Dagster instance records about images: each asset's latest materialization read,
and the observations lifecycle and channel changes write."""

import dagster as dg

from image_assets import channels, lifecycle


def open_instance() -> dg.DagsterInstance:
    """The instance in DAGSTER_HOME (a context manager)."""
    return dg.DagsterInstance.get()


def _plain(event) -> dict | None:
    if event is None or event.asset_materialization is None:
        return None
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def latest_metadata(instance: dg.DagsterInstance, name: str) -> dict | None:
    """Metadata of the asset's latest materialization as plain values; None if never materialized."""
    return _plain(instance.get_latest_materialization_event(dg.AssetKey([name])))


def latest_metadata_of(instance: dg.DagsterInstance, names) -> dict[str, dict | None]:
    """latest_metadata of many assets in one storage query (one per asset costs ~10 ms each)."""
    events = instance.get_latest_materialization_events([dg.AssetKey([n]) for n in names])
    return {name: _plain(events.get(dg.AssetKey([name]))) for name in names}


def built_metadata(instance: dg.DagsterInstance, name: str, image_id: str, limit: int = 200) -> dict | None:
    """Metadata recorded when `image_id` was built (its non-reused materialization), if this
    instance has it among the asset's last `limit` materializations."""
    for record in instance.fetch_materializations(dg.AssetKey([name]), limit=limit).records:
        materialization = record.asset_materialization
        meta = {k: v.value for k, v in (materialization.metadata if materialization else {}).items()}
        if meta.get("image_id") == image_id and meta.get("reused") is False:
            return meta
    return None


def recorded_git_refs(instance: dg.DagsterInstance, name: str, image_id: str, limit: int = 200) -> dict | None:
    """The git refs recorded when `image_id` was built, if this instance has them (built_metadata)."""
    return (built_metadata(instance, name, image_id, limit) or {}).get("git_refs")


def current_images(catalog, instance: dg.DagsterInstance) -> dict[str, str | None]:
    """The image id of every asset's latest materialization (None: never materialized)."""
    return {name: (meta or {}).get("image_id") for name, meta in latest_metadata_of(instance, catalog.images).items()}


# --- what lifecycle and channel changes record: an observation on the image's asset -------------


def move_observation(move: channels.Move) -> dg.AssetObservation:
    return dg.AssetObservation(
        asset_key=dg.AssetKey([move.image]), description=str(move),
        metadata={"action": f"channel {move.action}", "channel": move.channel, "region": move.region,
                  "from_image_id": move.from_image_id, "to_image_id": move.to_image_id, "by": move.by,
                  "at": move.at, "note": move.note})


def revocation_observation(entry: lifecycle.Revocation, reason: str) -> dg.AssetObservation:
    return dg.AssetObservation(
        asset_key=dg.AssetKey([entry.name]),
        description=f"image {entry.image_id} revoked: {entry.tag}",
        metadata={"action": "revoked", "image_id": entry.image_id, "reason": reason, "revoked": entry.tag,
                  "revoked_via": entry.via, "deprecation": entry.deprecation,
                  **({"region": entry.region} if entry.region else {})},
    )


def deletion_observation(decision: lifecycle.Decision) -> dg.AssetObservation:
    return dg.AssetObservation(
        asset_key=dg.AssetKey([decision.name]),
        description=f"image {decision.image_id} deleted by retention: {decision.reason}",
        metadata={"action": "deleted", "image_id": decision.image_id, "reason": decision.reason,
                  "deleted_at": decision.deleted_at, "created": decision.created, "snapshots": decision.snapshots,
                  **({"region": decision.region} if decision.region else {})},
    )
