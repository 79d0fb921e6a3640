"""Image tests and compliance on `target: local`, through Dagster with real packer, docker and
OpenSCAP: blocking checks that stop children; the same checks reported "not run" on the sandbox;
retention, lineage and outdated on docker images; a dead build's container removed."""

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
import yaml

from conftest import PROJECT, latest, materialize
from image_assets import build as buildmod
from image_assets import dockerd, lifecycle, lineage, scan, stores
from image_assets.catalog import load_catalog
from image_assets.orchestration import records

CONTENT = {"ansible": "packer/ansible", "scripts": "packer/scripts/linux", "check": "packer/scripts/content-check.sh"}
COMPLIANCE = {"profile": "image_assets_container", "tailoring": "compliance/debian11-container.xml",
              "min_pass_ratio": 0.75}
RULE = "sshd_disable_root_login"
GLOBAL_TESTS = ["ssh-keygen -A && mkdir -p /run/sshd && sshd -t", "sshd -T | grep -qx 'permitrootlogin no'"]
# A service layer's scripts: two undo the global hardening (where the scanner reads, and in a
# drop-in it does not read, sorted before the global 10-cis.conf so it wins), one only sleeps.
SCRIPTS = {
    "undo-root-login.sh": "#!/bin/sh\nset -eu\nsed -i 's/^PermitRootLogin no$/PermitRootLogin yes/' /etc/ssh/sshd_config\n",
    "root-login-drop-in.sh": "#!/bin/sh\nset -eu\necho 'PermitRootLogin yes' > /etc/ssh/sshd_config.d/00-root.conf\n",
    "hello.sh": "#!/bin/sh\nset -eu\necho 'hello from the service layer' > /etc/hello\n",
    "sleep.sh": "#!/bin/sh\nsleep 300\n",
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The project's templates, roles and tailoring, plus the test scripts, in one catalog dir."""
    root = tmp_path_factory.mktemp("local-checks")
    shutil.copytree(PROJECT / "packer", root / "packer")
    shutil.copytree(PROJECT / "compliance", root / "compliance")
    for name, text in SCRIPTS.items():
        (root / "packer/scripts/linux" / name).write_text(text)
    return root


@pytest.fixture(scope="module")
def deployment():
    return f"tests-local-checks-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def cleanup(deployment, docker_daemon):
    """Every image this module's deployment made goes at the end, children first."""
    yield
    store = stores.connect("local", "local")
    for image in sorted(store.managed_images(Deployment=deployment), key=lambda i: i.created, reverse=True):
        store.deregister(image)


def catalog_with(project: Path, deployment: str, services: dict, target: str = "local"):
    vendor = {"image": dockerd.BASE_IMAGE} if target == "local" else \
        {"owners": ["amazon"], "name": "al2023-ami-2023.*-kernel-6.1-x86_64"}
    images = {
        "debian11": {"layer": "vendor", "vendor": vendor},
        "global-linux": {"layer": "global", "parent": "debian11", "template": "packer/aws/linux", "content": CONTENT,
                         "variables": {"playbook": "global.yml"}, "compliance": COMPLIANCE,
                         "tests": GLOBAL_TESTS},
    }
    for name, spec in services.items():
        images[name] = {"layer": "service", "template": "packer/aws/linux", "content": CONTENT, **spec}
    path = project / f"images-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump({"defaults": {"target": target, "deployment": deployment}, "images": images}))
    return load_catalog(path)


def evaluations(result) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    return {(e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()}


def materialized(result) -> set[str]:
    return {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}


@pytest.fixture(autouse=True)
def _local(monkeypatch):
    monkeypatch.delenv("IMAGE_ASSETS_TARGET", raising=False)


def test_a_layer_that_undoes_hardening_fails_compliance_and_its_child_is_not_built(
        base_image, project, deployment, cleanup, instance, work_dir):
    catalog = catalog_with(project, deployment, {
        "service-undo": {"parent": "global-linux", "variables": {"scripts": ["undo-root-login.sh"]}},
        "service-undo-child": {"parent": "service-undo", "variables": {"scripts": ["hello.sh"]}},
        "service-ok": {"parent": "global-linux", "variables": {"scripts": ["hello.sh"]}},
    })
    result = materialize(catalog, instance, raise_on_error=False)
    checks = evaluations(result)

    glob = checks[("global-linux", "compliance")]
    meta = {k: v.value for k, v in glob.metadata.items()}
    assert glob.passed, glob.description
    assert meta["rules_passed"] > meta["parent_rules_passed"] > 0  # the hardening passes more rules than the base
    assert meta["ratio"] >= COMPLIANCE["min_pass_ratio"] and meta["declared_by"] == "global-linux"
    assert meta["profile"] == "xccdf_com.image-assets_profile_image_assets_container"
    assert meta["content_version"] not in ("", "?") and Path(meta["report"]).is_file()
    assert "<html" in Path(meta["report"]).read_text(errors="replace")[:2000].lower()
    assert checks[("global-linux", "image_tests")].passed

    undo = checks[("service-undo", "compliance")]
    assert not undo.passed and undo.severity == dg.AssetCheckSeverity.ERROR
    assert RULE in undo.metadata["undone"].value and RULE in undo.description
    assert "its parent 'global-linux' passes now fail" in undo.description
    # The global drop-in still wins over the edited sshd_config, which is all the scanner reads: the
    # message says so, and the inherited `sshd -T` test passes on the effective setting.
    assert f"{RULE} reads /etc/ssh/sshd_config only" in undo.description
    assert "/etc/ssh/sshd_config.d/10-cis.conf sets PermitRootLogin" in undo.description
    assert "the effective setting is what `sshd -T` reports" in undo.description
    assert checks[("service-undo", "image_tests")].passed
    assert checks[("service-ok", "compliance")].passed  # inherited from global-linux, and kept
    built = materialized(result)
    assert {"global-linux", "service-ok", "service-undo"} <= built  # the image exists; its check failed
    assert "service-undo-child" not in built and not instance.get_latest_materialization_event(
        dg.AssetKey(["service-undo-child"]))


def test_a_drop_in_that_permits_root_login_fails_the_inherited_global_tests_and_blocks_children(
        base_image, project, deployment, cleanup, instance, work_dir):
    catalog = catalog_with(project, deployment, {
        "service-drop-in": {"parent": "global-linux", "variables": {"scripts": ["root-login-drop-in.sh"]}},
        "service-drop-in-child": {"parent": "service-drop-in", "variables": {"scripts": ["hello.sh"]}},
        "service-ok": {"parent": "global-linux", "variables": {"scripts": ["hello.sh"]}},
    })
    result = materialize(catalog, instance, raise_on_error=False)
    checks = evaluations(result)

    drop_in = checks[("service-drop-in", "image_tests")]  # it declares no tests: the global image's bind it
    assert not drop_in.passed and drop_in.severity == dg.AssetCheckSeverity.ERROR
    runs = drop_in.metadata["results"].value
    assert [(r["declared_on"], r["command"], r["exit_code"]) for r in runs] == \
        [("global-linux", GLOBAL_TESTS[0], 0), ("global-linux", GLOBAL_TESTS[1], 1)]
    assert f"`{GLOBAL_TESTS[1]}` (declared on 'global-linux') exited 1" in drop_in.description
    assert "service-drop-in-child" not in materialized(result)

    ok = checks[("service-ok", "image_tests")]
    assert ok.passed, ok.description
    assert [(r["declared_on"], r["command"]) for r in ok.metadata["results"].value] == \
        [("global-linux", command) for command in GLOBAL_TESTS]
    assert "service-ok" in materialized(result)


def test_a_failing_image_test_blocks_children_and_a_passing_one_records_its_output(
        base_image, project, deployment, cleanup, instance, work_dir):
    catalog = catalog_with(project, deployment, {
        "service-broken": {"parent": "global-linux", "variables": {"scripts": ["hello.sh"]},
                           "tests": ["cat /etc/hello", "echo looking for /etc/missing; test -e /etc/missing",
                                     "echo still ran"]},
        "service-broken-child": {"parent": "service-broken", "variables": {"scripts": ["hello.sh"]}},
        "service-tested": {"parent": "global-linux", "variables": {"scripts": ["hello.sh"]},
                           "tests": ["cat /etc/hello", "grep -c . /etc/image-assets/layers"]},
    })
    result = materialize(catalog, instance, raise_on_error=False)
    checks = evaluations(result)
    assert latest(instance, "global-linux")["reused"]  # the first test's global image: same inputs

    broken = checks[("service-broken", "image_tests")]
    assert not broken.passed and broken.severity == dg.AssetCheckSeverity.ERROR
    runs = broken.metadata["results"].value
    # The global image's tests first, then its own: each command runs and is reported.
    assert [(r["declared_on"], r["exit_code"]) for r in runs] == \
        [("global-linux", 0), ("global-linux", 0), ("service-broken", 0), ("service-broken", 1), ("service-broken", 0)]
    assert runs[2]["output"] == "hello from the service layer"
    assert runs[3]["output"] == "looking for /etc/missing" and "test -e /etc/missing" in broken.description
    assert "service-broken-child" not in materialized(result)

    tested = checks[("service-tested", "image_tests")]
    assert tested.passed, tested.description
    outputs = [r["output"] for r in tested.metadata["results"].value][len(GLOBAL_TESTS):]
    assert outputs == ["hello from the service layer", "2"]  # global-linux and service-tested


def test_each_instance_keeps_its_scans_in_its_own_directory_and_nothing_in_the_home_cache(
        base_image, project, deployment, cleanup, instance, work_dir, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    shared = dockerd.state_dir() / "scans"  # where every instance's scans went
    before = sorted(shared.iterdir()) if shared.exists() else []
    catalog = catalog_with(project, deployment, {
        "service-ok": {"parent": "global-linux", "variables": {"scripts": ["hello.sh"]}},
    })
    (tmp_path / "other_home").mkdir()
    folders = []
    with dg.instance_for_test(temp_dir=str(tmp_path / "other_home")) as other:
        for each in (instance, other):
            checks = evaluations(materialize(catalog, each))
            root = Path(each.root_directory).resolve()
            for name in ("global-linux", "service-ok"):
                report = Path(checks[(name, "compliance")].metadata["report"].value).resolve()
                assert report.is_file() and root in report.parents, (name, root, report)
                folders.append(report.parent)
    assert len(set(folders)) == 2  # one folder per instance, shared by its images
    assert not (home / ".cache").exists()
    assert (sorted(shared.iterdir()) if shared.exists() else []) == before


def test_the_scan_cli_keeps_its_report_in_dagster_homes_directory(base_image, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    assert scan.main([dockerd.BASE_IMAGE, "--json"]) == 0
    report = Path(json.loads(capsys.readouterr().out)["report"])
    assert report.is_file() and report.parent == tmp_path / "dagster_home" / "image-assets" / "scans"


def test_retention_lineage_and_outdated_on_local_images(base_image, project, deployment, cleanup, instance, work_dir):
    catalog = catalog_with(project, deployment, {
        "service-kept": {"parent": "global-linux", "variables": {"scripts": ["hello.sh"]},
                         "retention": {"keep": 1, "min_age": "0s"}},
    })
    store = stores.connect("local", "local")
    materialize(catalog, instance)
    first = latest(instance, "service-kept")
    # A new build of the same inputs: a changed script, so the old image is no longer current.
    (project / "packer/scripts/linux/hello.sh").write_text(SCRIPTS["hello.sh"] + "echo again >> /etc/hello\n")
    try:
        catalog = load_catalog(catalog.path)
        materialize(catalog, instance, selection="service-kept")
    finally:
        (project / "packer/scripts/linux/hello.sh").write_text(SCRIPTS["hello.sh"])
    second = latest(instance, "service-kept")
    assert second["image_id"] != first["image_id"] and not second["reused"]

    chain = lineage.lineage(store, second["image_id"])
    assert [link.image_id for link in chain] == [second["image_id"], latest(instance, "global-linux")["image_id"],
                                                 base_image]
    assert not lineage.problems(chain)
    current = records.current_images(catalog, instance)
    assert [f.name for f in lineage.outdated(catalog, store, current) if f.status != "current"] == []

    decisions = lifecycle.retention(catalog, store, current, dry_run=False)
    deleted = {d.image_id for d in decisions if d.delete}
    assert deleted == {first["image_id"]}, [d.as_dict() for d in decisions]
    assert store.get(first["image_id"]) is None and store.get(second["image_id"]).available

    # The global image rebuilt under it: service-kept is now outdated, on docker as on the sandbox.
    lifecycle.revoke(store, latest(instance, "global-linux")["image_id"], "test: outdated on local")
    assert store.get(second["image_id"]).revoked
    materialize(catalog, instance, selection="global-linux")
    current = records.current_images(catalog, instance)
    stale = {f.name: f for f in lineage.outdated(catalog, store, current) if f.status != "current"}
    assert "service-kept" in stale, stale


def test_sandbox_reports_image_tests_and_compliance_as_not_run(project, instance, work_dir, monkeypatch):
    catalog = catalog_with(project, f"tests-notrun-{uuid.uuid4().hex[:6]}", {
        "service-x": {"parent": "global-linux", "variables": {"scripts": ["hello.sh"]}, "tests": ["true"]},
        "service-y": {"parent": "global-linux", "variables": {"scripts": ["hello.sh"]}},  # inherits only
    }, target="sandbox")
    result = materialize(catalog, instance)
    checks = evaluations(result)
    for name, check in (("global-linux", "image_tests"), ("global-linux", "compliance"),
                        ("service-x", "image_tests"), ("service-x", "compliance"),
                        ("service-y", "image_tests"), ("service-y", "compliance")):
        e = checks[(name, check)]
        assert not e.passed and e.severity == dg.AssetCheckSeverity.WARN, (name, check)  # never a pass
        assert e.metadata["status"].value == "not run"
        # al2023 has no machine on the sandbox (Debian's AMIs do: tests/test_sandbox_checks.py)
        assert "not run on the sandbox: " in e.description and "no machine" in e.description
    # The tests not run are listed with where each is declared, inherited ones as own ones.
    inherited = [{"declared_on": "global-linux", "command": command} for command in GLOBAL_TESTS]
    assert checks[("service-y", "image_tests")].metadata["tests"].value == inherited
    assert checks[("service-x", "image_tests")].metadata["tests"].value == \
        inherited + [{"declared_on": "service-x", "command": "true"}]
    assert "2 image test(s) (declared on 'global-linux': 2)" in checks[("service-y", "image_tests")].description
    assert "3 image test(s) (declared on 'global-linux': 2, 'service-x': 1)" in checks[("service-x", "image_tests")].description
    assert {"service-x", "service-y"} <= materialized(result)  # WARN does not block


def test_a_dead_builds_container_is_found_by_run_and_removed(base_image, project, deployment, cleanup, tmp_path):
    catalog = catalog_with(project, deployment, {
        "service-sleep": {"parent": "global-linux", "variables": {"scripts": ["sleep.sh"]}},
    })
    # Build service-sleep on the base image directly with packer, as the build does, then kill packer.
    run_id = str(uuid.uuid4())
    store = stores.connect("local", "local")
    resolved = buildmod.resolve(catalog, "service-sleep", buildmod.Parent(base_image, base_image),
                                tmp_path / "w", {})
    tags = buildmod.image_tags(resolved, "0.0.0", resolved.fingerprint(), run_id)
    var_file = tmp_path / "vars.json"
    var_file.write_text(json.dumps({
        "image_name": "service-sleep", "image_version": "0.0.0", "source_image_id": base_image, "region": "local",
        "tags": tags, "scripts": ["sleep.sh"], "manifest_path": str(tmp_path / "manifest.json"),
        "content_dirs": {k: str(v) for k, v in resolved.content_dirs.items()}}))
    packer = subprocess.Popen(["packer", "build", "-only=docker.local", f"-var-file={var_file}",
                               str(resolved.template_dir)], cwd=tmp_path, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=dockerd.client_env(dict(os.environ, CHECKPOINT_DISABLE="1")))
    try:
        deadline = time.monotonic() + 120
        while run_id not in store.runs_with_leftovers("service-sleep"):
            assert time.monotonic() < deadline and packer.poll() is None, "no labelled build container appeared"
            time.sleep(0.5)
        os.killpg(packer.pid, signal.SIGKILL)  # a run that dies: packer cannot clean up
        packer.wait(timeout=30)
        assert run_id in store.runs_with_leftovers("service-sleep")
        # A run in progress is never touched; a dead one's container goes.
        assert buildmod.remove_dead_builds(store, "service-sleep", "other-run", {}, lambda r: False, 5) == []
        removed = buildmod.remove_dead_builds(store, "service-sleep", "other-run", {}, lambda r: r == run_id, 5)
        assert len(removed) == 1
        assert run_id not in store.runs_with_leftovers("service-sleep")
    finally:
        if packer.poll() is None:
            os.killpg(packer.pid, signal.SIGKILL)
        for container, _ in store._build_containers("service-sleep", run_id):
            dockerd.docker("rm", "-f", container, check=False)
