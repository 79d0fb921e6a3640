"""What the Dagster instance records about images: each asset's latest materialization."""

import dagster as dg


def latest_metadata(instance: dg.DagsterInstance, name: str) -> dict | None:
    """Metadata of the asset's latest materialization as plain values; None if never materialized."""
    event = instance.get_latest_materialization_event(dg.AssetKey([name]))
    if event is None or event.asset_materialization is None:
        return None
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}
