"""A sandbox that stops: before a build it is started again with the images it built (sandbox_state);
during a build the build fails at once, naming the endpoint and how to start it, and nothing is left.
Each test runs its own sandbox (own port), so the session's sandbox is never stopped."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest
from conftest import PROJECT, free_port
from faultkit import IMAGE, VENDORS, docker_inventory, inventory, write_fault_catalog

from image_assets import build, sandbox
from image_assets.catalog import VendorQuery, load_catalog
from image_assets.errors import StoreError
from image_assets.packer import PackerCli
from image_assets.stores.ec2 import Ec2Store


@pytest.fixture
def own_sandbox(monkeypatch, docker_daemon):
    port = free_port()
    monkeypatch.setenv("IMAGE_ASSETS_SANDBOX_PORT", str(port))
    sandbox.start(port)
    yield port
    sandbox.stop(port, forget=True)
    assert docker_inventory(port) == {"containers": set(), "committed": set()}  # reset leaves nothing


def _build(tmp_path, parent: build.Parent, **variables) -> build.Built:
    catalog = load_catalog(write_fault_catalog(tmp_path / uuid.uuid4().hex[:8], variables))
    return build.build_image(catalog, IMAGE, parent, str(uuid.uuid4()), PackerCli())


def test_images_channels_and_revocations_survive_a_restart(tmp_path, work_dir, own_sandbox):
    store = Ec2Store("sandbox", "us-east-1")
    vendor = store.newest_vendor_image(VendorQuery(**VENDORS["debian-11"])).id
    first = _build(tmp_path, build.Parent(vendor, vendor), payload="layer one")
    revoked = _build(tmp_path, build.Parent(vendor, vendor), payload="revoked one")
    store.tag(revoked.image_id, {"Revoked": "bad build"})  # as `python -m image_assets revoke` does
    store.ec2.enable_image_deprecation(ImageId=revoked.image_id, DeprecateAt="2026-01-01T00:00:00Z")
    ssm = store.client(max_attempts=2, service="ssm")
    for value in (vendor, first.image_id):  # a channel with history
        ssm.put_parameter(Name="/image-assets/fault-image/stable", Value=value, Type="String", Overwrite=True)
    ssm.put_parameter(Name="/fault/secret", Value="never-on-disk", Type="SecureString")
    release = sandbox.publish_vendor_image(VENDORS["debian-11"]["owners"], VENDORS["debian-11"]["name"],
                                           port=own_sandbox)  # a vendor's new release, shown on the sandbox
    before = inventory(store)["images"]
    images_before = store.ec2.describe_images(ImageIds=[first.image_id, revoked.image_id])["Images"]
    snapshots = [m["Ebs"]["SnapshotId"] for i in images_before for m in i["BlockDeviceMappings"]]
    snapshots_before = store.ec2.describe_snapshots(SnapshotIds=snapshots)["Snapshots"]

    out = subprocess.run([sys.executable, "-m", "image_assets.sandbox", "stop", "--port", str(own_sandbox)],
                         cwd=PROJECT, capture_output=True, text=True, check=True).stdout
    assert "keeps 3 image(s)" in out, out
    assert "never-on-disk" not in (sandbox.state_dir() / f"sandbox-{own_sandbox}-state.json").read_text()
    assert docker_inventory(own_sandbox) == {"containers": set(), "committed": {first.image_id, revoked.image_id}}
    out = subprocess.run([sys.executable, "-m", "image_assets.sandbox", "start", "--port", str(own_sandbox)],
                         cwd=PROJECT, capture_output=True, text=True, check=True).stdout
    assert "keeps 3 image(s)" in out, out
    assert "kept from before this start: 3 image(s)" in sandbox._log_tail(sandbox._paths(own_sandbox)[2], 50)

    store = Ec2Store("sandbox", "us-east-1")
    assert inventory(store)["images"] == before
    images_after = store.ec2.describe_images(ImageIds=[first.image_id, revoked.image_id])["Images"]
    for after, was in zip(images_after, images_before):  # every field as EC2 describes it, tags in any order
        assert {**after, "Tags": sorted(after["Tags"], key=str)} == {**was, "Tags": sorted(was["Tags"], key=str)}
    kept = {s["SnapshotId"]: s["Tags"] for s in store.ec2.describe_snapshots(SnapshotIds=snapshots)["Snapshots"]}
    assert kept == {s["SnapshotId"]: s["Tags"] for s in snapshots_before}
    assert store.get(revoked.image_id).revoked == "bad build"
    assert store.newest_vendor_image(VendorQuery(**VENDORS["debian-11"])).id == release["ImageId"]
    assert store.no_machine(release["ImageId"]) == ""  # still run as the image it replaces
    assert [i.get("DeprecationTime") for i in images_after] == [None, "2026-01-01T00:00:00.000Z"]
    ssm = store.client(max_attempts=2, service="ssm")
    history = ssm.get_parameter_history(Name="/image-assets/fault-image/stable")["Parameters"]
    assert [p["Value"] for p in history] == [vendor, first.image_id]
    with pytest.raises(Exception, match="ParameterNotFound"):
        ssm.get_parameter(Name="/fault/secret")
    # A child of the kept image starts from its committed filesystem, over SSH as before.
    child = _build(tmp_path, build.Parent(first.image_id, vendor), payload="layer two")
    assert store.no_machine(child.image_id) == ""
    commands = store.run_commands(child.image_id, ["cat /etc/fault-payload"], timeout=60)
    assert commands[0].exit_code == 0 and commands[0].output.strip() == "layer two", commands


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_a_sandbox_stopped_during_a_build_fails_it_at_once(tmp_path, work_dir, own_sandbox, how):
    """stop: `python -m image_assets.sandbox stop` (it removes the containers); kill: the server dies
    (SIGKILL), its containers stay until a server starts on the port again, which removes them."""
    store = Ec2Store("sandbox", "us-east-1")
    vendor = store.newest_vendor_image(VendorQuery(**VENDORS["debian-11"])).id
    catalog = load_catalog(write_fault_catalog(tmp_path / "p", {"sleep_seconds": 300}))
    stopped = threading.Event()

    def stop_once_the_instance_runs():
        while not docker_inventory(own_sandbox)["containers"]:
            time.sleep(0.2)
        time.sleep(2)  # packer is connecting or provisioning (its shell sleeps 300 s)
        stopped.set()
        if how == "stop":
            sandbox.stop(own_sandbox)
        else:
            os.kill(sandbox.status(own_sandbox)["pid"], signal.SIGKILL)

    threading.Thread(target=stop_once_the_instance_runs, daemon=True).start()
    with pytest.raises(StoreError) as failure:
        build.build_image(catalog, IMAGE, build.Parent(vendor, vendor), str(uuid.uuid4()), PackerCli())
    assert stopped.is_set()
    message = str(failure.value)
    assert f"http://127.0.0.1:{own_sandbox}" in message and "python -m image_assets.sandbox start" in message
    assert "during the build" in message
    if how == "stop":
        assert docker_inventory(own_sandbox)["containers"] == set()  # the instance's container went with it
    assert not [d for d in work_dir.iterdir() if d.name.startswith(IMAGE)]
    # Started again, it holds nothing of the failed build, in the EC2 API or in docker.
    sandbox.start(own_sandbox)
    assert docker_inventory(own_sandbox)["containers"] == set()
    assert inventory(Ec2Store("sandbox", "us-east-1"))["instances"] == set()


def test_a_store_call_to_a_stopped_sandbox_names_it(own_sandbox):
    store = Ec2Store("sandbox", "us-east-1")
    sandbox.stop(own_sandbox)
    with pytest.raises(StoreError) as failure:
        store.get("ami-12345678")
    assert f"http://127.0.0.1:{own_sandbox}" in str(failure.value)
    assert "python -m image_assets.sandbox start" in str(failure.value) and not failure.value.transient


def test_an_image_lost_with_a_reset_sandbox_is_reported_missing(tmp_path, work_dir, own_sandbox):
    from image_assets import lineage

    store = Ec2Store("sandbox", "us-east-1")
    vendor = store.newest_vendor_image(VendorQuery(**VENDORS["debian-11"])).id
    built = _build(tmp_path, build.Parent(vendor, vendor))
    catalog = load_catalog(write_fault_catalog(tmp_path / "c"))
    current = {"debian-11": vendor, IMAGE: built.image_id}
    assert [f.status for f in lineage.outdated(catalog, store, current)] == ["current"]
    sandbox.stop(own_sandbox)
    sandbox.stop(own_sandbox, forget=True)  # reset of a stopped sandbox: its kept images go too
    assert docker_inventory(own_sandbox)["committed"] == set()
    sandbox.start(own_sandbox)
    store = Ec2Store("sandbox", "us-east-1")
    [found] = lineage.outdated(catalog, store, current)
    assert found.status == "missing"
    assert f"no longer has {built.image_id}" in found.cause and "python -m image_assets.sandbox reset" in found.cause
    assert f"--select '{IMAGE}*'" in found.cause


def test_reboot_restarts_the_instance_container(own_sandbox):
    from image_assets import dockerd

    store = Ec2Store("sandbox", "us-east-1")
    vendor = store.newest_vendor_image(VendorQuery(**VENDORS["debian-11"])).id
    instance = store.ec2.run_instances(ImageId=vendor, MinCount=1, MaxCount=1)["Instances"][0]
    name = f"sandbox-{own_sandbox}-{instance['InstanceId']}"

    def started() -> str:
        return dockerd.docker("inspect", "--format", "{{.State.Running}} {{.State.StartedAt}}", name).stdout.strip()

    before = started()
    store.ec2.reboot_instances(InstanceIds=[instance["InstanceId"]])
    after = started()
    assert after.startswith("true ") and after != before  # the container's processes started anew
    with socket.create_connection((instance["PrivateIpAddress"], 22), timeout=5):
        pass  # sshd is back on the instance's own address
    store.ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
    assert docker_inventory(own_sandbox)["containers"] == set()
