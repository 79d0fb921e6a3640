"""The embedded sandbox: real detached moto servers, real packer builds against them."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from conftest import PROJECT
from image_assets import sandbox
from image_assets.catalog import load_catalog
from image_assets.errors import StoreError
from image_assets.stores.ec2 import Ec2Store

CLI = [sys.executable, "-m", "image_assets.sandbox"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def port(tmp_path, monkeypatch):
    """A free port and a private state dir; whatever runs there is stopped afterwards."""
    monkeypatch.setenv("IMAGE_ASSETS_STATE_DIR", str(tmp_path / "state"))
    p = free_port()
    yield p
    sandbox.stop(p)


def cli(*args, port):
    return subprocess.run([*CLI, *args, "--port", str(port)], capture_output=True, text=True, timeout=60)


def gone(pid: int) -> bool:
    """Exited: no /proc entry, or a zombie init has not reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def ec2(port):
    return boto3.client(
        "ec2",
        endpoint_url=sandbox.endpoint(port),
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def vendor_al2023(client) -> str:
    images = client.describe_images(
        Owners=["amazon"], Filters=[{"Name": "name", "Values": ["al2023-ami-2023.*-kernel-6.1-x86_64"]}]
    )["Images"]
    assert images, "the sandbox ships no Amazon Linux 2023 image"
    return max(images, key=lambda i: (i["CreationDate"], i["Name"]))["ImageId"]


def test_api_basics(monkeypatch):
    monkeypatch.delenv("IMAGE_ASSETS_SANDBOX_PORT", raising=False)
    assert sandbox.port() == sandbox.DEFAULT_PORT == 5055
    monkeypatch.setenv("IMAGE_ASSETS_SANDBOX_PORT", "6001")
    assert sandbox.port() == 6001
    assert sandbox.endpoint() == "http://127.0.0.1:6001"
    assert sandbox.endpoint(7000) == "http://127.0.0.1:7000"
    assert sandbox.CREDENTIALS["AWS_ACCESS_KEY_ID"] == sandbox.CREDENTIALS["AWS_SECRET_ACCESS_KEY"] == "testing"


def test_cli_start_status_stop(port, tmp_path):
    # capture_output returning at all proves the server does not hold the caller's pipes.
    started = cli("start", port=port)
    assert started.returncode == 0, started.stderr
    assert f"running at http://127.0.0.1:{port}" in started.stdout
    st = sandbox.status(port)
    assert st["running"] and st["pid"] and st["endpoint"] == sandbox.endpoint(port)
    assert Path(st["log"]).parent == tmp_path / "state"
    assert (tmp_path / "state" / f"sandbox-{port}.pid").read_text().strip() == str(st["pid"])

    status = cli("status", port=port)
    assert status.returncode == 0 and f"pid {st['pid']}" in status.stdout

    stopped = cli("stop", port=port)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not sandbox.is_running(port)
    assert gone(st["pid"])
    status = cli("status", port=port)
    assert status.returncode == 1 and "not running" in status.stdout
    assert "not running" in cli("stop", port=port).stdout


def test_start_is_idempotent_and_stops_from_another_process(port):
    assert sandbox.start(port) == sandbox.endpoint(port)
    pid = sandbox.status(port)["pid"]
    assert sandbox.ensure_running(port) == sandbox.endpoint(port)
    assert sandbox.start(port) == sandbox.endpoint(port)
    assert sandbox.status(port)["pid"] == pid
    assert cli("start", port=port).returncode == 0
    assert sandbox.status(port)["pid"] == pid

    # Started by this process, stopped by another one.
    assert "stopped" in cli("stop", port=port).stdout
    assert not sandbox.is_running(port)
    assert gone(pid)
    assert sandbox.status(port)["pid"] is None
    assert sandbox.stop(port) is False


def test_concurrent_starts_make_one_server(port):
    procs = [subprocess.Popen([*CLI, "start", "--port", str(port)], stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    pid = sandbox.status(port)["pid"]
    assert all(f"pid {pid}," in out for out in outs), outs
    servers = [d for d in Path("/proc").iterdir() if d.name.isdigit() and _is_server(d, port)]
    assert len(servers) == 1


def _is_server(proc_dir: Path, port: int) -> bool:
    try:
        args = proc_dir.joinpath("cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"image_assets.sandbox.server" in args and str(port).encode() in args


def test_server_env_is_stripped_and_detached(port, monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "production")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAREALKEY")
    sandbox.start(port)
    pid = sandbox.status(port)["pid"]
    env = dict(
        kv.split(b"=", 1) for kv in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in kv
    )
    assert b"AWS_PROFILE" not in env
    assert env[b"AWS_ACCESS_KEY_ID"] == b"testing"
    assert os.getsid(pid) == pid  # own session: the caller's Ctrl-C does not reach it
    assert os.readlink(f"/proc/{pid}/fd/0") == os.devnull


def test_extra_env_serves_own_vendor_images(port, tmp_path):
    amis = tmp_path / "amis.json"
    amis.write_text(json.dumps([{
        "ami_id": "ami-0123456789abcdef0", "name": "al2023-ami-2023.9.99999999.0-kernel-6.1-x86_64",
        "owner_id": "137112412989", "public": True, "state": "available", "architecture": "x86_64",
        "virtualization_type": "hvm", "root_device_type": "ebs", "root_device_name": "/dev/xvda",
        "image_type": "machine", "hypervisor": "xen", "sriov": "simple", "description": "test release",
    }]))
    sandbox.start(port, extra_env={"MOTO_AMIS_PATH": str(amis)})
    assert vendor_al2023(ec2(port)) == "ami-0123456789abcdef0"


def test_a_sandbox_started_without_docker_says_how_to_serve_debian(port, tmp_path, monkeypatch, docker_daemon):
    # The server's docker does not answer (as on a machine where no daemon runs yet): it serves no
    # Debian AMIs, and the demo catalog's vendor look-up says what to do, not only what is missing.
    no_docker = tmp_path / "docker"
    no_docker.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    no_docker.chmod(0o755)
    sandbox.start(port, extra_env={"IMAGE_ASSETS_DOCKER": str(no_docker)})
    assert "no Debian AMIs served: docker is unavailable" in Path(sandbox.status(port)["log"]).read_text()
    monkeypatch.setenv("IMAGE_ASSETS_SANDBOX_PORT", str(port))
    debian = load_catalog(PROJECT / "images.yaml").images["debian-11"].vendor
    with pytest.raises(StoreError) as raised:
        Ec2Store("sandbox", "us-east-1").newest_vendor_image(debian)
    assert "matches owners=['136693071363'] name='debian-11-amd64-*'" in str(raised.value)
    assert "python -m image_assets.dockerd start, then python -m image_assets.sandbox stop and start" in str(raised.value)

    # `start` as bin/demo runs it, once docker answers: the sandbox restarts and serves Debian.
    started = cli("start", port=port)
    assert started.returncode == 0 and "serves no Debian AMIs" in started.stdout, started.stdout + started.stderr
    assert Ec2Store("sandbox", "us-east-1").newest_vendor_image(debian).name.startswith("debian-11-amd64-")
    assert "serves no Debian AMIs" not in cli("start", port=port).stdout  # running with Debian: left alone


def test_start_failure_quotes_the_log(port, tmp_path):
    with pytest.raises(RuntimeError, match=r"exited(.|\n)*No such file"):
        sandbox.start(port, extra_env={"MOTO_AMIS_PATH": str(tmp_path / "missing.json")})
    assert not sandbox.is_running(port)


def test_port_taken_by_something_else(port):
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        with pytest.raises(RuntimeError, match="not the moto sandbox"):
            sandbox.start(port)


def test_created_image_is_ebs_backed(port):
    sandbox.start(port)
    client = ec2(port)
    source = vendor_al2023(client)
    instance = client.run_instances(ImageId=source, MinCount=1, MaxCount=1, InstanceType="t3.micro")["Instances"][0]
    image_id = client.create_image(InstanceId=instance["InstanceId"], Name="layer-a")["ImageId"]
    image = client.describe_images(ImageIds=[image_id])["Images"][0]
    assert image["RootDeviceType"] == "ebs"
    assert image["RootDeviceName"] == instance["RootDeviceName"]
    root = next(m for m in image["BlockDeviceMappings"] if m["DeviceName"] == image["RootDeviceName"])
    snapshot_id = root["Ebs"]["SnapshotId"]
    assert client.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]


def test_tag_lookup_reads_the_same_tags_as_moto(monkeypatch):
    """The sandbox reads one resource's tags from the backend's map (sandbox_server._tags_of_resource)
    instead of moto's scan of every tag of every resource: the same entries, for every kind of
    resource a build tags, untagged ones included."""
    from moto import mock_aws
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.core import TaggedEC2Resource

    from image_assets.sandbox.server import _tags_of_resource

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    with mock_aws():
        client = boto3.client("ec2", region_name="us-east-1")
        source = vendor_al2023(client)
        made = []
        for n in range(3):
            tags = [{"Key": "ImageName", "Value": f"layer-{n}"}, {"Key": "DagsterRunId", "Value": f"run-{n}"}]
            spec = [{"ResourceType": kind, "Tags": tags} for kind in ("instance", "volume")] if n else []
            instance = client.run_instances(ImageId=source, MinCount=1, MaxCount=1, TagSpecifications=spec)
            instance_id = instance["Instances"][0]["InstanceId"]
            image_id = client.create_image(InstanceId=instance_id, Name=f"layer-{n}")["ImageId"]
            client.create_tags(Resources=[image_id], Tags=tags[: n + 1])
            made += [instance_id, image_id]
        backend = ec2_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]
        resources = [backend.get_instance(i) if i.startswith("i-") else backend.amis[i] for i in made]
        resources += list(backend.volumes.values()) + list(backend.snapshots.values())
        assert sum(1 for r in resources if _tags_of_resource(r)) >= 6, "the test must compare tagged resources"
        for resource in resources:
            assert _tags_of_resource(resource) == TaggedEC2Resource.get_tags(resource), resource.id


TEMPLATE = """
variable "endpoint" { type = string }
variable "source_ami" { type = string }
variable "ami_name" { type = string }

source "amazon-ebs" "sandbox" {
  region                     = "us-east-1"
  source_ami                 = var.source_ami
  instance_type              = "t3.micro"
  ami_name                   = var.ami_name
  communicator               = "none"
  custom_endpoint_ec2        = var.endpoint
  skip_credential_validation = true
  skip_metadata_api_check    = true
}

build {
  sources = ["source.amazon-ebs.sandbox"]
}
"""


def packer_build(template_dir: Path, port: int, source_ami: str, ami_name: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(sandbox.CREDENTIALS, AWS_POLL_DELAY_SECONDS="1", CHECKPOINT_DISABLE="1")
    result = subprocess.run(
        ["packer", "build", "-machine-readable",
         "-var", f"endpoint={sandbox.endpoint(port)}",
         "-var", f"source_ami={source_ami}",
         "-var", f"ami_name={ami_name}",
         str(template_dir)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    ids = {line.rsplit(",", 1)[1] for line in result.stdout.splitlines() if ",artifact,0,id," in line}
    assert len(ids) == 1, result.stdout[-3000:]
    return ids.pop().split(":", 1)[1]


@pytest.mark.skipif(shutil.which("packer") is None, reason="packer is not installed")
def test_two_layer_packer_build(port, tmp_path):
    sandbox.start(port)
    client = ec2(port)
    template_dir = tmp_path / "template"
    template_dir.mkdir()
    (template_dir / "sandbox.pkr.hcl").write_text(TEMPLATE)
    vendor = vendor_al2023(client)

    t0 = time.monotonic()
    layer_a = packer_build(template_dir, port, vendor, "layer-a")
    # Built on a built image: without the EBS patch packer 1.6.6 refuses layer A here.
    layer_b = packer_build(template_dir, port, layer_a, "layer-b")
    print(f"two-layer packer build on the sandbox: {time.monotonic() - t0:.2f}s")

    images = {i["ImageId"]: i for i in client.describe_images(ImageIds=[layer_a, layer_b])["Images"]}
    assert {images[layer_a]["Name"], images[layer_b]["Name"]} == {"layer-a", "layer-b"}
    assert all(i["RootDeviceType"] == "ebs" and i["State"] == "available" for i in images.values())
    live = [
        i for r in client.describe_instances()["Reservations"] for i in r["Instances"]
        if i["State"]["Name"] not in ("terminated", "shutting-down")
    ]
    assert live == []  # packer cleaned up its build instances
