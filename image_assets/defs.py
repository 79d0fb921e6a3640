"""The Definitions for a catalog: assets, resources, executor (sensors, checks and jobs join here)."""

import os

import dagster as dg

from image_assets.assets import image_assets
from image_assets.catalog import Catalog
from image_assets.channels import channel_jobs
from image_assets.lifecycle import lifecycle_jobs, retention_schedule
from image_assets.packer import PackerCli
from image_assets.sensors import image_sensors

# Steps run in processes forked from a server that has already imported the code, and packer
# builds mostly wait on the cloud, so more siblings than cores run at once (the `packer` pool
# caps builds across runs). IMAGE_ASSETS_EXECUTOR=in_process trades sibling parallelism for
# the lowest per-step overhead (one process; see bench/bench_overhead.py).
# Measured with py-spy: without the storage modules, ~40% of each step's start went to importing
# them again in every worker (Dagster imports them lazily when a worker opens the instance), and
# a third to reading the EC2 API model for each worker's boto3 client.
PRELOAD = ["dagster", "definitions", "dagster._core.storage.base_storage", "dagster._core.storage.sqlite_storage",
           "dagster._core.storage.event_log.sqlite", "dagster._core.storage.runs.sqlite",
           "dagster._core.storage.schedules.sqlite", "upath", "image_assets.forkserver_warmup"]
EXECUTORS = {
    "multiprocess": dg.multiprocess_executor.configured(
        {"max_concurrent": 8, "start_method": {"forkserver": {"preload_modules": PRELOAD}}}
    ),
    "in_process": dg.in_process_executor,
}


def executor():
    name = os.environ.get("IMAGE_ASSETS_EXECUTOR", "multiprocess")
    if name not in EXECUTORS:
        raise ValueError(f"IMAGE_ASSETS_EXECUTOR={name!r}: choose one of {', '.join(EXECUTORS)}")
    return EXECUTORS[name]


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
        resources={"packer": PackerCli()},
        executor=executor(),
        sensors=image_sensors(catalog),
    )
