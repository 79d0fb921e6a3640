"""deploy/dagster.yaml against a real PostgreSQL server: storage, a CLI build, pools, the run queue."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from conftest import PROJECT, latest
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_docker import DockerRunLauncher
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

import teamkit
from image_assets.packer import PackerCli

DAGSTER = str(Path(sys.executable).parent / "dagster")
CATALOG = f"""\
defaults: {{target: sandbox, region: us-east-1}}
images:
  al2023:
    layer: vendor
    vendor: {{owners: [amazon], name: "al2023-ami-2023.*-kernel-6.1-x86_64"}}
  deploy-linux:
    layer: global
    parent: al2023
    template: {PROJECT / "packer" / "aws" / "linux"}
    content:
      scripts: packer/scripts/linux
      check: packer/scripts/content-check.sh
    variables: {{scripts: [sshd-banner.sh]}}
"""


def run(cmd, **kw):
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)
    assert result.returncode == 0, f"{cmd}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL server on 127.0.0.1:<free port> with a password user, always stopped."""
    try:
        with teamkit.postgres_server() as server:
            yield server
    except teamkit.Missing as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def home(postgres, tmp_path_factory):
    """DAGSTER_HOME with deploy/dagster.yaml and DAGSTER_PG_* set here and for the CLI."""
    home = tmp_path_factory.mktemp("deploy_home")
    shutil.copy(PROJECT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    env = {"DAGSTER_HOME": str(home), "DAGSTER_PG_HOST": postgres["host"], "DAGSTER_PG_PORT": str(postgres["port"]),
           "DAGSTER_PG_USER": postgres["user"], "DAGSTER_PG_PASSWORD": postgres["password"],
           "DAGSTER_PG_DB": postgres["db"]}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        yield home


def cli_env(tmp_path) -> dict:
    catalog = tmp_path / "images.yaml"
    catalog.write_text(CATALOG)
    shutil.copytree(PROJECT / "packer" / "scripts", tmp_path / "packer" / "scripts", dirs_exist_ok=True)  # content: in its tree
    return {**os.environ, "IMAGE_ASSETS_CATALOG": str(catalog), "IMAGE_ASSETS_WORK_DIR": str(tmp_path / "work")}


def test_instance_uses_postgres_and_the_queued_coordinator(home):
    info = run([DAGSTER, "instance", "info"])
    assert "PostgresRunStorage" in info or "DagsterPostgresStorage" in info, info
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 4
        assert isinstance(instance.run_launcher, DockerRunLauncher)  # the team config runs every run in a container
        assert instance.run_launcher.container_kwargs["stop_timeout"] > PackerCli().cleanup_timeout_seconds


def test_cli_materialization_is_stored_in_postgres(home, postgres, tmp_path, cloud):
    cmd = [DAGSTER, "asset", "materialize", "-m", "definitions", "--working-directory", str(PROJECT),
           "--select", "al2023,deploy-linux"]
    result = subprocess.run(cmd, env=cli_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    with dg.DagsterInstance.get() as instance:
        meta = latest(instance, "deploy-linux")
        assert meta["parent_image_id"] == latest(instance, "al2023")["image_id"]
        assert cloud.get(meta["image_id"]).state == "available"
    rows = run([*postgres["psql"], "-c", "SELECT count(*) FROM event_logs "
                "WHERE dagster_event_type = 'ASSET_MATERIALIZATION' AND asset_key LIKE '%deploy-linux%'"])
    assert rows.strip() == "1"


def test_pool_limit_set_through_the_cli(home):
    run([DAGSTER, "instance", "concurrency", "set", "packer", "2"])
    with dg.DagsterInstance.get() as instance:
        assert instance.event_log_storage.get_concurrency_info("packer").slot_count == 2


def test_submitted_run_waits_in_the_queue(home, tmp_path):
    # No daemon runs here, so a run the QueuedRunCoordinator accepted stays QUEUED.
    config = tmp_path / "run.yaml"
    config.write_text("ops: {apply_retention: {config: {dry_run: true}}}\n")
    run([DAGSTER, "job", "launch", "-m", "definitions", "--working-directory", str(PROJECT),
         "-j", "image_retention", "-c", str(config)], env=cli_env(tmp_path))
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs(dg.RunsFilter(job_name="image_retention"))
        assert [r.status for r in runs] == [dg.DagsterRunStatus.QUEUED]
