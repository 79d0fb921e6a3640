"""Item 1: terminating a run (SIGTERM to the dagster process, as `dagster run terminate` or the
CLI does) while packer provisions inside the instance (a container): packer gets SIGINT, cleans up,
and neither the sandbox nor docker holds anything new."""

import os
import signal
import uuid

import dagster as dg
import pytest
from faultkit import IMAGE, PROJECT, cli_env, docker_inventory, inventory, pids_with_env, start_cli, write_fault_catalog
from test_crash import wait_for


@pytest.mark.parametrize("executor", ["in_process", "multiprocess"])
def test_terminated_run_leaves_nothing(docker_daemon, tmp_path, work_dir, cloud, executor):
    before, docker_before = inventory(cloud), docker_inventory()
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
        assert len(docker_inventory()["containers"] - docker_before["containers"]) == 1  # the instance
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
    assert docker_inventory() == docker_before  # no container, running or stopped, and nothing committed
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert runs and runs[0].status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
        assert instance.get_latest_materialization_event(dg.AssetKey([IMAGE])) is None


STUBBORN_PACKER = """#!/usr/bin/env python3
import signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)  # a packer whose cleanup never ends
print("0,,ui,say,stubborn packer running", flush=True)
time.sleep(120)
"""


def test_cleanup_timeout_kills_a_packer_that_never_finishes(tmp_path):
    import signal as sig
    import subprocess
    import sys
    import time

    from image_assets.packer import PackerCli, Redactor

    # The timeout comes from the environment when the resource is built (default 600 s).
    code = "from image_assets.packer import PackerCli; print(PackerCli().cleanup_timeout_seconds)"
    for env, expected in (({}, "600.0"), ({"IMAGE_ASSETS_PACKER_CLEANUP_SECONDS": "2"}, "2.0")):
        out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, cwd=PROJECT,
                             capture_output=True, text=True, check=True)
        assert out.stdout.strip() == expected

    fake = tmp_path / "packer"
    fake.write_text(STUBBORN_PACKER)
    fake.chmod(0o755)
    cli = PackerCli(binary=str(fake), cleanup_timeout_seconds=2)
    mark, lines = uuid.uuid4().hex, []

    def interrupt(*_):
        raise KeyboardInterrupt  # what Dagster's cancel raises in the step's main thread

    previous = sig.signal(sig.SIGALRM, interrupt)
    sig.alarm(1)
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            cli.run(["build"], cwd=tmp_path, env={"PATH": os.environ["PATH"], "FAULT_MARK": mark},
                    redact=Redactor(), echo=lines.append)
    finally:
        sig.alarm(0)
        sig.signal(sig.SIGALRM, previous)
    assert time.monotonic() - started < 10
    assert "stubborn packer running" in lines
    assert any("waiting up to 2s" in line for line in lines)
    assert any("did not finish its cleanup in time: killing it" in line for line in lines)
    assert pids_with_env("FAULT_MARK", mark) == []  # the whole group was killed and reaped
