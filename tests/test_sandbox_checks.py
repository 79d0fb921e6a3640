"""Checks run on the sandbox: image_tests go through the AWS path (an instance launched from the image,
each command through SSM SendCommand / AWS-RunShellScript, which the sandbox runs in the instance's
container), and compliance scores the AMI's backing container image as the local target scores its
images. An image no machine runs there (al2023) reports both as "not run on the sandbox", never a pass."""

import shutil
import time

import boto3
import dagster as dg
import yaml

from conftest import AL2023, PROJECT, latest, materialize
from image_assets import dockerd, sandbox
from image_assets.sandbox import ssm as sandbox_ssm
from image_assets.catalog import load_catalog
from image_assets.sandbox.instances import INSTANCE_LABEL, PORT_LABEL
from image_assets.stores.ec2 import Ec2Store
from test_sandbox_instances import backed_sandbox, debian_ami, ec2  # noqa: F401 (a fixture)

DEBIAN_11 = {"layer": "vendor", "vendor": {"owners": ["136693071363"], "name": "debian-11-amd64-*"}}
COMPLIANCE = {"profile": "image_assets_container", "tailoring": "compliance/debian11-container.xml",
              "min_pass_ratio": 0.0}
LAYER_SCRIPT = "#!/bin/sh\nset -eu\necho 'team base' > /etc/team-base\n"
LAX_SCRIPT = "#!/bin/sh\nset -eu\nchmod 0666 /etc/passwd\n"  # undoes a rule Debian's image passes


def ssm(port: int, region: str = "us-east-1"):
    return boto3.client("ssm", endpoint_url=sandbox.endpoint(port), region_name=region,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def instance_containers(port: int) -> list[str]:
    return dockerd.docker("ps", "-a", "--filter", f"label={PORT_LABEL}={port}",
                          "--format", f'{{{{.Label "{INSTANCE_LABEL}"}}}}').stdout.split()


def run_script(client, instance: str, commands: list[str], **parameters) -> dict:
    sent = client.send_command(InstanceIds=[instance], DocumentName="AWS-RunShellScript",
                               Parameters={"commands": commands, **parameters}, TimeoutSeconds=60)["Command"]
    assert sent["Status"] in ("Pending", "InProgress")  # SendCommand answers before the command ends
    try:
        client.get_waiter("command_executed").wait(CommandId=sent["CommandId"], InstanceId=instance,
                                                  WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    except Exception:  # a failed or timed-out command ends the waiter too
        pass
    return client.get_command_invocation(CommandId=sent["CommandId"], InstanceId=instance)


def test_run_command_runs_in_the_instance_container(backed_sandbox):  # noqa: F811
    client, commands = ec2(port=backed_sandbox), ssm(backed_sandbox)
    instance = client.run_instances(ImageId=debian_ami(client, 11), MinCount=1, MaxCount=1, InstanceType="t3.micro",
                                    IamInstanceProfile={"Name": sandbox_ssm.INSTANCE_PROFILE})["Instances"][0]["InstanceId"]
    try:
        ok = run_script(commands, instance, ["echo out; id -un", "echo err >&2", "touch /root/ran"])
        assert (ok["Status"], ok["StatusDetails"], ok["ResponseCode"]) == ("Success", "Success", 0)
        assert ok["StandardOutputContent"] == "out\nroot\n" and ok["StandardErrorContent"] == "err\n"
        # The same machine: a later command sees what an earlier one wrote.
        assert run_script(commands, instance, ["test -f /root/ran"])["Status"] == "Success"

        failed = run_script(commands, instance, ["echo partial", "exit 3"])
        assert (failed["Status"], failed["StatusDetails"], failed["ResponseCode"]) == ("Failed", "Failed", 3)
        assert failed["StandardOutputContent"] == "partial\n"

        stuck = run_script(commands, instance, ["sleep 30 & sleep 30"], executionTimeout=["2"])
        assert (stuck["Status"], stuck["StatusDetails"], stuck["ResponseCode"]) == ("TimedOut", "ExecutionTimedOut", 137)
        left = dockerd.docker("exec", f"sandbox-{backed_sandbox}-{instance}", "sh", "-c", "pgrep -c sleep || true").stdout
        assert left.strip() == "0"  # the script's whole process group was killed, as the agent does

        big = run_script(commands, instance, ["head -c 30000 /dev/zero | tr '\\0' a", "head -c 9000 /dev/zero | tr '\\0' b >&2"])
        assert len(big["StandardOutputContent"]) == 24000 and len(big["StandardErrorContent"]) == 8000
    finally:
        client.terminate_instances(InstanceIds=[instance])
    try:
        commands.send_command(InstanceIds=[instance], DocumentName="AWS-RunShellScript", Parameters={"commands": ["true"]})
        raise AssertionError("SendCommand to a terminated instance was accepted")
    except commands.exceptions.InvalidInstanceId as exc:
        assert instance in str(exc)


def write_catalog(dest):
    shutil.copytree(PROJECT / "packer", dest / "packer")
    shutil.copytree(PROJECT / "compliance", dest / "compliance")
    (dest / "packer" / "scripts" / "linux" / "team-base.sh").write_text(LAYER_SCRIPT)
    (dest / "packer" / "scripts" / "linux" / "team-lax.sh").write_text(LAX_SCRIPT)
    layer = {"template": "packer/aws/linux", "content": {"scripts": "packer/scripts/linux"}}
    doc = {"defaults": {"target": "sandbox", "region": "us-east-1"}, "images": {
        "debian-11": DEBIAN_11,
        "team-base": {"layer": "global", "parent": "debian-11", **layer, "variables": {"scripts": ["team-base.sh"]},
                      "compliance": COMPLIANCE,
                      "tests": ["grep -qx 'team base' /etc/team-base", "test -e /etc/not-made-by-any-layer"]},
        "team-app": {"layer": "service", "parent": "team-base", **layer, "variables": {"scripts": ["sshd-banner.sh"]}},
        "team-lax": {"layer": "global", "parent": "debian-11", **layer, "variables": {"scripts": ["team-lax.sh"]},
                     "compliance": COMPLIANCE},
        "team-lax-app": {"layer": "service", "parent": "team-lax", **layer, "variables": {"scripts": ["sshd-banner.sh"]}},
        "al2023": AL2023,
        "team-al": {"layer": "global", "parent": "al2023", **layer, "variables": {"scripts": ["team-base.sh"]},
                    "compliance": COMPLIANCE, "tests": ["true"]},
    }}
    path = dest / "images.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_catalog(path)


def evaluations(result, name: str) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations() if e.asset_key == dg.AssetKey([name])}


def test_image_tests_and_compliance_run_on_the_sandbox(backed_sandbox, tmp_path, work_dir, instance):  # noqa: F811
    catalog = write_catalog(tmp_path / "project")
    result = materialize(catalog, instance, raise_on_error=False)
    assert not result.success
    built = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    # team-app is blocked by team-base's failed test, team-lax-app by team-lax's regression
    assert built == {"debian-11", "team-base", "team-lax", "al2023", "team-al"}

    base = evaluations(result, "team-base")
    tests = base["image_tests"]
    assert not tests.passed and tests.severity == dg.AssetCheckSeverity.ERROR
    ran = tests.metadata["results"].value
    assert [(r["command"], r["exit_code"]) for r in ran] == [
        ("grep -qx 'team base' /etc/team-base", 0), ("test -e /etc/not-made-by-any-layer", 1)]
    print(f"image_tests of team-base on the sandbox (instance start to results): {tests.metadata['seconds'].value} s")
    score = base["compliance"]
    assert score.passed, score.description
    assert score.metadata["rules_passed"].value > 0 and score.metadata["parent_rules_passed"].value > 0
    assert 0 < score.metadata["ratio"].value < 1 and "pass /" in score.description

    # A layer never undoes hardening: its parent (Debian's AMI) passes the rule, it does not.
    lax = evaluations(result, "team-lax")["compliance"]
    assert not lax.passed and lax.severity == dg.AssetCheckSeverity.ERROR
    assert lax.metadata["undone"].value == ["file_permissions_etc_passwd"], lax.description

    # The test instance ran through EC2 and SSM, tagged, and is gone with its container.
    image_id = latest(instance, "team-base")["image_id"]
    client = ec2(port=backed_sandbox)
    tested = [i for r in client.describe_instances(Filters=[
        {"Name": "tag:Purpose", "Values": ["image-tests"]}, {"Name": "tag:TestedImageId", "Values": [image_id]}])["Reservations"]
        for i in r["Instances"]]
    assert [i["State"]["Name"] for i in tested] == ["terminated"]
    assert instance_containers(backed_sandbox) == []

    # No machine runs al2023 on the sandbox: not run, with the reason, never a pass.
    unbacked = evaluations(result, "team-al")
    for check in ("image_tests", "compliance"):
        found = unbacked[check]
        assert not found.passed and found.severity == dg.AssetCheckSeverity.WARN
        assert "not run on the sandbox: " in found.description and "no machine" in found.description


def test_one_image_test_run_on_the_sandbox(backed_sandbox):  # noqa: F811
    """The store call the check makes, on a Debian AMI: instance start to results."""
    store = Ec2Store("sandbox", "us-east-1")
    assert store.cannot_run == "" and store.cannot_export == ""
    image = debian_ami(store.ec2, 11)
    started = time.monotonic()
    results = store.run_commands(image, ["cat /etc/debian_version", "exit 4"], 120)
    print(f"run_commands on the sandbox, 2 commands: {time.monotonic() - started:.2f} s")
    assert [r.exit_code for r in results] == [0, 4] and results[0].output.startswith("11.")
    assert instance_containers(backed_sandbox) == []
