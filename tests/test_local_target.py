"""`target: local` through Dagster: the docker store builds a Linux chain (the Debian 11 base ->
global with the real roles -> a script-only service) with real packer, reuses it, revokes it (what a local
catalog refuses: tests/unit/test_local_target.py)."""

import json
import uuid

from conftest import latest, materialize
from image_assets import dockerd, lifecycle, stores
from image_assets.catalog import load_catalog
from unit.test_local_target import CONTENT, write_catalog


def linux_chain() -> dict:
    # No build_ca_bundle: the docker store sets it to the host's bundle (pip reaches PyPI through its proxy).
    return {
        "debian11": {"layer": "vendor", "vendor": {"image": dockerd.BASE_IMAGE}},
        "global-linux": {"layer": "global", "parent": "debian11", "template": "packer/aws/linux", "content": CONTENT,
                         "variables": {"playbook": "global.yml"}},
        "service-banner": {"layer": "service", "parent": "global-linux", "template": "packer/aws/linux",
                           "content": CONTENT, "variables": {"scripts": ["sshd-banner.sh"]}},
    }


def test_a_linux_chain_builds_reuses_and_revokes_through_dagster(base_image, tmp_path, work_dir, instance, monkeypatch):
    monkeypatch.delenv("IMAGE_ASSETS_TARGET", raising=False)
    catalog = load_catalog(write_catalog(tmp_path / "project", linux_chain(), f"tests-local-{uuid.uuid4().hex[:8]}"))
    store = stores.connect("local", catalog.defaults.region)
    assert store.kind == "docker" and store.where == "local (docker)" and store.endpoint is None
    built = []
    try:
        materialize(catalog, instance)
        base, glob, service = (latest(instance, n) for n in ("debian11", "global-linux", "service-banner"))
        built = [glob["image_id"], service["image_id"]]
        assert base["image_id"] == base_image and base["vendor_name"].startswith(dockerd.BASE_IMAGE)
        assert glob["parent_image_id"] == base_image and glob["root_image_id"] == base_image
        assert service["parent_image_id"] == glob["image_id"] and service["root_image_id"] == base_image
        assert not glob["reused"] and not service["reused"]
        assert service["lineage"] == [service["image_id"], glob["image_id"], base_image]
        for meta, name in ((glob, "global-linux"), (service, "service-banner")):
            info = json.loads(dockerd.docker("image", "inspect", meta["image_id"]).stdout)[0]
            labels = info["Config"]["Labels"]
            assert labels["ManagedBy"] == "image-assets" and labels["ImageName"] == name
            assert labels["Fingerprint"] == meta["fingerprint"] and labels["ImageVersion"] == meta["image_version"]
            assert labels["Deployment"] == catalog.deployment
            record = store.get(meta["image_id"])
            assert record.available and record.managed and record.created.endswith("Z")
        assert info["Parent"] == glob["image_id"]  # docker commit records the service's parent image
        out = dockerd.docker("run", "--rm", "--network=none", service["image_id"], "cut", "-d ", "-f1",
                             "/etc/image-assets/layers").stdout.split()
        assert out == ["global-linux", "service-banner"]

        # Unchanged inputs: both layers are reused, no packer build.
        materialize(catalog, instance)
        again = [latest(instance, n) for n in ("global-linux", "service-banner")]
        assert [m["image_id"] for m in again] == built and all(m["reused"] for m in again)

        # Revoking the global image marks its child too (labels are fixed: the store's side record).
        revoked = lifecycle.revoke(store, glob["image_id"], "test: local revoke")
        assert {r.image_id for r in revoked} == set(built)
        assert store.get(glob["image_id"]).revoked and store.get(service["image_id"]).revoked
        assert store.find_reusable(ImageName="global-linux", Deployment=catalog.deployment) is None
    finally:
        for image_id in reversed(built):
            record = store.get(image_id)
            if record:
                store.deregister(record)
    assert all(store.get(i) is None for i in built)
