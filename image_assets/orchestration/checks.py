"""The image checks (image_assets.checks) as Dagster asset checks: their specs on each image's
asset, and their results, run inside the image's step (see assets.built_asset)."""

from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg

from image_assets import build as buildmod
from image_assets import checks, lineage, scan
from image_assets.catalog import Catalog
from image_assets.orchestration.records import latest_metadata, latest_metadata_of
from image_assets.packer import PackerCli
from image_assets.stores import ImageRecord, Store


def check_specs(catalog: Catalog, name: str) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(check, asset=name, blocking=check in checks.BLOCKING,
                              description=checks.DESCRIPTIONS[check])
            for check in checks.image_checks(catalog, name)]


def _metadata_value(value):
    if isinstance(value, (list, dict)):
        return dg.MetadataValue.json(value)
    if isinstance(value, Path):
        return dg.MetadataValue.path(value)
    return value


def to_dagster(result: checks.CheckResult) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=dg.AssetKey([result.image]), check_name=result.check, passed=result.passed,
        severity=dg.AssetCheckSeverity.WARN if result.warn else dg.AssetCheckSeverity.ERROR,
        description=result.description, metadata={k: _metadata_value(v) for k, v in result.metadata.items()})


def results(catalog: Catalog, name: str, instance: dg.DagsterInstance, selected: set[str], packer: PackerCli,
            connect: Callable[[], Store], metadata: dict | None = None, chain: list[lineage.Link] | None = None,
            record: ImageRecord | None = None) -> Iterator[checks.CheckResult]:
    """The selected checks on the image just built (`metadata`), else on the asset's latest
    materialization, with what they read from the instance."""
    built = buildmod.BuildRecord.of(metadata or latest_metadata(instance, name))
    current = {}
    if checks.UP_TO_DATE in selected:  # one storage query, only when asked
        current = {n: (m or {}).get("image_id") for n, m in latest_metadata_of(instance, catalog.chain(name)[1:]).items()}
    yield from checks.evaluate(catalog, name, selected, packer, built, connect, current,
                               scan.instance_report_dir(instance.root_directory), chain, record)

