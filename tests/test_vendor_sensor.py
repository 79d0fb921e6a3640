"""vendor_image_sensor against a real sandbox (moto server) serving vendor images from MOTO_AMIS_PATH."""

import fnmatch
import json
import socket
import subprocess
import sys

import boto3
import dagster as dg
import pytest
import yaml

from image_assets import sandbox
from image_assets.orchestration.assets import VENDOR_IMAGES_TAG
from image_assets.catalog import load_catalog
from image_assets.orchestration.defs import build_defs
from image_assets.orchestration.sensors import TRIGGER_TAG

VARIABLES = """
variable "image_name" { type = string }
variable "image_version" { type = string }
variable "source_image_id" { type = string }
variable "region" { type = string }
variable "tags" { type = map(string) }
variable "sandbox_endpoint" {
  type    = string
  default = ""
}
"""
VENDOR = "123456789012"
CATALOG = {
    "defaults": {"target": "sandbox", "region": "us-east-1"},
    "images": {
        "base": {"layer": "vendor", "vendor": {"owners": [VENDOR], "name": "vendorlinux-*-x86_64"}},
        "other": {"layer": "vendor", "vendor": {"owners": [VENDOR], "name": "otherlinux-*"}},
        "global-linux": {"layer": "global", "parent": "base", "template": "templates/linux"},
        "product-py": {"layer": "product", "parent": "global-linux", "template": "templates/linux"},
        "svc-a": {"layer": "service", "parent": "product-py", "template": "templates/linux"},
        "svc-b": {"layer": "service", "parent": "global-linux", "template": "templates/linux"},
        "global-other": {"layer": "global", "parent": "other", "template": "templates/linux"},
    },
}
OLD = "ami-0a1b2c3d4e5f60001"
NEW = "ami-0a1b2c3d4e5f60002"
OTHER = "ami-0a1b2c3d4e5f60003"


def ami(ami_id, name, created):
    """One image in moto's MOTO_AMIS_PATH format (the shape of moto/ec2/resources/amis.json)."""
    return {"ami_id": ami_id, "name": name, "description": name, "owner_id": VENDOR, "public": True,
            "state": "available", "creation_date": created, "image_location": f"{VENDOR}/{name}",
            "image_type": "machine", "architecture": "x86_64", "virtualization_type": "hvm",
            "hypervisor": "xen", "root_device_type": "ebs", "root_device_name": "/dev/xvda", "sriov": "simple"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def setup(tmp_path, monkeypatch, request):
    port = free_port()
    monkeypatch.setenv("IMAGE_ASSETS_SANDBOX_PORT", str(port))  # never the shared 5055
    monkeypatch.setenv("IMAGE_ASSETS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("IMAGE_ASSETS_TARGET", raising=False)
    request.addfinalizer(lambda: sandbox.stop(port, forget=True))
    (tmp_path / "templates" / "linux").mkdir(parents=True)
    (tmp_path / "templates" / "linux" / "variables.pkr.hcl").write_text(VARIABLES)
    path = tmp_path / "images.yaml"
    path.write_text(yaml.safe_dump(CATALOG, sort_keys=False))
    (tmp_path / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as instance:
        yield port, build_defs(load_catalog(path)), instance


def ec2(port):
    return boto3.client("ec2", endpoint_url=sandbox.endpoint(port), region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def serve(tmp_path, port, name, images):
    """(Re)start the sandbox serving exactly these vendor images."""
    amis = tmp_path / name
    amis.write_text(json.dumps(images))
    sandbox.stop(port)
    sandbox.start(port, extra_env={"MOTO_AMIS_PATH": str(amis)})


def tick(defs, instance, cursor):
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, resources=defs.resources)
    return defs.resolve_sensor_def("vendor_image_sensor").evaluate_tick(ctx)


def test_new_vendor_release_selects_the_vendor_asset_and_its_tree(setup, tmp_path, capsys):
    port, defs, instance = setup
    other = ami(OTHER, "otherlinux-1", "2024-01-01T00:00:00.000Z")
    serve(tmp_path, port, "amis-1.json", [ami(OLD, "vendorlinux-2024.01-x86_64", "2024-01-01T00:00:00.000Z"), other])

    first = tick(defs, instance, None)
    assert not first.run_requests and "baseline" in first.skip_message
    assert json.loads(first.cursor) == {"base": OLD, "other": OTHER}
    unchanged = tick(defs, instance, first.cursor)
    assert not unchanged.run_requests and unchanged.cursor == first.cursor

    # The vendor publishes a newer release (the old one stays, as on AWS).
    serve(tmp_path, port, "amis-2.json", [ami(OLD, "vendorlinux-2024.01-x86_64", "2024-01-01T00:00:00.000Z"),
                                          ami(NEW, "vendorlinux-2024.02-x86_64", "2024-02-01T00:00:00.000Z"), other])
    result = tick(defs, instance, first.cursor)
    assert len(result.run_requests) == 1
    request = result.run_requests[0]
    assert [k.to_user_string() for k in request.asset_selection] == [
        "base", "global-linux", "product-py", "svc-b", "svc-a"]  # not the `other` tree
    assert request.tags[TRIGGER_TAG] == f"base={NEW}"
    assert json.loads(request.tags[VENDOR_IMAGES_TAG]) == {"base": NEW}  # the run builds on what the tick saw
    assert json.loads(result.cursor) == {"base": NEW, "other": OTHER}
    again = tick(defs, instance, first.cursor)  # the same tick evaluated twice: the same key
    assert again.run_requests[0].run_key == request.run_key
    assert not tick(defs, instance, result.cursor).run_requests

    # An unreachable cloud (the port taken by something that is not the sandbox): warn, keep the cursor.
    sandbox.stop(port)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        capsys.readouterr()
        down = tick(defs, instance, result.cursor)
    assert not down.run_requests and down.cursor == result.cursor
    log = capsys.readouterr().err
    assert "WARNING - vendor_image_sensor: no lookup for 'base'" in log


def test_publish_vendor_makes_the_newest_image_of_that_vendor_query(setup, tmp_path):
    port, defs, instance = setup
    future = "2030-01-01T00:00:00.000Z"  # newer than "now": a release must still sort after it
    serve(tmp_path, port, "amis.json", [ami(OLD, "vendorlinux-2024.01-x86_64", future),
                                        ami(OTHER, "otherlinux-1", "2024-01-01T00:00:00.000Z")])
    cursor = tick(defs, instance, None).cursor
    # What the command does, from the shell: the catalog names the vendor query.
    cli = subprocess.run([sys.executable, "-m", "image_assets.sandbox", "publish-vendor", "base",
                          "--catalog", str(tmp_path / "images.yaml")], capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    first = cli.stdout.split()[1]
    second = sandbox.publish_vendor_image([VENDOR], "vendorlinux-*-x86_64", port=port)["ImageId"]  # same second

    query = {"Owners": [VENDOR], "Filters": [{"Name": "name", "Values": ["vendorlinux-*-x86_64"]}]}
    found = ec2(port).describe_images(**query)
    images = sorted(found["Images"], key=lambda i: (i["CreationDate"], i["Name"]))
    assert [i["ImageId"] for i in images] == [OLD, first, second]  # 1-second steps, never a tie
    assert [i["CreationDate"] for i in images] == [future, "2030-01-01T00:00:01.000Z", "2030-01-01T00:00:02.000Z"]
    for image in images[1:]:
        assert fnmatch.fnmatchcase(image["Name"], "vendorlinux-*-x86_64")
        assert (image["OwnerId"], image["Public"], image["State"]) == (VENDOR, True, "available")
        assert (image["RootDeviceType"], image["RootDeviceName"], image["Architecture"]) == ("ebs", "/dev/xvda", "x86_64")

    request = tick(defs, instance, cursor).run_requests[0]
    assert json.loads(request.tags[VENDOR_IMAGES_TAG]) == {"base": second}
    assert [k.to_user_string() for k in request.asset_selection][0] == "base"

    wrong = subprocess.run([sys.executable, "-m", "image_assets.sandbox", "publish-vendor", "global-linux",
                            "--catalog", str(tmp_path / "images.yaml")], capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and "vendor images: base, other" in wrong.stderr
    with pytest.raises(RuntimeError, match="no image in us-east-1 matches"):
        sandbox.publish_vendor_image([VENDOR], "nothing-*", port=port)
