"""The asset checks in the definitions (built cheaply, nothing looked up) and the image tests an image
inherits (the checks on built images: tests/test_checks.py)."""

import dagster as dg
from conftest import PROJECT

from image_assets import checks, sandbox
from image_assets.catalog import load_catalog
from image_assets.orchestration import checks as dagster_checks
from image_assets.orchestration.defs import build_defs

CHECKS = {"exists_and_available", "tags_complete", "not_revoked", "template_valid", "up_to_date"}


def test_definitions_carry_the_checks_jobs_and_schedule_cheaply(demo_catalog, monkeypatch):
    # Nothing is looked up at definition time: no packer on PATH, nothing listening on the sandbox port.
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("IMAGE_ASSETS_SANDBOX_PORT", "9")
    defs = build_defs(demo_catalog)
    assert not sandbox.is_running(9)
    graph = defs.resolve_asset_graph()
    built = [n for n, img in demo_catalog.images.items() if img.parent]
    # The Linux tree declares image tests and compliance on global-linux; every image below inherits them.
    tested = {"global-linux", "python310", "service-urllib3", "service-sshd-banner"}
    assert {(k.asset_key.path[-1], k.name) for k in graph.asset_check_keys} == \
        {(n, c) for n in built for c in CHECKS} | {(n, c) for n in tested for c in ("image_tests", "compliance")}
    specs = {s.name: s for s in dagster_checks.check_specs(demo_catalog, "python310")}
    assert {n for n, s in specs.items() if s.blocking} == {"exists_and_available", "tags_complete", "not_revoked",
                                                          "image_tests", "compliance"}
    assert defs.resolve_job_def("revoke_image") and defs.resolve_job_def("image_retention")
    build = defs.resolve_job_def("build_images")  # the named job API clients launch
    assert {k.path[-1] for k in build.asset_layer.executable_asset_keys} == set(demo_catalog.images)
    assert defs.resolve_schedule_def("image_retention_daily").default_status == dg.DefaultScheduleStatus.STOPPED


def test_the_shipped_global_images_effective_ssh_settings_bind_every_image_built_on_it():
    catalog = load_catalog(PROJECT / "images.local.yaml")
    own = catalog.images["global-linux"].tests
    assert "sshd -T | grep -qx 'permitrootlogin no'" in own
    for name in catalog.descendants("global-linux"):
        assert "image_tests" in checks.image_checks(catalog, name)
        assert checks.image_tests_of(catalog, name)[:len(own)] == [("global-linux", test) for test in own], name
