"""Item 2: a step process killed mid-build (SIGKILL, no cleanup) while packer provisions inside the
instance (a container): the next build of that image removes what the dead build left (its container
with its instance), and never touches a build that may still be running."""

import json
import os
import signal
import time
import uuid
from pathlib import Path

import dagster as dg
from conftest import latest
from faultkit import IMAGE, VENDORS, cli_env, docker_inventory, inventory, pids_with_env, run_cli, start_cli, write_fault_catalog

from image_assets.catalog import VendorQuery


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_leftovers_of_a_killed_build_are_removed_by_the_next_build(docker_daemon, tmp_path, work_dir, cloud):
    before, docker_before = inventory(cloud), docker_inventory()
    home, mark = tmp_path / "home", uuid.uuid4().hex
    slow = write_fault_catalog(tmp_path / "slow", {"sleep_seconds": 300})
    out = tmp_path / "crashed.out"
    proc = start_cli("*", cli_env(home, slow, FAULT_MARK=mark), out)
    try:
        wait_for(lambda: b"building-now" in out.read_bytes(), 180, "packer to reach the sleeping provisioner")
        mid = inventory(cloud)
        assert len(mid["instances"] - before["instances"]) == 1
        assert mid["security_groups"] - before["security_groups"] and mid["key_pairs"] - before["key_pairs"]
        # The crash: the step process, packer and its plugin and shell children all die at once.
        for pid in pids_with_env("FAULT_MARK", mark):
            os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    wait_for(lambda: not pids_with_env("FAULT_MARK", mark), 30, "the killed processes to go")
    left = inventory(cloud)
    assert left["instances"] - before["instances"], "the crash should have left the build instance"
    assert docker_inventory()["containers"] - docker_before["containers"], "and its container"
    assert any(d.name.startswith(IMAGE) for d in work_dir.iterdir())  # with its var-file

    # A build that may be in progress elsewhere (its run unknown to this instance): never touched.
    image_id = latest_vendor_image(cloud)
    other = cloud.ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, TagSpecifications=[{
        "ResourceType": "instance", "Tags": [{"Key": "ManagedBy", "Value": "image-assets"},
                                             {"Key": "ImageName", "Value": IMAGE},
                                             {"Key": "DagsterRunId", "Value": "another-live-run"}]}])
    other_id = other["Instances"][0]["InstanceId"]
    try:
        quick = write_fault_catalog(tmp_path / "quick", {"sleep_seconds": 0})
        second = run_cli(IMAGE, cli_env(home, quick))
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        assert "removed what dead build" in second.stdout + second.stderr + "".join(
            p.read_text() for p in home.rglob("compute_logs/*"))
        after = inventory(cloud)
        assert other_id in after["instances"]
    finally:
        cloud.ec2.terminate_instances(InstanceIds=[other_id])
    after = inventory(cloud)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        new_image = latest(instance, IMAGE)["image_id"]
    assert after["instances"] == before["instances"]
    assert after["security_groups"] == before["security_groups"]
    assert after["key_pairs"] == before["key_pairs"]
    assert after["volumes"] == before["volumes"]
    assert after["images"] == before["images"] | {new_image}
    assert docker_inventory() == {"containers": docker_before["containers"],
                                  "committed": docker_before["committed"] | {new_image}}
    assert len(after["snapshots"] - before["snapshots"]) == 1  # the new image's own snapshot
    assert docker_inventory() == {"containers": docker_before["containers"],
                                  "committed": docker_before["committed"] | {new_image}}
    assert not [d for d in work_dir.iterdir() if d.name.startswith(IMAGE)]


def latest_vendor_image(cloud) -> str:
    return cloud.newest_vendor_image(VendorQuery(**VENDORS["debian-11"])).id


def test_a_dead_runs_packer_still_running_is_stopped_before_its_build_is_removed(docker_daemon, tmp_path, work_dir, cloud):
    """Only the step process dies (SIGKILL); packer, in a session of its own, keeps building. The
    next build finds packer's process group recorded in the image lock, stops it (SIGINT: packer
    cleans up its own instance) and only then removes what is left: no live build is ever acted on."""
    before, docker_before = inventory(cloud), docker_inventory()
    home, mark = tmp_path / "home", uuid.uuid4().hex
    out = tmp_path / "crashed.out"
    proc = start_cli("*", cli_env(home, write_fault_catalog(tmp_path / "slow", {"sleep_seconds": 300}),
                                  FAULT_MARK=mark), out)
    try:
        wait_for(lambda: b"building-now" in out.read_bytes(), 180, "packer to reach the sleeping provisioner")
        lock = json.loads((work_dir / ".locks" / f"{IMAGE}.lock").read_text())
        assert lock["run_id"] and lock["pgid"]
        os.kill(proc.pid, signal.SIGKILL)  # the step (in_process executor: the CLI itself), nothing else
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    survivors = {p: Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[0] for p in pids_with_env("FAULT_MARK", mark)}
    packers = [p for p, cmd in survivors.items() if cmd.endswith(b"packer")]
    assert packers and all(os.getpgid(p) == lock["pgid"] for p in packers), survivors  # packer lives on
    assert inventory(cloud)["instances"] - before["instances"]

    second = run_cli(IMAGE, cli_env(home, write_fault_catalog(tmp_path / "quick", {"sleep_seconds": 0})))
    logs = second.stdout + second.stderr + "".join(p.read_text() for p in home.rglob("compute_logs/*"))
    assert second.returncode == 0, logs[-3000:]
    assert f"dead build {lock['run_id']} still has packer running (process group {lock['pgid']})" in logs
    wait_for(lambda: not pids_with_env("FAULT_MARK", mark), 30, "the dead build's packer to stop")
    after = inventory(cloud)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        new_image = latest(instance, IMAGE)["image_id"]
    assert after["instances"] == before["instances"]
    assert after["security_groups"] == before["security_groups"] and after["key_pairs"] == before["key_pairs"]
    assert after["images"] == before["images"] | {new_image}
    assert docker_inventory() == {"containers": docker_before["containers"],
                                  "committed": docker_before["committed"] | {new_image}}
