"""Sandbox instances are containers: Debian's AMIs are backed by container images, RunInstances of a
backed AMI starts a container running sshd on a loopback address of its own, CreateImage commits it,
and packer's amazon-ebs source builds over SSH with its provisioners really run."""

import ipaddress
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from image_assets import dockerd, sandbox
from image_assets.sandbox import images as sandbox_images
from image_assets.sandbox import instances as sandbox_instances
from image_assets.sandbox.instances import INSTANCE_LABEL, PORT_LABEL

FIXTURE = Path(__file__).parent / "fixtures" / "sandbox-ssh"
DEBIAN_NAME = re.compile(r"^debian-(11|12)-amd64-\d{8}-\d{4}$")


@pytest.fixture(scope="module")
def backed_sandbox(docker_daemon, sandbox_session) -> int:
    """The session sandbox serving the Debian AMIs; their container images are made once if missing."""
    for ref, (image, seconds) in sandbox_images.make_images().items():
        print(f"sandbox image {ref} {image[:19]}: " + ("present" if seconds is None else f"made in {seconds:.0f} s"))
    port = sandbox.port()
    if sandbox.is_running(port) and not sandbox_instances.read_backing(port):
        sandbox.stop(port)  # started before docker answered: it backs no AMI
    sandbox.start(port)
    return port


def ec2(region: str = "us-east-1", port: int | None = None):
    return boto3.client("ec2", endpoint_url=sandbox.endpoint(port), region_name=region,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def debian_ami(client, major: int = 12) -> str:
    images = client.describe_images(Owners=[sandbox_images.DEBIAN_OWNER],
                                    Filters=[{"Name": "name", "Values": [f"debian-{major}-amd64-*"]}])["Images"]
    assert images, f"the sandbox serves no debian-{major} AMI"
    return max(images, key=lambda i: i["CreationDate"])["ImageId"]


def containers(port: int) -> dict[str, str]:
    """The sandbox's instance containers: instance id -> docker status."""
    out = dockerd.docker("ps", "-a", "--filter", f"label={PORT_LABEL}={port}",
                         "--format", f'{{{{.Label "{INSTANCE_LABEL}"}}}} {{{{.Status}}}}').stdout
    return dict(line.split(" ", 1) for line in out.splitlines())


def accepts(address: str) -> bool:
    """sshd accepts on address:22 now (RunInstances and StartInstances return once it does)."""
    with socket.socket() as s:
        s.settimeout(5)
        return s.connect_ex((address, 22)) == 0


def ssh(key: Path, address: str, command: str, user: str = "admin") -> str:
    done = subprocess.run(["ssh", "-i", str(key), "-o", "StrictHostKeyChecking=no",
                           "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                           f"{user}@{address}", command],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"ssh {user}@{address} {command!r}: {done.stderr}"
    return done.stdout.strip()


def key_pair(client, name: str, tmp_path: Path) -> Path:
    path = tmp_path / name
    path.write_text(client.create_key_pair(KeyName=name)["KeyMaterial"])
    path.chmod(0o600)
    return path


def test_debian_amis_are_served_backed_in_every_region(backed_sandbox):
    backing = sandbox_instances.read_backing(backed_sandbox)
    refs = {ref for _suite, ref in sandbox_images.IMAGES.values()}
    for region in ("us-east-1", "eu-west-1", "ap-southeast-2"):
        images = ec2(region).describe_images(Owners=[sandbox_images.DEBIAN_OWNER])["Images"]
        assert sorted(DEBIAN_NAME.match(i["Name"]).group(1) for i in images) == ["11", "12"], images
        for image in images:
            assert image["RootDeviceType"] == "ebs" and image["Public"] and image["State"] == "available"
            assert backing[image["ImageId"]] in refs
            assert dockerd.image_id(backing[image["ImageId"]]) is not None


@pytest.mark.parametrize("debian", [11, 12])
def test_instance_is_a_container_on_its_own_loopback_address(backed_sandbox, tmp_path, debian):
    client = ec2()
    key = key_pair(client, f"instances-test-{debian}", tmp_path)
    t0 = time.monotonic()
    instance = client.run_instances(ImageId=debian_ami(client, debian), MinCount=1, MaxCount=1,
                                    KeyName=f"instances-test-{debian}")["Instances"][0]
    address, instance_id = instance["PublicIpAddress"], instance["InstanceId"]
    assert accepts(address)
    print(f"RunInstances -> sshd accepting: {time.monotonic() - t0:.2f} s")
    described = client.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    nic = described["NetworkInterfaces"][0]
    assert ipaddress.ip_address(address).is_loopback and address != "127.0.0.1"
    assert {described["PublicIpAddress"], described["PrivateIpAddress"], described["PublicDnsName"],
            described["PrivateDnsName"], nic["PrivateIpAddress"]} == {address}
    assert containers(backed_sandbox)[instance_id].startswith("Up")

    assert ssh(key, address, "id -un; sudo -n id -un; . /etc/os-release; echo $VERSION_ID") == f"admin\nroot\n{debian}"
    assert ssh(key, address, "id -un", user="root") == "root"
    ssh(key, address, "echo made-in-the-parent | sudo tee /etc/sandbox-marker")

    client.stop_instances(InstanceIds=[instance_id])
    assert containers(backed_sandbox)[instance_id].startswith("Exited")
    client.start_instances(InstanceIds=[instance_id])
    assert containers(backed_sandbox)[instance_id].startswith("Up") and accepts(address)
    assert ssh(key, address, "cat /etc/sandbox-marker") == "made-in-the-parent"
    client.stop_instances(InstanceIds=[instance_id])

    t0 = time.monotonic()
    child_ami = client.create_image(InstanceId=instance_id, Name=f"instances-test-child-{debian}")["ImageId"]
    print(f"CreateImage (docker commit): {time.monotonic() - t0:.2f} s")
    committed = sandbox_instances.read_backing(backed_sandbox)[child_ami]
    assert dockerd.image_id(committed) is not None
    child = client.run_instances(ImageId=child_ami, MinCount=1, MaxCount=1,
                                 KeyName=f"instances-test-{debian}")["Instances"][0]
    assert child["PublicIpAddress"] != address
    assert accepts(child["PublicIpAddress"])
    assert ssh(key, child["PublicIpAddress"], "cat /etc/sandbox-marker") == "made-in-the-parent"

    client.terminate_instances(InstanceIds=[instance_id, child["InstanceId"]])
    assert not {instance_id, child["InstanceId"]} & set(containers(backed_sandbox))
    client.deregister_image(ImageId=child_ami)
    assert dockerd.image_id(committed) is None
    assert child_ami not in sandbox_instances.read_backing(backed_sandbox)


def test_unbacked_image_instance_is_a_plain_moto_instance(backed_sandbox):
    client = ec2()
    al2023 = client.describe_images(Owners=["amazon"], Filters=[
        {"Name": "name", "Values": ["al2023-ami-2023.*-kernel-6.1-x86_64"]}])["Images"][0]["ImageId"]
    assert al2023 not in sandbox_instances.read_backing(backed_sandbox)
    instance = client.run_instances(ImageId=al2023, MinCount=1, MaxCount=1)["Instances"][0]
    try:
        assert instance["InstanceId"] not in containers(backed_sandbox)
        assert not ipaddress.ip_address(instance["PrivateIpAddress"]).is_loopback
        client.stop_instances(InstanceIds=[instance["InstanceId"]])
        image = client.create_image(InstanceId=instance["InstanceId"], Name="unbacked-child")["ImageId"]
        assert image not in sandbox_instances.read_backing(backed_sandbox)
    finally:
        client.terminate_instances(InstanceIds=[instance["InstanceId"]])


def test_run_instances_of_an_image_gone_from_docker_fails_clearly(backed_sandbox):
    client = ec2()
    parent = client.run_instances(ImageId=debian_ami(client), MinCount=1, MaxCount=1)["Instances"][0]
    image = client.create_image(InstanceId=parent["InstanceId"], Name="gone-from-docker")["ImageId"]
    client.terminate_instances(InstanceIds=[parent["InstanceId"]])
    dockerd.docker("rmi", sandbox_instances.read_backing(backed_sandbox)[image])
    before = set(containers(backed_sandbox))
    with pytest.raises(client.exceptions.ClientError) as failed:
        client.run_instances(ImageId=image, MinCount=1, MaxCount=1)
    error = failed.value.response["Error"]
    assert error["Code"] == "SandboxContainerError"
    assert f"RunInstances of {image} failed in docker" in error["Message"] and "No such image" in error["Message"]
    live = [i for r in client.describe_instances(Filters=[{"Name": "image-id", "Values": [image]}])["Reservations"]
            for i in r["Instances"] if i["State"]["Name"] != "terminated"]
    assert live == [] and set(containers(backed_sandbox)) == before


def test_run_instances_of_an_image_whose_sshd_fails_says_why(backed_sandbox, tmp_path):
    client = ec2()
    key = key_pair(client, "broken-sshd", tmp_path)
    parent = client.run_instances(ImageId=debian_ami(client), MinCount=1, MaxCount=1,
                                  KeyName="broken-sshd")["Instances"][0]
    ssh(key, parent["PublicIpAddress"], "echo 'NotAnSshdOption yes' | sudo tee -a /etc/ssh/sshd_config")
    client.stop_instances(InstanceIds=[parent["InstanceId"]])
    image = client.create_image(InstanceId=parent["InstanceId"], Name="broken-sshd")["ImageId"]
    client.terminate_instances(InstanceIds=[parent["InstanceId"]])
    before = set(containers(backed_sandbox))
    with pytest.raises(client.exceptions.ClientError) as failed:
        client.run_instances(ImageId=image, MinCount=1, MaxCount=1)
    message = failed.value.response["Error"]["Message"]
    assert "exited; its log:" in message and "Bad configuration option: NotAnSshdOption" in message, message
    assert set(containers(backed_sandbox)) == before
    client.deregister_image(ImageId=image)


def test_create_image_of_an_instance_whose_container_is_gone_fails_clearly(backed_sandbox):
    client = ec2()
    instance = client.run_instances(ImageId=debian_ami(client), MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    dockerd.docker("rm", "-f", f"sandbox-{backed_sandbox}-{instance}")
    with pytest.raises(client.exceptions.ClientError) as failed:
        client.create_image(InstanceId=instance, Name="container-gone")
    error = failed.value.response["Error"]
    assert error["Code"] == "SandboxContainerError"
    assert f"CreateImage of {instance} failed in docker" in error["Message"], error
    assert client.describe_images(Filters=[{"Name": "name", "Values": ["container-gone"]}])["Images"] == []
    client.terminate_instances(InstanceIds=[instance])


def packer_build(port: int, work: Path, only: str, layer: str, source_ami: str = "") -> str:
    """packer's output; its debug log goes to work/packer-<layer>.log."""
    env = {k: v for k, v in dockerd.client_env().items() if not k.startswith("AWS_")}
    env.update(sandbox.CREDENTIALS, AWS_POLL_DELAY_SECONDS="1", CHECKPOINT_DISABLE="1",
               PACKER_LOG="1", PACKER_LOG_PATH=str(work / f"packer-{layer}.log"))
    t0 = time.monotonic()
    done = subprocess.run(["packer", "build", "-color=false", f"-only=amazon-ebs.{only}",
                           "-var", f"endpoint={sandbox.endpoint(port)}", "-var", f"ami_name=sandbox-ssh-{layer}",
                           "-var", f"layer={layer}", "-var", f"source_ami={source_ami}", str(FIXTURE)],
                          capture_output=True, text=True, env=env, cwd=work, timeout=600)
    print(f"packer build {layer}: {time.monotonic() - t0:.1f} s")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    return done.stdout


@pytest.mark.skipif(shutil.which("packer") is None, reason="packer is not installed")
def test_packer_amazon_ebs_builds_over_ssh_on_debian(backed_sandbox, tmp_path):
    first = packer_build(backed_sandbox, tmp_path, "vendor", "first")
    connected = re.findall(r"Using ssh communicator to connect: (\S+)", first)
    assert connected and all(ipaddress.ip_address(a).is_loopback and a != "127.0.0.1" for a in connected), first
    # packer's log: every SSH connection it made went to that address.
    dialed = set(re.findall(r"Attempting SSH connection to (\S+):22", (tmp_path / "packer-first.log").read_text()))
    assert dialed == set(connected), dialed
    print(f"packer connected to {', '.join(sorted(dialed))}")
    assert "root through sudo: root, files: hello-first.txt layers" in first
    parent = re.search(r"us-east-1: (ami-\w+)", first).group(1)
    assert parent in sandbox_instances.read_backing(backed_sandbox)

    second = packer_build(backed_sandbox, tmp_path, "child", "second", source_ami=parent)
    assert "layers before: first" in second
    assert "files: hello-first.txt hello-second.txt layers" in second
    instances = re.findall(r"Instance ID: (i-\w+)", first + second)
    assert len(instances) == 2 and not set(instances) & set(containers(backed_sandbox))
    states = {i["State"]["Name"] for r in ec2().describe_instances(InstanceIds=instances)["Reservations"]
              for i in r["Instances"]}
    assert states == {"terminated"}


def test_sandbox_reset_removes_its_containers_and_committed_images(backed_sandbox, tmp_path, monkeypatch):
    # (stop removes the containers and keeps the images for the next start: tests/faults/test_sandbox_restart.py)
    monkeypatch.setenv("IMAGE_ASSETS_STATE_DIR", str(tmp_path / "state"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    try:
        sandbox.start(port)
        client = ec2(port=port)
        parent = client.run_instances(ImageId=debian_ami(client, 11), MinCount=1, MaxCount=1)["Instances"][0]
        image = client.create_image(InstanceId=parent["InstanceId"], Name="stopped-with-the-sandbox")["ImageId"]
        # A layer on a layer: the first committed image has a child image.
        child = client.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]
        child_image = client.create_image(InstanceId=child["InstanceId"], Name="its-child")["ImageId"]
        committed = [sandbox_instances.read_backing(port)[i] for i in (image, child_image)]
        assert set(containers(port)) == {parent["InstanceId"], child["InstanceId"]}
        stopped = subprocess.run([sys.executable, "-m", "image_assets.sandbox", "reset", "--port", str(port)],
                                 capture_output=True, text=True, timeout=120)
        assert stopped.returncode == 0, stopped.stderr
        assert "removed 2 instance container(s)" in stopped.stderr
        assert containers(port) == {}
        assert [dockerd.image_id(ref) for ref in committed] == [None, None]
    finally:
        sandbox.stop(port, forget=True)
