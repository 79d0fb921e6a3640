"""Asset checks on built images: they pass after a build and fail where they should (the checks in the
definitions and the inherited image tests: tests/unit/test_checks.py)."""

import dagster as dg

from conftest import latest, materialize, write_demo_catalog
from image_assets import checks
from image_assets.catalog import load_catalog
from image_assets.packer import REDACTED, PackerCli
from test_lifecycle import run, run_checks
from unit.test_checks import CHECKS
from unit.test_git_inputs import git
from unit.test_template_check import byo_template


def test_checks_fail_where_they_should(demo_catalog, instance, cloud):
    result = run(demo_catalog, instance, "*python310")
    evaluations = result.get_asset_check_evaluations()
    # The tree is on al2023 (no machine on the sandbox): its image tests and compliance are not run.
    not_run = {"image_tests", "compliance"}
    assert {(e.asset_key.path[-1], e.check_name) for e in evaluations} == \
        {(n, c) for n in ("global-linux", "python310") for c in CHECKS | not_run}
    assert all(e.passed for e in evaluations if e.check_name not in not_run), \
        [e.description for e in evaluations if not e.passed]
    assert all("not run on the sandbox" in e.description and e.severity == dg.AssetCheckSeverity.WARN
               for e in evaluations if e.check_name in not_run)
    image_id = latest(instance, "python310")["image_id"]

    def failing(*names):  # the checks that fail, but those that cannot run on al2023
        found = run_checks(demo_catalog, instance, *names)
        return {key: e.description for key, e in found.items() if not e.passed and key[1] not in not_run}

    # A tag missing, then a tag that differs from the materialization.
    cloud.ec2.delete_tags(Resources=[image_id], Tags=[{"Key": "Fingerprint"}])
    failed = failing("python310")
    assert set(failed) == {("python310", "tags_complete")} and "missing Fingerprint" in failed[("python310", "tags_complete")]
    cloud.tag(image_id, {"Fingerprint": latest(instance, "python310")["fingerprint"], "ParentImageId": "ami-0123456789abcdef0"})
    failed = failing("python310")
    assert "ParentImageId" in failed.pop(("python310", "tags_complete"))
    assert set(failed) == {("python310", "up_to_date")}  # the forged parent is not the current one either
    cloud.tag(image_id, {"ParentImageId": latest(instance, "global-linux")["image_id"]})
    assert not failing("python310")

    # Revoked.
    cloud.tag(image_id, {"Revoked": "2026-01-01T00:00:00Z: test"})
    failed = failing("python310")
    assert set(failed) == {("python310", "not_revoked")}
    assert "--select 'python310*'" in failed[("python310", "not_revoked")]
    cloud.ec2.delete_tags(Resources=[image_id], Tags=[{"Key": "Revoked"}])

    # A template unformatted (a warning: the check passes and says so), then not even HCL. The image's
    # other checks are unaffected.
    variables = demo_catalog.root_dir / "packer" / "aws" / "linux" / "variables.pkr.hcl"
    original = variables.read_text()
    variables.write_text(original + 'variable "extra" {\n  type=string\n  default = ""\n}\n')
    assert not failing("global-linux")
    found = run_checks(demo_catalog, instance, "global-linux")[("global-linux", "template_valid")]
    assert "warning: " in found.description and "packer fmt would change the layout of variables.pkr.hcl" in found.description
    variables.write_text(original + 'variable "extra" {\n')
    failed = failing("global-linux")
    assert "validate -syntax-only" in failed[("global-linux", "template_valid")]
    variables.write_text(original)
    assert not failing("global-linux")

    # Deleted: the image is gone (and so is its lineage).
    cloud.deregister(cloud.get(image_id))
    failed = failing("python310")
    assert {"exists_and_available", "tags_complete", "up_to_date"} <= {c for _, c in failed}
    assert "does not exist" in failed[("python310", "exists_and_available")]


def test_catalog_variables_are_validated_against_the_template(tmp_path, work_dir):
    def edit(doc):
        doc["images"]["python310"]["variables"]["playbook"] = "roles/python310.yml"  # the template forbids dirs
    catalog = load_catalog(write_demo_catalog(tmp_path / "project", edit))
    result = checks.template_valid(PackerCli(), catalog, "python310")
    assert not result.passed and "playbook must be a file name" in result.description
    assert checks.template_valid(PackerCli(), catalog, "global-linux").passed


def test_template_valid_fails_when_the_target_source_is_missing(tmp_path, work_dir, instance):
    # packer validate -only=amazon-ebs.sandbox on a template without that source matches nothing
    # and passes; the build then makes no artifact.
    def edit(doc):
        doc["images"]["global-linux"]["template"] = "packer/gcp/linux"
    catalog = load_catalog(write_demo_catalog(tmp_path / "project", edit))
    found = run_checks(catalog, instance, "global-linux")[("global-linux", "template_valid")]
    assert not found.passed
    assert "no amazon-ebs source (target sandbox builds the template's one amazon-ebs source)" in found.description


def test_template_valid_checks_the_ref_that_was_built(tmp_path, work_dir, instance):
    """A template in a git repo is validated at the tag@commit of the image's materialization,
    not at a newer tag nobody has built yet."""
    remote, clone = tmp_path / "team-templates.git", tmp_path / "clone"
    git("init", "-q", "--bare", str(remote))
    git("clone", "-q", str(remote), str(clone))
    byo_template(clone / "byo")
    git("add", ".", cwd=clone)
    git("commit", "-qm", "team template", cwd=clone)
    git("tag", "v1.0.0", cwd=clone)
    git("push", "-q", "origin", "HEAD:main", "v1.0.0", cwd=clone)

    def edit(doc):
        doc["repos"]["team-templates"] = {"url": str(remote), "tags": "v*"}
        doc["images"]["team-base"] = {"layer": "global", "parent": "al2023", "template": "team-templates:byo"}
    catalog = load_catalog(write_demo_catalog(tmp_path / "project", edit))
    materialize(catalog, instance, selection=["al2023", "team-base"])
    built = latest(instance, "team-base")["git_refs"]["team-templates"]
    assert built.startswith("v1.0.0@")

    (clone / "byo" / "lookup.pkr.hcl").write_text('data "amazon-ami" "base" {\n  region = var.region\n}\n')
    git("add", ".", cwd=clone)
    git("commit", "-qm", "look the base image up (needs packer 1.7)", cwd=clone)
    git("tag", "v1.1.0", cwd=clone)
    git("push", "-q", "origin", "HEAD:main", "v1.1.0", cwd=clone)

    found = run_checks(catalog, instance, "team-base")[("team-base", "template_valid")]
    assert found.passed, found.description
    assert found.metadata["template"].value == f"team-templates:byo at {built}"
    newest = checks.template_valid(PackerCli(), catalog, "team-base")  # nothing recorded: the newest tag
    assert not newest.passed and "v1.1.0@" in newest.description and "`data` needs packer" in newest.description


def test_template_valid_masks_sensitive_catalog_values(tmp_path, work_dir):
    token = "tok-4f9a71"  # short: packer wraps long lines, and masking a wrapped value is packer.py's job

    def edit(doc):
        doc["images"]["team-base"] = {"layer": "global", "parent": "al2023", "template": "team/byo",
                                      "variables": {"api_token": token}}
    path = write_demo_catalog(tmp_path / "project", edit)
    template = byo_template(path.parent / "team" / "byo")
    (template / "token.pkr.hcl").write_text(
        'variable "api_token" {\n  type      = string\n  sensitive = true\n}\n\n'
        'build {\n  sources = ["source.amazon-ebs.aws"]\n\n'
        '  provisioner "shell-local" {\n    script = "/opt/${var.api_token}/fetch.sh"\n  }\n}\n')
    result = checks.template_valid(PackerCli(), load_catalog(path), "team-base")
    assert not result.passed
    recorded = result.description + repr(result.metadata)
    assert "Bad script '/opt/" + REDACTED in recorded  # packer quoted the value; the check masked it
    assert token not in recorded
    assert "2 build blocks use amazon-ebs.aws" in result.description


def test_a_failing_blocking_check_stops_the_children(demo_catalog, instance, cloud):
    run(demo_catalog, instance, "*python310")
    parent = latest(instance, "global-linux")["image_id"]
    child = latest(instance, "python310")["image_id"]
    cloud.tag(parent, {"ImageLayer": "product"})  # still reused by fingerprint, but its tags are wrong
    result = run(demo_catalog, instance, "global-linux*", raise_on_error=False)
    assert not result.success
    evaluation = {e.check_name: e for e in result.get_asset_check_evaluations()
                  if e.asset_key == dg.AssetKey(["global-linux"])}
    assert not evaluation["tags_complete"].passed and "ImageLayer" in evaluation["tags_complete"].description
    assert latest(instance, "global-linux")["image_id"] == parent
    materialized = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    assert materialized == {"global-linux"}  # its children did not run on it
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert started == {"global_linux"}  # the checks run in the asset's own step
    assert latest(instance, "python310")["image_id"] == child


def test_template_valid_gives_secrets_placeholders_of_their_type(tmp_path, work_dir):
    # secret_env is a map(string): a string placeholder would fail packer's type check.
    def edit(doc):
        doc["images"]["global-linux"]["secrets"] = {"secret_env": {"env": "IMAGE_ASSETS_TEST_UNSET_SECRET"}}
    catalog = load_catalog(write_demo_catalog(tmp_path / "project", edit))
    result = checks.template_valid(PackerCli(), catalog, "global-linux")
    assert result.passed, result.description
