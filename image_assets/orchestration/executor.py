"""The run's executor: Dagster's multiprocess executor, except for a run whose steps can only run
one after another (a chain of layers, or one image), which runs them in the run's own process.

A chain gains nothing from a process per step but pays for it: the forkserver's first start
(~1.3 s, importing Dagster and the code location again) and a worker start per step (~0.1-0.5 s).
What both executors share is Dagster's: retries, the `packer` pool, blocking checks, per-step
event logs and cancel (Dagster interrupts the step, the packer runner stops packer). What a chain
in process gives up: one compute log file for the run instead of one per step (the packer output
is in each step's event log either way) and process isolation, which a chain, one step at a
time, does not use for parallelism.
"""

import os

import dagster as dg
from dagster._core.executor.in_process import InProcessExecutor  # not exported; the class behind dg.in_process_executor
from dagster._core.instance.config import PoolGranularity

PACKER_POOL = "packer"  # every built image's step claims a slot of it (assets.built_asset)

# Steps run in processes forked from a server that has already imported the code, and packer
# builds mostly wait on the cloud, so more siblings than cores run at once (the `packer` pool
# caps builds across runs).
# Measured with py-spy: without the storage modules, ~40% of each step's start went to importing
# them again in every worker (Dagster imports them lazily when a worker opens the instance), and
# a third to reading the EC2 API model for each worker's boto3 client.
PRELOAD = ["dagster", "definitions", "dagster._core.storage.base_storage", "dagster._core.storage.sqlite_storage",
           "dagster._core.storage.event_log.sqlite", "dagster._core.storage.runs.sqlite",
           "dagster._core.storage.schedules.sqlite", "upath", "image_assets.orchestration.forkserver_warmup"]
MULTIPROCESS = {"max_concurrent": 8, "start_method": {"forkserver": {"preload_modules": PRELOAD}}}


def steps_at_once(instance: dg.DagsterInstance, configured: int) -> int:
    """The run's step limit, at most the `packer` pool's slots. A step started beyond them fails its
    slot claim, and Dagster claims again after 1 s, 1.1 s, 1.21 s... up to 15 s, so it starts up to
    that long after a slot frees (the shipped pool has 4 slots, the executor 8 steps); a step held
    back by this limit starts as soon as a sibling's process ends. Slots held by other runs still
    make a step wait for its claim."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return configured
    config = storage.get_pool_config()
    if config.pool_granularity == PoolGranularity.RUN:  # a run holds one slot, its steps none
        return configured
    pool = next((p for p in storage.get_pool_limits() if p.name == PACKER_POOL), None)
    # A pool set from the default follows the default (Dagster re-initializes it on the next claim).
    limit = pool.limit if pool is not None and not pool.from_default else config.default_pool_limit
    return min(configured, limit) if limit else configured


def is_chain(execution_plan) -> bool:
    """True when no two of the plan's steps can ever run at once: one step per dependency level."""
    return all(len(level) <= 1 for level in execution_plan.get_steps_to_execute_by_level())


class ChainInProcessExecutor(dg.Executor):
    def __init__(self, multiprocess: dg.Executor):
        self.multiprocess = multiprocess
        self.in_process = InProcessExecutor(retries=multiprocess.retries,
                                            step_dependency_config=multiprocess.step_dependency_config)

    @property
    def retries(self):
        return self.multiprocess.retries

    @property
    def step_dependency_config(self):
        return self.multiprocess.step_dependency_config

    def execute(self, plan_context, execution_plan):
        chosen = self.in_process if is_chain(execution_plan) else self.multiprocess
        yield from chosen.execute(plan_context, execution_plan)


@dg.executor(name="multiprocess_chain_in_process", config_schema=dg.multiprocess_executor.config_schema,
             requirements=dg.multiple_process_executor_requirements())
def multiprocess_chain_in_process(init_context):
    """Dagster's multiprocess executor (same config, at most the `packer` pool's slots at once); a run
    whose steps form a chain runs in process."""
    config = dict(init_context.executor_config)
    config["max_concurrent"] = steps_at_once(init_context.instance, config["max_concurrent"])  # MULTIPROCESS sets it
    multiprocess = dg.multiprocess_executor.executor_creation_fn(init_context._replace(executor_config=config))
    return ChainInProcessExecutor(multiprocess)


# IMAGE_ASSETS_EXECUTOR: `auto` (the default, above), or one of Dagster's two for every run:
# `multiprocess`, or `in_process` (lowest overhead, no sibling parallelism).
EXECUTORS = {
    "auto": multiprocess_chain_in_process.configured(MULTIPROCESS),
    "multiprocess": dg.multiprocess_executor.configured(MULTIPROCESS),
    "in_process": dg.in_process_executor,
}


def executor() -> dg.ExecutorDefinition:
    name = os.environ.get("IMAGE_ASSETS_EXECUTOR", "auto")
    if name not in EXECUTORS:
        raise ValueError(f"IMAGE_ASSETS_EXECUTOR={name!r}: choose one of {', '.join(EXECUTORS)}")
    return EXECUTORS[name]
