"""What the Dagster instance records about images: each asset's latest materialization."""

import dagster as dg


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
