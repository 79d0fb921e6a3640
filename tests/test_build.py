"""End-to-end builds: the demo tree through the real CLI, reuse, failures (the asset graph and loading the
definitions: tests/unit/test_build.py)."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from conftest import PROJECT, latest, materialize, sandbox_inventory, write_demo_catalog

from image_assets.catalog import load_catalog

REQUIRED_TAGS = ["ManagedBy", "ImageName", "ImageLayer", "ImageVersion", "ParentImageId", "RootImageId",
                 "Fingerprint", "GitRefs", "DagsterRunId"]
REQUIRED_METADATA = ["image_id", "region", "parent_image_id", "root_image_id", "fingerprint", "reused",
                     "git_refs", "packer_version", "build_seconds"]


def test_demo_tree_through_the_cli_then_reused(tmp_path, work_dir, cloud):
    # A deployment of its own: images other tests built in the session sandbox from equal inputs
    # (the Windows images have no git inputs) are another deployment's, never reused here.
    def own_deployment(doc):
        doc["defaults"]["deployment"] = f"test-{tmp_path.name}"
    catalog_path = write_demo_catalog(tmp_path / "project", own_deployment)
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "IMAGE_ASSETS_CATALOG": str(catalog_path)}
    cmd = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "definitions",
           "--working-directory", str(PROJECT), "--select", "*"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    catalog = load_catalog(catalog_path)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        ids = {name: latest(instance, name)["image_id"] for name in catalog.images}
        for name, image in catalog.images.items():
            meta = latest(instance, name)
            ami = cloud.get(meta["image_id"])
            assert ami and ami.state == "available", name
            if image.vendor:
                continue
            assert set(REQUIRED_METADATA) <= set(meta), name
            assert meta["reused"] is False
            tags = ami.tags
            assert set(REQUIRED_TAGS) <= set(tags), name
            assert tags["ManagedBy"] == "image-assets" and tags["ImageName"] == name
            assert tags["ImageLayer"] == image.layer.value
            assert tags["ParentImageId"] == ids[image.parent] == meta["parent_image_id"]
            assert tags["RootImageId"] == ids[catalog.chain(name)[-1]] == meta["root_image_id"]
            assert tags["Fingerprint"] == meta["fingerprint"]
            assert set(meta["git_refs"]) == set(catalog.input_repos(name))
            assert meta["packer_version"] == "1.6.6" or meta["packer_version"][0].isdigit()
            record = instance.get_latest_materialization_event(dg.AssetKey([name])).asset_materialization
            assert record.tags["dagster/data_version"] == meta["image_id"]
        images_before = sandbox_inventory(cloud)["images"]

    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "packer build" not in second.stdout and "amazon-ebs.sandbox: AMIs were created" not in second.stdout
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for name, image in catalog.images.items():
            meta = latest(instance, name)
            assert meta["image_id"] == ids[name], name
            if not image.vendor:
                assert meta["reused"] is True, name
    assert sandbox_inventory(cloud)["images"] == images_before


def test_subtree_selection_builds_in_dependency_order(demo_catalog, instance):
    result = materialize(demo_catalog, instance, selection="global-linux*")
    built = [e.asset_key.path[0] for e in result.get_asset_materialization_events()]
    assert set(built) == {"global-linux", "python310", "service-urllib3", "service-sshd-banner"}
    assert built.index("global-linux") < built.index("python310") < built.index("service-urllib3")
    # The never-materialized vendor parent was looked up, not left empty.
    assert latest(instance, "global-linux")["parent_image_id"].startswith("ami-")


FAILING_TEMPLATE = """
variable "image_name" { type = string }
variable "image_version" { type = string }
variable "source_image_id" { type = string }
variable "region" { type = string }
variable "tags" { type = map(string) }
variable "sandbox_endpoint" { type = string }

source "amazon-ebs" "sandbox" {
  ami_name                    = "${var.image_name}-${var.image_version}"
  source_ami                  = var.source_image_id
  region                      = var.region
  instance_type               = "t3.micro"
  communicator                = "none"
  custom_endpoint_ec2         = var.sandbox_endpoint
  skip_credential_validation  = true
  skip_metadata_api_check     = true
  tags                        = var.tags
  run_tags                    = var.tags
}

build {
  sources = ["source.amazon-ebs.sandbox"]
  provisioner "shell-local" {
    inline = ["echo provisioning step two of three", "echo 'hardening failed: auditd missing' >&2", "exit 3"]
  }
}
"""


def test_failing_template_fails_the_run_and_leaves_nothing(tmp_path, work_dir, cloud, instance):
    def edit(doc):
        doc["images"]["global-linux"]["template"] = "broken"
        doc["images"]["global-linux"]["variables"] = {}
    path = write_demo_catalog(tmp_path / "project", edit)
    (path.parent / "broken").mkdir()
    (path.parent / "broken" / "template.pkr.hcl").write_text(FAILING_TEMPLATE)
    catalog = load_catalog(path)
    materialize(catalog, instance, selection="al2023")
    before = sandbox_inventory(cloud)

    result = materialize(catalog, instance, selection="global-linux", raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    message = failure.step_failure_data.error.message
    assert "global-linux" in message and "packer exited 1" in message
    assert "Script exited with non-zero exit status: 3" in message
    assert sandbox_inventory(cloud) == before
    assert instance.get_latest_materialization_event(dg.AssetKey(["global-linux"])) is None


def test_build_on_a_deleted_parent_fails_before_packer(demo_catalog, instance, cloud):
    materialize(demo_catalog, instance, selection="global-linux")
    parent = latest(instance, "global-linux")["image_id"]
    cloud.deregister(cloud.get(parent))
    result = materialize(demo_catalog, instance, selection="python310", raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert f"image {parent} does not exist" in failure.step_failure_data.error.message


def test_missing_packer_binary_says_how_to_install(demo_catalog, instance, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    from image_assets.packer import PackerCli, PackerError, resolve_binary
    with pytest.raises(PackerError, match="apt-get install packer"):
        resolve_binary(PackerCli().binary)
