"""The Definitions for a catalog: assets, resources, executor (sensors, checks and jobs join here)."""

import dagster as dg

from image_assets.catalog import Catalog
from image_assets.orchestration.assets import image_assets
from image_assets.orchestration.executor import executor
from image_assets.orchestration.jobs import channel_jobs, lifecycle_jobs, retention_schedule
from image_assets.orchestration.resources import resources_for
from image_assets.orchestration.sensors import image_sensors

# A named job for every image (with its checks): what API clients launch (Dagster's GraphQL
# `launchRun`, DagsterGraphQLClient.submit_job_execution) instead of the internal __ASSET_JOB.
BUILD_JOB = "build_images"


def build_defs(catalog: Catalog) -> dg.Definitions:
    revoke_job, retention_job = lifecycle_jobs(catalog)
    build_job = dg.define_asset_job(BUILD_JOB, selection=dg.AssetSelection.all(),  # external assets are left out by default
                                    description="Build (or reuse) every image of the catalog, in layer order, with its checks.")
    return dg.Definitions(
        assets=image_assets(catalog),
        jobs=[build_job, revoke_job, retention_job, *channel_jobs(catalog)],
        schedules=[retention_schedule(retention_job)],
        resources=resources_for(catalog),
        executor=executor(),
        sensors=image_sensors(catalog),
    )
