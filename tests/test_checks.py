"""Asset checks on built images: they pass after a build and fail where they should."""

import dagster as dg

from conftest import latest, write_demo_catalog
from image_assets import checks, sandbox
from image_assets.catalog import load_catalog
from image_assets.defs import build_defs
from test_lifecycle import run, run_checks

CHECKS = {"exists_and_available", "tags_complete", "not_revoked", "template_valid", "up_to_date"}


def test_definitions_carry_the_checks_jobs_and_schedule_cheaply(demo_catalog, monkeypatch):
    # Nothing is looked up at definition time: no packer on PATH, nothing listening on the sandbox port.
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("IMAGE_ASSETS_SANDBOX_PORT", "9")
    defs = build_defs(demo_catalog)
    assert not sandbox.is_running(9)
    graph = defs.resolve_asset_graph()
    built = [n for n, img in demo_catalog.images.items() if img.parent]
    assert {(k.asset_key.path[-1], k.name) for k in graph.asset_check_keys} == {(n, c) for n in built for c in CHECKS}
    specs = {s.name: s for s in checks.check_specs("python310")}
    assert {n for n, s in specs.items() if s.blocking} == {"exists_and_available", "tags_complete", "not_revoked"}
    assert defs.resolve_job_def("revoke_image") and defs.resolve_job_def("image_retention")
    assert defs.resolve_schedule_def("image_retention_daily").default_status == dg.DefaultScheduleStatus.STOPPED


def test_checks_fail_where_they_should(demo_catalog, instance, cloud):
    result = run(demo_catalog, instance, "*python310")
    evaluations = result.get_asset_check_evaluations()
    assert {(e.asset_key.path[-1], e.check_name) for e in evaluations} == \
        {(n, c) for n in ("global-linux", "python310") for c in CHECKS}
    assert all(e.passed for e in evaluations), [e.description for e in evaluations if not e.passed]
    image_id = latest(instance, "python310")["image_id"]

    def failing(*names):
        found = run_checks(demo_catalog, instance, *names)
        return {key: e.description for key, e in found.items() if not e.passed}

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

    # An invalid template: unformatted, then not even HCL. The image's other checks are unaffected.
    variables = demo_catalog.root_dir / "packer" / "aws" / "linux" / "variables.pkr.hcl"
    original = variables.read_text()
    variables.write_text(original + 'variable "extra" {  type=string }\n')
    failed = failing("global-linux")
    assert set(failed) == {("global-linux", "template_valid")}
    assert "packer fmt -check" in failed[("global-linux", "template_valid")] and "to fix" in failed[("global-linux", "template_valid")]
    variables.write_text(original + 'variable "extra" {\n')
    failed = failing("global-linux")
    assert "validate -syntax-only" in failed[("global-linux", "template_valid")]
    variables.write_text(original)
    assert not failing("global-linux")

    # Deleted: the image is gone (and so is its lineage).
    cloud.deregister(cloud.get_image(image_id))
    failed = failing("python310")
    assert {"exists_and_available", "tags_complete", "up_to_date"} <= {c for _, c in failed}
    assert "does not exist" in failed[("python310", "exists_and_available")]


def test_catalog_variables_are_validated_against_the_template(tmp_path, work_dir):
    def edit(doc):
        doc["images"]["python310"]["variables"]["playbook"] = "roles/python310.yml"  # the template forbids dirs
    catalog = load_catalog(write_demo_catalog(tmp_path / "project", edit))
    result = checks.template_valid("packer", catalog, "python310")
    assert not result.passed and "playbook must be a file name" in result.description
    assert checks.template_valid("packer", catalog, "global-linux").passed


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
