"""Release channels: publish to latest, promote, roll back, revoke; on the session sandbox (SSM
parameters served by the same moto server), real packer builds, a real Dagster instance, and the
`python -m image_assets` CLI as a subprocess; on local, docker tags."""

import json
import uuid

import dagster as dg
import pytest

from conftest import latest, materialize, write_demo_catalog
from test_lifecycle import change_global_content, cli, cli_json, observations, run
from image_assets import channels, dockerd, lifecycle, stores
from image_assets.catalog import CatalogError, load_catalog
from image_assets.defs import build_defs


def moves(instance, name) -> list[dict]:
    """The channel moves recorded on the asset, oldest first."""
    return [o for o in reversed(observations(instance, name)) if str(o.get("action", "")).startswith("channel ")]


def test_channel_names_are_validated(tmp_path, work_dir):
    def edit(channels_value):
        def _edit(doc):
            doc["images"]["global-linux"]["channels"] = channels_value
        return _edit
    catalog = load_catalog(write_demo_catalog(tmp_path / "a", edit(["stable"])))
    assert catalog.images["global-linux"].channels == ["latest", "stable"]  # latest is always there
    assert catalog.images["python310"].channels == ["latest"]
    with pytest.raises(CatalogError, match=r"images.yaml: image 'global-linux', field 'channels': channel 'Stable'"):
        load_catalog(write_demo_catalog(tmp_path / "b", edit(["Stable"])))
    with pytest.raises(CatalogError, match="name a channel twice"):
        load_catalog(write_demo_catalog(tmp_path / "c", edit(["stable", "stable"])))

    def vendor(doc):
        doc["images"]["al2023"]["channels"] = ["stable"]
    with pytest.raises(CatalogError, match="image 'al2023', field 'channels': a vendor image"):
        load_catalog(write_demo_catalog(tmp_path / "d", vendor))


def test_publish_promote_rollback_and_revoke(tmp_path, work_dir, instance):
    def edit(doc):
        doc["images"]["global-linux"]["channels"] = ["latest", "stable"]
        doc["defaults"]["region"] = "eu-west-1"  # a region of its own: its SSM parameters are this test's
    catalog = load_catalog(write_demo_catalog(tmp_path / "project", edit))
    store = stores.connect("sandbox", "eu-west-1")
    param = stores.channel_parameter("global-linux", "stable")
    assert param == "/image-assets/global-linux/stable"

    # A build that passes its blocking checks is published to latest, in the metadata and as an observation.
    run(catalog, instance, "*global-linux")
    first = latest(instance, "global-linux")
    assert store.channel_get("global-linux", "latest") == first["image_id"]
    assert store.ssm.get_parameter(Name="/image-assets/global-linux/latest")["Parameter"]["Value"] == first["image_id"]
    assert first["channels"] == {"eu-west-1/latest": first["image_id"]}
    published = moves(instance, "global-linux")
    assert [(m["action"], m["channel"], m["to_image_id"], m["from_image_id"]) for m in published] == [
        ("channel published", "latest", first["image_id"], "")]
    assert store.channel_get("global-linux", "stable") is None

    # Unchanged inputs: reused, still on latest, no second history entry.
    run(catalog, instance, "global-linux")
    assert latest(instance, "global-linux")["reused"] and len(store.channel_history("global-linux", "latest")) == 1

    # promote latest -> stable (CLI), then a second build: stable lags latest by one build.
    done = cli_json(catalog, instance, "promote", "global-linux", "--from", "latest", "--to", "stable")
    assert done[0]["to_image_id"] == first["image_id"] and done[0]["by"]
    change_global_content(catalog, "second build")
    run(catalog, instance, "global-linux")
    second = latest(instance, "global-linux")["image_id"]
    assert store.channel_get("global-linux", "latest") == second != first["image_id"]
    rows = {r["channel"]: r for r in cli_json(catalog, instance, "channels", "global-linux")}
    assert rows["latest"] == {"image": "global-linux", "channel": "latest", "region": "eu-west-1",
                              "image_id": second, "current": True, "lags": 0}
    assert rows["stable"]["image_id"] == first["image_id"] and rows["stable"]["current"] is False
    assert rows["stable"]["lags"] == 1
    table = cli(catalog, instance, "channels").stdout
    assert "1 build" in table and "python310" in table  # every built image's channels
    outdated = cli(catalog, instance, "outdated")
    assert outdated.returncode == 0 and "global-linux stable (eu-west-1) lags latest by 1 build" in outdated.stdout

    # The Dagster job promotes too (by: the run's user tag), and the CLI rolls back.
    defs = build_defs(catalog)
    job = defs.resolve_job_def("promote_image")
    result = job.execute_in_process(instance=instance, tags={"dagster/user": "release-manager"}, run_config={
        "ops": {"promote_channel": {"config": {"image": "global-linux", "from_channel": "latest", "to_channel": "stable"}}}})
    assert result.success and store.channel_get("global-linux", "stable") == second
    back = cli_json(catalog, instance, "rollback", "global-linux", "--channel", "stable")
    assert back[0]["from_image_id"] == second and back[0]["to_image_id"] == first["image_id"]
    assert store.channel_get("global-linux", "stable") == first["image_id"]
    recorded = [(m["action"], m["from_image_id"], m["to_image_id"]) for m in moves(instance, "global-linux")
                if m["channel"] == "stable"]
    assert recorded == [("channel promoted", "", first["image_id"]), ("channel promoted", first["image_id"], second),
                        ("channel rolled back", second, first["image_id"])]
    by = {m["action"]: m["by"] for m in moves(instance, "global-linux") if m["channel"] == "stable"}
    assert by["channel promoted"] == "release-manager" and all(m["at"] for m in moves(instance, "global-linux"))
    history = [e.image_id for e in store.channel_history("global-linux", "stable")]
    assert history == [first["image_id"], second, first["image_id"]]  # SSM's own versions

    # Revoking the image stable points at moves stable back to the newest unrevoked one.
    revoked = cli(catalog, instance, "revoke", first["image_id"], "--reason", "CVE in the first build")
    assert revoked.returncode == 0, revoked.stderr
    assert f"channel global-linux stable (eu-west-1): moved off revoked {first['image_id']} -> {second}" in revoked.stdout
    assert store.channel_get("global-linux", "stable") == second
    assert moves(instance, "global-linux")[-1]["action"] == "channel moved off revoked"

    # Revoking that one too: nothing unrevoked is left in either history, so both stay (and say so),
    # and promoting the revoked image is refused.
    job = defs.resolve_job_def("revoke_image")
    assert job.execute_in_process(instance=instance, run_config={"ops": {"revoke_image_and_descendants": {
        "config": {"image_id": second, "reason": "CVE in the second build"}}}}).success
    assert store.channel_get("global-linux", "stable") == store.channel_get("global-linux", "latest") == second
    left = [m for m in moves(instance, "global-linux") if m["action"] == "channel left on revoked"]
    assert {m["channel"] for m in left} == {"latest", "stable"}
    refused = cli(catalog, instance, "promote", "global-linux", "--to", "stable")
    assert refused.returncode == 1 and f"refusing to promote {second}" in refused.stderr and "revoked" in refused.stderr
    unknown = cli(catalog, instance, "promote", "global-linux", "--to", "beta")
    assert unknown.returncode == 1 and "no channel 'beta'" in unknown.stderr
    assert cli(catalog, instance, "rollback", "global-linux", "--channel", "stable").returncode == 1


def test_channels_on_local_are_docker_tags(base_image, tmp_path, work_dir, instance, monkeypatch):
    monkeypatch.delenv("IMAGE_ASSETS_TARGET", raising=False)
    from test_local_target import CONTENT, write_catalog
    name = f"chan-{uuid.uuid4().hex[:8]}"  # docker tags are daemon-wide: a name of this test's own
    images = {"debian11": {"layer": "vendor", "vendor": {"image": dockerd.BASE_IMAGE}},
              name: {"layer": "global", "parent": "debian11", "template": "packer/aws/linux", "content": CONTENT,
                     "variables": {"scripts": ["sshd-banner.sh"]}, "channels": ["latest", "stable"]},
              # a blocking check (its image tests) fails: never published
              f"{name}-bad": {"layer": "global", "parent": "debian11", "template": "packer/aws/linux",
                              "content": CONTENT, "variables": {"scripts": ["sshd-banner.sh"]}, "tests": ["false"]}}
    catalog = load_catalog(write_catalog(tmp_path / "project", images, f"tests-{name}"))
    store = stores.connect("local", catalog.defaults.region)
    built = bad = None
    try:
        assert not materialize(catalog, instance, raise_on_error=False).success
        bad = latest(instance, f"{name}-bad")["image_id"]
        assert store.channel_get(f"{name}-bad", "latest") is None and latest(instance, f"{name}-bad")["channels"] == {}
        built = latest(instance, name)["image_id"]
        tagged = json.loads(dockerd.docker("image", "inspect", f"{name}:latest").stdout)[0]
        assert tagged["Id"] == built and store.channel_get(name, "latest") == built
        assert latest(instance, name)["channels"] == {f"{catalog.defaults.region}/latest": built}
        done = cli_json(catalog, instance, "promote", name, "--to", "stable")
        assert done[0]["to_image_id"] == built
        assert json.loads(dockerd.docker("image", "inspect", f"{name}:stable").stdout)[0]["Id"] == built
        assert [e.image_id for e in store.channel_history(name, "stable")] == [built]  # the JSON record
        rows = {r["channel"]: r for r in cli_json(catalog, instance, "channels", name)}
        assert rows["stable"]["current"] is True and rows["stable"]["lags"] == 0
        assert cli(catalog, instance, "rollback", name, "--channel", "stable").returncode == 1  # no earlier image
    finally:
        for channel in ("latest", "stable"):
            dockerd.docker("rmi", f"{name}:{channel}", check=False)
        for image_id in (built, bad):
            record = store.get(image_id) if image_id else None
            if record:
                store.deregister(record)
