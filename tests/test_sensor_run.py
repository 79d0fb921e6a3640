"""Sensor run requests executed for real: the subtree is rebuilt from the new tag or vendor image, nothing else."""

import json
import subprocess
import sys

import dagster as dg
import pytest
from conftest import free_port, latest, materialize

from image_assets import sandbox, stores
from image_assets.orchestration.assets import GIT_REFS_TAG, VENDOR_IMAGES_TAG, lookup_vendor
from image_assets.orchestration.defs import build_defs
from image_assets.stores.ec2 import Ec2Store

GIT_ID = ["-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"]


def git(*args, cwd=None) -> str:
    return subprocess.run(["git", *GIT_ID, *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def evaluate(defs, instance, cursor, sensor="git_tag_sensor"):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, resources=defs.resources)
    result = defs.resolve_sensor_def(sensor).evaluate_tick(context)
    return result.run_requests, result.cursor


def test_new_roles_tag_rebuilds_exactly_its_subtree_from_the_tagged_commit(demo_catalog, instance, tmp_path, cloud):
    materialize(demo_catalog, instance)
    before = {name: latest(instance, name)["image_id"] for name in demo_catalog.images}
    defs = build_defs(demo_catalog)
    requests, cursor = evaluate(defs, instance, None)
    assert requests == []

    # CI of the roles repo merges a change and pushes the next tag.
    clone = tmp_path / "roles-clone"
    git("clone", "-q", demo_catalog.repos["ansible-roles"].url, str(clone))
    (clone / "roles" / "cis_hardening" / "defaults" / "main.yml").write_text(
        (clone / "roles" / "cis_hardening" / "defaults" / "main.yml").read_text() + "\n# tightened\n")
    git("commit", "-qam", "Tighten hardening", cwd=clone)
    git("tag", "-a", "v1.1.0", "-m", "v1.1.0", cwd=clone)
    git("push", "-q", "origin", "HEAD:main", "v1.1.0", cwd=clone)
    commit = git("rev-parse", "HEAD", cwd=clone)

    requests, cursor = evaluate(defs, instance, cursor)
    assert len(requests) == 1
    selected = {key.path[0] for key in requests[0].asset_selection}
    assert selected == {"global-linux", "python310", "service-urllib3", "service-sshd-banner"}
    result = materialize(demo_catalog, instance, selection=list(requests[0].asset_selection), tags=requests[0].tags)
    assert result.success
    assert requests[0].tags[GIT_REFS_TAG]

    after = {name: latest(instance, name)["image_id"] for name in demo_catalog.images}
    for name in demo_catalog.images:
        if name in selected:
            assert after[name] != before[name], f"{name} was not rebuilt"
            tags = cloud.get(after[name]).tags
            if "ansible-roles" in demo_catalog.input_repos(name):
                assert f"ansible-roles=v1.1.0@{commit}" in tags["GitRefs"]
            parent = demo_catalog.images[name].parent
            assert tags["ParentImageId"] == after[parent]
        else:
            assert after[name] == before[name], f"{name} is outside the subtree but changed"

    # The same tick evaluated again starts nothing new.
    again, _ = evaluate(defs, instance, cursor)
    assert again == []


@pytest.fixture
def own_sandbox(monkeypatch, request):
    """A sandbox of this test's own: the vendor releases it publishes stay out of the session's."""
    port = free_port()
    monkeypatch.setenv("IMAGE_ASSETS_SANDBOX_PORT", str(port))
    request.addfinalizer(lambda: sandbox.stop(port, forget=True))
    sandbox.start(port)
    return Ec2Store("sandbox", "us-east-1")


def test_vendor_release_rebuilds_its_tree_on_exactly_the_image_the_sensor_saw(demo_catalog, instance, own_sandbox):
    cloud = own_sandbox
    defs = build_defs(demo_catalog)
    requests, cursor = evaluate(defs, instance, None, "vendor_image_sensor")
    assert requests == []

    # Amazon publishes a new Amazon Linux 2023 release (on the sandbox: the command does it).
    published = subprocess.run([sys.executable, "-m", "image_assets.sandbox", "publish-vendor", "al2023",
                                "--catalog", str(demo_catalog.path)], capture_output=True, text=True, timeout=60)
    assert published.returncode == 0, published.stderr
    release = published.stdout.split()[1]
    assert lookup_vendor(demo_catalog, "al2023", stores.connect("sandbox", demo_catalog.defaults.region)).id == release

    requests, cursor = evaluate(defs, instance, cursor, "vendor_image_sensor")
    assert len(requests) == 1
    selected = {key.path[0] for key in requests[0].asset_selection}
    assert selected == {"al2023", "global-linux", "python310", "service-urllib3", "service-sshd-banner"}
    assert json.loads(requests[0].tags[VENDOR_IMAGES_TAG]) == {"al2023": release}

    # Yet another release lands after the tick, before the run starts: the run must not take it.
    query = demo_catalog.images["al2023"].vendor
    later = sandbox.publish_vendor_image(query.owners, query.name)["ImageId"]
    assert lookup_vendor(demo_catalog, "al2023", stores.connect("sandbox", demo_catalog.defaults.region)).id == later != release

    result = materialize(demo_catalog, instance, selection=list(requests[0].asset_selection), tags=requests[0].tags)
    assert result.success
    assert latest(instance, "al2023")["image_id"] == release and latest(instance, "al2023")["pinned"] is True
    for name in selected - {"al2023"}:
        meta = latest(instance, name)
        tags = cloud.get(meta["image_id"]).tags
        assert tags["RootImageId"] == meta["root_image_id"] == release, name
        assert tags["ParentImageId"] == latest(instance, demo_catalog.images[name].parent)["image_id"], name
    assert cloud.get(latest(instance, "global-linux")["image_id"]).tags["ParentImageId"] == release
    assert instance.get_latest_materialization_event(dg.AssetKey(["global-windows"])) is None

    # A pin to an image that is gone fails at once, naming it; nothing is built on anything else.
    gone = materialize(demo_catalog, instance, selection=["al2023"], raise_on_error=False,
                       tags={VENDOR_IMAGES_TAG: json.dumps({"al2023": "ami-0123456789abcdef0"})})
    assert not gone.success
    failure = next(e for e in gone.all_events if e.is_step_failure)
    assert "ami-0123456789abcdef0 does not exist" in str(failure.event_specific_data.error)
    assert latest(instance, "al2023")["image_id"] == release
