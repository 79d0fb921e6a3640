"""Item 1: terminating a run (SIGTERM to the dagster process, as `dagster run terminate` or the
CLI does) while packer builds: packer gets SIGINT, cleans up, and the sandbox holds nothing new."""

import os
import signal
import uuid

import dagster as dg
import pytest
from faultkit import IMAGE, cli_env, inventory, pids_with_env, start_cli, write_fault_catalog
from test_crash import wait_for


@pytest.mark.parametrize("executor", ["in_process", "multiprocess"])
def test_terminated_run_leaves_nothing(tmp_path, work_dir, cloud, executor):
    before = inventory(cloud)
    home, mark = tmp_path / "home", uuid.uuid4().hex
    catalog = write_fault_catalog(tmp_path / "p", {"sleep_seconds": 300})
    out = tmp_path / "run.out"
    env = cli_env(home, catalog, FAULT_MARK=mark, IMAGE_ASSETS_EXECUTOR=executor,
                  IMAGE_ASSETS_PACKER_CLEANUP_SECONDS="120")
    proc = start_cli("*", env, out)
    try:
        wait_for(lambda: b"building-now" in out.read_bytes(), 180, "packer to reach the sleeping provisioner")
        mid = inventory(cloud)
        assert len(mid["instances"] - before["instances"]) == 1
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=150)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    # Packer and its children were waited for, not orphaned.
    wait_for(lambda: not pids_with_env("FAULT_MARK", mark), 10, "packer and its children to exit")
    text = out.read_text(errors="replace") + "".join(p.read_text() for p in home.rglob("compute_logs/*"))
    assert "sending SIGINT to packer" in text and "120s" in text
    assert inventory(cloud) == before
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert runs and runs[0].status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
        assert instance.get_latest_materialization_event(dg.AssetKey([IMAGE])) is None
