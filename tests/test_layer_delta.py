"""What each layer changed, on real packer and docker: a layer that installs a package and removes one
records both in its materialization, with versions, and the files it changed, on the local target
and on the sandbox (a layer on Debian 11's AMI, built over SSH in an instance's container); a reused
materialization carries the delta its build recorded; an image no machine runs on the sandbox says
its delta was not measured, and why (the delta's logic on dpkg text: tests/unit/test_layer_delta.py)."""

import shutil
import uuid

import yaml

from conftest import AL2023, PROJECT, latest, materialize
from image_assets import dockerd, layer_delta, sandbox, stores
from image_assets.sandbox import instances as sandbox_instances
from image_assets.catalog import load_catalog
from test_sandbox_instances import backed_sandbox  # noqa: F401 (a fixture)
from unit.test_local_target import CONTENT, write_catalog

INSTALLED, REMOVED = "less", "gcc-9-base"  # gcc-9-base: in Debian 11's minbase, and nothing there needs it
SCRIPT = f"""#!/bin/sh
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get -qq update
apt-get -qq install -y --no-install-recommends {INSTALLED}
apt-get -qq purge -y {REMOVED}
"""


def versions(image: str) -> dict[str, str]:
    out = dockerd.docker("run", "--rm", "--network=none", image, "dpkg-query", "-W", "-f=${Package} ${Version}\\n").stdout
    return dict(line.split(" ", 1) for line in out.splitlines())


def test_a_local_layer_records_the_packages_and_files_it_changed(base_image, tmp_path, work_dir, instance, monkeypatch):
    monkeypatch.delenv("IMAGE_ASSETS_TARGET", raising=False)
    images = {"debian11": {"layer": "vendor", "vendor": {"image": dockerd.BASE_IMAGE}},
              "tools": {"layer": "global", "parent": "debian11", "template": "packer/aws/linux", "content": CONTENT,
                        "variables": {"scripts": ["layer-delta.sh"]}}}
    path = write_catalog(tmp_path / "project", images, f"tests-delta-{uuid.uuid4().hex[:8]}")
    (path.parent / "packer" / "scripts" / "linux" / "layer-delta.sh").write_text(SCRIPT)
    catalog = load_catalog(path)
    store = stores.connect("local", catalog.defaults.region)
    built = None
    try:
        materialize(catalog, instance)
        meta = latest(instance, "tools")
        built = meta["image_id"]
        before, after = versions(base_image), versions(built)
        assert INSTALLED not in before and REMOVED not in after
        assert meta["packages_added"] == [{"name": INSTALLED, "version": after[INSTALLED], "arch": "amd64"}]
        assert meta["packages_removed"] == [{"name": REMOVED, "version": before[REMOVED], "arch": "amd64"}]
        assert meta["packages_upgraded"] == []
        assert meta["files_changed"] > 0
        assert meta["layer_delta"].startswith(f"1 packages added, 1 removed, 0 upgraded; {meta['files_changed']} files")
        # The layer's files as a container of each image lists them (the way a daemon whose layers
        # cannot be read here is measured) agree with the count read from its layers.
        listed = layer_delta._in_containers(layer_delta._inspect(base_image), layer_delta._inspect(built))
        assert listed.metadata() == {k: v for k, v in meta.items() if k in layer_delta.METADATA_KEYS}

        # Reused: the materialization carries the delta recorded when the image was built.
        materialize(catalog, instance)
        again = latest(instance, "tools")
        assert again["reused"] and again["image_id"] == built
        assert {k: again[k] for k in layer_delta.METADATA_KEYS if k in again} == \
            {k: meta[k] for k in layer_delta.METADATA_KEYS if k in meta}
    finally:
        record = store.get(built) if built else None
        if record:
            store.deregister(record)


def test_a_sandbox_layer_on_debian_11_records_its_delta(backed_sandbox, tmp_path, work_dir, instance):  # noqa: F811
    project = tmp_path / "project"
    shutil.copytree(PROJECT / "packer", project / "packer")
    (project / "packer" / "scripts" / "linux" / "layer-delta.sh").write_text(SCRIPT)
    layer = {"template": "packer/aws/linux", "content": {"scripts": "packer/scripts/linux"},
             "variables": {"scripts": ["layer-delta.sh"]}}
    path = project / "images.yaml"
    path.write_text(yaml.safe_dump({"defaults": {"target": "sandbox", "region": "us-east-1"}, "images": {
        "debian-11": {"layer": "vendor", "vendor": {"owners": ["136693071363"], "name": "debian-11-amd64-*"}},
        "tools": {"layer": "global", "parent": "debian-11", **layer},
        "al2023": AL2023,
        "tools-al": {"layer": "global", "parent": "al2023", **layer},
    }}, sort_keys=False))
    materialize(load_catalog(path), instance)

    meta = latest(instance, "tools")
    backing = sandbox_instances.read_backing(backed_sandbox)
    before, after = versions(backing[meta["parent_image_id"]]), versions(backing[meta["image_id"]])
    assert INSTALLED not in before and REMOVED not in after
    assert meta["packages_added"] == [{"name": INSTALLED, "version": after[INSTALLED], "arch": "amd64"}]
    assert meta["packages_removed"] == [{"name": REMOVED, "version": before[REMOVED], "arch": "amd64"}]
    assert meta["files_changed"] > 0 and meta["layer_delta"].startswith("1 packages added, 1 removed, 0 upgraded; ")
    print(f"sandbox layer on debian-11: {meta['layer_delta']}")

    # No machine runs al2023 here: the stand-in build's delta is not measured, and says why.
    unbacked = latest(instance, "tools-al")
    assert unbacked["layer_delta"].startswith("not measured: ") and "no machine" in unbacked["layer_delta"]
    assert not set(unbacked) & {"packages_added", "packages_removed", "packages_upgraded", "files_changed"}
    assert sandbox.port_of(stores.connect("sandbox", "us-east-1").endpoint) == backed_sandbox
