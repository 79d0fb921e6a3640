"""What builds leave behind, with real packer on the sandbox and on the local docker target: a failed
build leaves no work dir and no packer temp dir; a build killed with its packer leaves them only
until the next build of that image; an image whose blocking checks fail is removed."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
import yaml

from conftest import PROJECT, latest, materialize
from image_assets import build as buildmod
from image_assets import dockerd, stores
from image_assets.catalog import load_catalog
from image_assets.packer import PackerCli, PackerError

CONTENT = {"scripts": "packer/scripts/linux", "check": "packer/scripts/content-check.sh"}
SCRIPTS = {
    # Fails on the sandbox (the content check's `sh -n`) and in docker (exit 7 runs first).
    "fail.sh": "#!/bin/sh\necho failing\nexit 7\nif then\n",
    "sleep.sh": "#!/bin/sh\nsleep 300\n",
    "hello.sh": "#!/bin/sh\nset -eu\necho 'hello from the service layer' > /etc/hello\n",
}
VENDORS = {"local": {"image": dockerd.BASE_IMAGE},
           "sandbox": {"owners": ["amazon"], "name": "al2023-ami-2023.*-kernel-6.1-x86_64"}}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("leftovers")
    shutil.copytree(PROJECT / "packer", root / "packer")
    for name, text in SCRIPTS.items():
        (root / "packer/scripts/linux" / name).write_text(text)
    return root


@pytest.fixture
def deployment(docker_daemon):
    name = f"tests-leftovers-{uuid.uuid4().hex[:8]}"
    yield name
    store = stores.connect("local", "local")
    for image in sorted(store.managed_images(Deployment=name), key=lambda i: i.created, reverse=True):
        store.deregister(image)


@pytest.fixture
def temp_root(monkeypatch):
    """This test's own temp dir for everything (packer included): what a build leaves there is its
    own. Short, as packer's plugin sockets in it need."""
    root = Path(tempfile.mkdtemp(prefix="ia-", dir="/tmp"))
    monkeypatch.setenv("TMPDIR", str(root))
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_target_override(monkeypatch):
    monkeypatch.delenv("IMAGE_ASSETS_TARGET", raising=False)


def catalog_with(project: Path, deployment: str, target: str, services: dict):
    images = {"vendor-base": {"layer": "vendor", "vendor": VENDORS[target]}}
    for name, spec in services.items():
        images[name] = {"layer": "service", "parent": "vendor-base", "template": "packer/aws/linux",
                        "content": CONTENT, **spec}
    path = project / f"images-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump({"defaults": {"target": target, "deployment": deployment}, "images": images}))
    return load_catalog(path)


def vendor_parent(catalog) -> buildmod.Parent:
    store = stores.connect(catalog.target, catalog.defaults.region)
    base = store.newest_vendor_image(catalog.images["vendor-base"].vendor)
    return buildmod.Parent(base.id, base.id)


def leftovers(temp_root: Path, work_dir: Path, home: Path | None = None) -> list[str]:
    """Everything under the test's temp dir, the work root (but its lock files) and packer's
    ~/.packer.d/tmp* of `home`."""
    found = [str(p) for p in temp_root.rglob("*")]
    found += [str(p) for p in work_dir.iterdir() if p.name != ".locks"] if work_dir.is_dir() else []
    found += [str(p) for p in (home / ".packer.d").glob("tmp*")] if home else []
    return found


@pytest.mark.parametrize("target", ["sandbox", "local"])
def test_a_failed_build_leaves_no_work_dir_and_no_packer_temp_dir(target, project, deployment, temp_root,
                                                                   work_dir, request):
    if target == "local":
        request.getfixturevalue("base_image")
    catalog = catalog_with(project, deployment, target, {"svc-fail": {"variables": {"scripts": ["fail.sh"]}}})
    with pytest.raises(PackerError, match="svc-fail|fail.sh|exit status: 7"):
        buildmod.build_image(catalog, "svc-fail", vendor_parent(catalog), str(uuid.uuid4()), PackerCli())
    assert leftovers(temp_root, work_dir) == []
    if target == "local":
        assert stores.connect("local", "local").runs_with_leftovers("svc-fail") == set()  # packer removed its container


def test_a_killed_builds_packer_temp_dir_goes_with_the_next_build_of_the_image(
        base_image, project, deployment, temp_root, work_dir, tmp_path):
    """SIGKILL of the step and of packer (nothing can clean up); the next build of the image
    removes what they left: the build container, the work dir and packer's temp dir. The killed
    build runs with its own HOME, so its ~/.packer.d is this test's too."""
    home = tmp_path / "home"
    home.mkdir()
    sleeping = catalog_with(project, deployment, "local", {"svc-killed": {"variables": {"scripts": ["sleep.sh"]}}})
    parent = vendor_parent(sleeping)
    run_id = str(uuid.uuid4())
    step = subprocess.Popen(
        [sys.executable, "-c", "import sys; from image_assets import build as b; from image_assets.catalog import "
         "load_catalog; from image_assets.packer import PackerCli; b.build_image(load_catalog(sys.argv[1]), "
         "'svc-killed', b.Parent(sys.argv[2], sys.argv[2]), sys.argv[3], PackerCli())",
         str(sleeping.path), parent.image_id, run_id],
        env={**os.environ, "HOME": str(home)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lock = work_dir / ".locks" / "svc-killed.lock"
    pgid = None
    try:
        for line in step.stdout:  # until packer runs the sleeping script
            if "sleep.sh" in line and "Provisioning" in line:
                break
        else:
            pytest.fail(f"the build ended before its script ran (exit {step.wait()})")
        pgid = json.loads(lock.read_text())["pgid"]
        os.killpg(pgid, signal.SIGKILL)
        step.kill()
        step.wait(timeout=60)
        assert leftovers(temp_root, work_dir, home), "the killed build left nothing to clean up"

        # The next build of the image (a script that ends): it finds the dead run in the lock.
        quick = catalog_with(project, deployment, "local", {"svc-killed": {"variables": {"scripts": ["hello.sh"]}}})
        built = buildmod.build_image(quick, "svc-killed", parent, str(uuid.uuid4()), PackerCli())
        assert not built.reused
        assert leftovers(temp_root, work_dir, home) == []  # the killed build's and its own
        assert stores.connect("local", "local").runs_with_leftovers("svc-killed") == set()
    finally:
        if step.poll() is None:
            step.kill()
        if pgid:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for container in stores.connect("local", "local")._build_containers("svc-killed", run_id):
            dockerd.docker("rm", "-f", container[0], check=False)


def test_an_image_whose_blocking_checks_fail_is_removed(base_image, project, deployment, instance, work_dir):
    catalog = catalog_with(project, deployment, "local", {
        "svc-broken": {"variables": {"scripts": ["hello.sh"]}, "tests": ["cat /etc/hello", "test -e /etc/missing"]},
        "svc-broken-child": {"parent": "svc-broken", "variables": {"scripts": ["hello.sh"]}},
        "svc-sound": {"variables": {"scripts": ["hello.sh"]}, "tests": ["cat /etc/hello"]},
    })
    result = materialize(catalog, instance, raise_on_error=False)
    checks = {(e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()}
    assert not checks[("svc-broken", "image_tests")].passed
    assert checks[("svc-sound", "image_tests")].passed
    store = stores.connect("local", "local")
    broken, sound = latest(instance, "svc-broken")["image_id"], latest(instance, "svc-sound")["image_id"]
    assert store.get(broken) is None  # built, failed its tests, removed
    assert store.managed_images(Deployment=deployment, ImageName="svc-broken") == []
    assert store.get(sound) is not None and store.channel_get("svc-sound", "latest") == sound
    assert not instance.get_latest_materialization_event(dg.AssetKey(["svc-broken-child"]))
    removal = [e.message for e in instance.all_logs(result.run_id) if f"removed {broken}" in (e.message or "")]
    assert len(removal) == 1 and "image_tests" in removal[0], removal  # built once: a failed check is not retried
