"""The default executor: a run whose steps form a chain runs in the run's process, any other run on
Dagster's multiprocess executor; both through the real CLI with real packer builds (the executor's
settings: tests/unit/test_executor.py)."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
from conftest import PROJECT, latest, write_demo_catalog


def run_cli(home, catalog_path, select, **env):
    cmd = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "definitions",
           "--working-directory", str(PROJECT), "--select", select]
    done = subprocess.run(cmd, env={**os.environ, "DAGSTER_HOME": str(home), "IMAGE_ASSETS_CATALOG": str(catalog_path), **env},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def engine_messages(instance, run):
    return [e.user_message for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)]


def test_a_chain_runs_in_process_and_a_tree_on_the_multiprocess_executor(tmp_path, work_dir, cloud):
    catalog_path = write_demo_catalog(tmp_path / "project")
    home = tmp_path / "home"
    home.mkdir()
    run_cli(home, catalog_path, "al2023,global-linux,python310,service-urllib3")  # al2023 -> ... -> a service
    run_cli(home, catalog_path, "global-linux*")  # global-linux, python310 and two services beside it
    with dg.DagsterInstance.from_config(str(home)) as instance:
        tree_run, chain_run = instance.get_runs(limit=2)
        assert any(m.startswith("Executing steps in process") for m in engine_messages(instance, chain_run))
        assert any("multiprocess executor" in m for m in engine_messages(instance, tree_run))
        for run in (chain_run, tree_run):
            assert run.status == dg.DagsterRunStatus.SUCCESS
        # The chain's steps ran in order, each on its parent's new image.
        assert latest(instance, "service-urllib3")["parent_image_id"] == latest(instance, "python310")["image_id"]
        assert latest(instance, "service-sshd-banner")["parent_image_id"] == latest(instance, "global-linux")["image_id"]


def test_a_run_starts_at_most_as_many_steps_as_the_packer_pool_has_slots(tmp_path, work_dir, cloud):
    catalog_path = write_demo_catalog(tmp_path / "project")
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("concurrency:\n  pools:\n    default_limit: 1\ntelemetry:\n  enabled: false\n")
    run_cli(home, catalog_path, "al2023")
    # global-linux, then python310 and service-sshd-banner at once, then service-urllib3: with 8 steps
    # allowed and 1 slot, a sibling would be started and wait on its slot claim.
    run_cli(home, catalog_path, "global-linux*")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run = instance.get_runs(limit=1)[0]
        assert run.status == dg.DagsterRunStatus.SUCCESS
        messages = engine_messages(instance, run)
        assert any("multiprocess executor" in m for m in messages)
        assert not [m for m in messages if "blocked by limit for pool" in m]
