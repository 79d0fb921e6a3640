"""What the local tree's service layer ships: its code without a `.git`, and urllib3 from Debian's
package (docs/targets.md: packages come from the Debian mirror). A real build of images.local.yaml's
python-runtime and service-urllib3 (on the base image: the global layer is not what is tested). The checkout
without `.git`: tests/unit/test_service_content.py."""

import shutil
import uuid

import pytest
import yaml

from conftest import PROJECT, latest, materialize
from image_assets import stores
from image_assets.devtools import demo
from image_assets.catalog import load_catalog

RUNTIME = "/opt/runtime/python3.10/bin/python"


@pytest.fixture
def local_tree(tmp_path, work_dir, docker_daemon, monkeypatch):
    """images.local.yaml's python-runtime and service-urllib3 as shipped, python-runtime on the base
    image, with the demo's repos and the project's content in a temp dir; a deployment of its own."""
    monkeypatch.delenv("IMAGE_ASSETS_TARGET", raising=False)
    root = tmp_path / "project"
    shutil.copytree(PROJECT / "packer", root / "packer")
    demo.create_demo_repos(root)
    doc = yaml.safe_load((PROJECT / "images.local.yaml").read_text())
    keep = ("debian11", "python-runtime", "service-urllib3")
    doc["images"] = {name: doc["images"][name] for name in keep}
    doc["images"]["python-runtime"]["parent"] = "debian11"
    doc["defaults"]["deployment"] = deployment = f"tests-service-{uuid.uuid4().hex[:8]}"
    (root / "images.local.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    yield load_catalog(root / "images.local.yaml")
    store = stores.connect("local", "local")
    for image in sorted(store.managed_images(Deployment=deployment), key=lambda i: i.created, reverse=True):
        store.deregister(image)


def test_the_local_service_layer_ships_no_git_dir_and_urllib3_from_debian(base_image, local_tree, instance):
    result = materialize(local_tree, instance, raise_on_error=False)
    checks = {(e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()}
    assert checks[("service-urllib3", "image_tests")].passed, checks[("service-urllib3", "image_tests")].description

    image_id = latest(instance, "service-urllib3")["image_id"]
    commands = [
        "test -f /opt/service-urllib3/service.py && find /opt -name .git",
        f"{RUNTIME} -c 'import urllib3; print(urllib3.__file__)'",
        "dpkg-query -W -f='${Status}' python3-urllib3",
        f"{RUNTIME} -m pip list --path \"$({RUNTIME} -c 'import sysconfig; print(sysconfig.get_path(\"purelib\"))')\"",
    ]
    code, where, package, venv = stores.connect("local", "local").run_commands(image_id, commands, 300)
    assert (code.exit_code, code.output) == (0, "")  # the service's code, and no .git anywhere under /opt
    assert where.exit_code == 0 and where.output.startswith("/usr/lib/python3/dist-packages/urllib3/"), where
    assert package.output == "install ok installed"
    assert venv.exit_code == 0 and "urllib3" not in venv.output.lower()  # nothing from the package index
