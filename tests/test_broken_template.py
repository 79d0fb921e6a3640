"""Issue 9 item 8: a template that does not parse breaks only its own images (real builds, sandbox)."""

import shutil

import dagster as dg
from conftest import latest, materialize, write_demo_catalog

from image_assets.catalog import load_catalog

BROKEN = 'variable "broken" {\n  type    = string\n  default = ]\n}\n'


def test_a_broken_template_fails_its_image_and_descendants_only(tmp_path, work_dir, instance):
    def edit(doc):
        doc["images"]["python310"]["template"] = "packer/aws/linux-python"
    path = write_demo_catalog(tmp_path / "project", edit)
    template = path.parent / "packer" / "aws" / "linux-python"
    shutil.copytree(path.parent / "packer" / "aws" / "linux", template)
    materialize(load_catalog(path), instance, "*python310")  # python310 has an image before it breaks
    built_before = latest(instance, "python310")["image_id"]

    bad = template / "variables.pkr.hcl"
    bad.write_text(bad.read_text() + BROKEN)
    line = len(bad.read_text().splitlines()) - 1
    catalog = load_catalog(path)  # loads: only python310 is broken
    result = materialize(catalog, instance, "*", raise_on_error=False)

    assert not result.success
    failures = {e.step_key: e.step_failure_data.error.message for e in result.all_events
                if e.event_type == dg.DagsterEventType.STEP_FAILURE}
    assert list(failures) == ["python310"]
    assert f"{bad}:{line}:" in failures["python310"] and "cannot parse HCL" in failures["python310"]
    materialized = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    assert materialized == set(catalog.images) - {"python310", "service-urllib3"}
    assert latest(instance, "python310")["image_id"] == built_before
    assert instance.get_latest_materialization_event(dg.AssetKey(["service-urllib3"])) is None

    # A later run of the child alone refuses too, though its parent has an (older) image.
    later = materialize(catalog, instance, "service-urllib3", raise_on_error=False)
    failure = next(e for e in later.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    message = failure.step_failure_data.error.message
    assert "parent 'python310'" in message and f"{bad}:{line}:" in message
    assert instance.get_latest_materialization_event(dg.AssetKey(["service-urllib3"])) is None
