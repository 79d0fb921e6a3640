"""Release channels: publish to latest, promote, roll back, revoke; on the session sandbox (SSM
parameters served by the same moto server), real packer builds, a real Dagster instance, and the
`python -m image_assets` CLI as a subprocess; on local, docker tags."""

import json
import uuid

import dagster as dg
import pytest

from conftest import latest, materialize, write_demo_catalog
from test_lifecycle import change_global_content, cli, cli_json, observations, run
from image_assets import distribution, dockerd, stores
from image_assets.catalog import CatalogError, load_catalog
from image_assets.orchestration.defs import build_defs


def check_result(instance, name, check):
    key = dg.AssetCheckKey(dg.AssetKey([name]), check)
    return instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key].evaluation


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
    assert check_result(instance, "global-linux", "up_to_date").metadata["channels_behind"].value == [
        "stable (eu-west-1) is not set"]

    # Unchanged inputs: reused, still on latest, no second history entry.
    run(catalog, instance, "global-linux")
    assert latest(instance, "global-linux")["reused"] and len(store.channel_history("global-linux", "latest")) == 1

    # promote latest -> stable (CLI), then a second build: stable lags latest by one build.
    done = cli_json(catalog, instance, "promote", "global-linux", "--from", "latest", "--to", "stable")
    assert done[0]["to_image_id"] == first["image_id"] and done[0]["by"]
    again = cli(catalog, instance, "promote", "global-linux", "--to", "stable", "--json")
    assert again.returncode == 0 and json.loads(again.stdout) == [] and "nothing to do" in again.stderr
    change_global_content(catalog, "second build")
    run(catalog, instance, "global-linux")
    second = latest(instance, "global-linux")["image_id"]
    assert store.channel_get("global-linux", "latest") == second != first["image_id"]
    fresh = check_result(instance, "global-linux", "up_to_date")  # shown there too, not failed on
    assert fresh.passed and f"stable (eu-west-1) is on {first['image_id']}, not on this image" in fresh.description
    assert fresh.metadata["channels_behind"].value == [f"stable (eu-west-1) is on {first['image_id']}, not on this image"]
    rows = {r["channel"]: r for r in cli_json(catalog, instance, "channels", "global-linux")}
    assert rows["latest"] == {"image": "global-linux", "channel": "latest", "region": "eu-west-1",
                              "image_id": second, "current": True, "lags": 0}
    assert rows["stable"]["image_id"] == first["image_id"] and rows["stable"]["current"] is False
    assert rows["stable"]["lags"] == 1
    table = cli(catalog, instance, "channels").stdout
    assert "1 build" in table and "python310" in table  # every built image's channels
    outdated = cli(catalog, instance, "outdated")
    assert outdated.returncode == 0 and "global-linux stable (eu-west-1) lags latest by 1 build" in outdated.stdout
    behind = [e for e in cli_json(catalog, instance, "outdated") if e["status"] == "channel behind"]
    assert behind == [{"name": "global-linux", "image_id": first["image_id"], "status": "channel behind",
                       "channel": "stable", "region": "eu-west-1", "lags": 1,
                       "cause": f"global-linux stable (eu-west-1) lags latest by 1 build: {first['image_id']} is not the current image"}]

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
    from unit.test_local_target import CONTENT, write_catalog
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


def test_distribution_copies_channels_retention_and_revoke(tmp_path, work_dir, instance):
    home, regions, account = "ap-south-1", ["eu-central-1", "ap-northeast-1"], "111122223333"

    def edit(doc):
        doc["defaults"]["region"] = home  # regions of this test's own: retention acts on whole regions
        doc["images"]["global-linux"].update(channels=["latest", "stable"], retention={"keep": 1, "min_age": "0s"},
                                             distribute={"regions": regions, "accounts": [account]})
    catalog = load_catalog(write_demo_catalog(tmp_path / "project", edit))
    source = stores.connect("sandbox", home)
    there = {r: stores.connect("sandbox", r) for r in regions}

    def build(note=None):
        if note:
            change_global_content(catalog, note)
        run(catalog, instance, "*global-linux")
        return latest(instance, "global-linux")

    first = build()
    a = first["image_id"]
    assert set(first["copies"]) == set(regions)
    assert first["channels"] == {f"{home}/latest": a, **{f"{r}/latest": first["copies"][r] for r in regions}}
    tags = source.get(a).tags
    for region, store in there.items():
        copy = store.get(first["copies"][region])
        assert copy.available and copy.id != a
        assert copy.tags == {**tags, "SourceImageId": a, "SourceRegion": home}  # lineage tags included
        assert copy.tags["ParentImageId"] == first["parent_image_id"] and copy.tags["RootImageId"] == first["root_image_id"]
        assert store.channel_get("global-linux", "latest") == copy.id
        shared = store.ec2.describe_image_attribute(ImageId=copy.id, Attribute="launchPermission")
        assert shared["LaunchPermissions"] == [{"UserId": account}]
    assert source.ec2.describe_image_attribute(ImageId=a, Attribute="launchPermission")["LaunchPermissions"] == [
        {"UserId": account}]

    # A rerun (reused image) reuses the copies: still one per region.
    assert build()["copies"] == first["copies"]
    assert all(len(distribution.copies_of(store, a)) == 1 for store in there.values())

    # stable = the first build in every region; two more builds; stable lags by 2 in each region.
    done = cli_json(catalog, instance, "promote", "global-linux", "--to", "stable")
    assert {m["region"]: m["to_image_id"] for m in done} == {home: a, **first["copies"]}
    second, third = build("second build"), build("third build")
    b, c = second["image_id"], third["image_id"]
    rows = [r for r in cli_json(catalog, instance, "channels", "global-linux") if r["channel"] == "stable"]
    assert {r["region"] for r in rows} == {home, *regions} and all(r["lags"] == 2 and not r["current"] for r in rows)
    latest_rows = [r for r in cli_json(catalog, instance, "channels", "global-linux") if r["channel"] == "latest"]
    assert all(r["current"] for r in latest_rows)  # in a copy region: the copy of the current image

    # Retention (keep 1): the stable image and its copies stay (held), the second build and its
    # copies go in every region, the current one stays.
    plan = {d["image_id"]: d for d in cli_json(catalog, instance, "retention", "--dry-run")["decisions"]}
    assert plan[a]["reason"].startswith("held: channel") and not plan[a]["delete"]
    assert {i for i, d in plan.items() if d["delete"]} == {b, *second["copies"].values()}
    assert all(plan[i]["reason"] == f"copy of kept {a}" for i in first["copies"].values())
    job = build_defs(catalog).resolve_job_def("image_retention")
    assert job.execute_in_process(instance=instance).success
    assert source.get(b) is None and source.get(a) and source.get(c)
    for region, store in there.items():
        assert store.get(second["copies"][region]) is None
        assert store.get(first["copies"][region]) and store.get(third["copies"][region])
    deleted = [o for o in observations(instance, "global-linux") if o.get("action") == "deleted"]
    assert {o.get("region", home) for o in deleted} == {home, *regions}

    # Revoking the current image revokes its copies, and latest moves back in every region to the
    # newest unrevoked image still there (the first build: the second is deleted).
    out = cli(catalog, instance, "revoke", c, "--reason", "bad build")
    assert out.returncode == 0, out.stderr
    for region, store in there.items():
        assert store.get(third["copies"][region]).revoked
        assert store.channel_get("global-linux", "latest") == first["copies"][region]
        assert f"copy in {region}" in out.stdout
    assert source.channel_get("global-linux", "latest") == a
    revoked = [o for o in observations(instance, "global-linux") if o.get("action") == "revoked"]
    assert {o["image_id"] for o in revoked} == {c, *third["copies"].values()}


def test_distribution_is_refused_on_local_and_checked(tmp_path, work_dir, monkeypatch):
    def edit(distribute):
        def _edit(doc):
            doc["images"]["global-linux"]["distribute"] = distribute
        return _edit
    with pytest.raises(CatalogError, match="'distribute.regions': 'us-east-1' is where the image is built"):
        load_catalog(write_demo_catalog(tmp_path / "a", edit({"regions": ["us-east-1"]})))
    with pytest.raises(CatalogError, match="'distribute.accounts': 111122223333 is not an AWS account id.*quoted"):
        load_catalog(write_demo_catalog(tmp_path / "b", edit({"regions": ["eu-west-1"], "accounts": [111122223333]})))
    with pytest.raises(CatalogError, match="'distribute.regions': 'Europe' is not an AWS region"):
        load_catalog(write_demo_catalog(tmp_path / "c", edit({"regions": ["Europe"]})))
    from unit.test_local_target import CONTENT, write_catalog
    images = {"debian11": {"layer": "vendor", "vendor": {"image": dockerd.BASE_IMAGE}},
              "g": {"layer": "global", "parent": "debian11", "template": "packer/aws/linux", "content": CONTENT,
                    "variables": {"scripts": ["sshd-banner.sh"]}, "distribute": {"regions": ["eu-west-1"]}}}
    monkeypatch.delenv("IMAGE_ASSETS_TARGET", raising=False)
    with pytest.raises(CatalogError, match="image 'g', field 'distribute': target 'local'.*no regions"):
        load_catalog(write_catalog(tmp_path / "d", images, "t"))


def test_a_failed_copy_is_deregistered_and_transient(sandbox_session):
    """EC2 refuses a 51st tag (as AWS does): the copy is made, then its tagging fails; it must not stay."""
    home, dest = stores.connect("sandbox", "ca-central-1"), stores.connect("sandbox", "sa-east-1")
    vendor = home.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance_id = home.ec2.run_instances(ImageId=vendor, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    source = home.get(home.ec2.create_image(InstanceId=instance_id, Name="copy-fails")["ImageId"])
    before = {i["ImageId"] for i in dest.ec2.describe_images(Owners=["self"])["Images"]}
    with pytest.raises(stores.StoreError, match="failed and was deregistered") as failed:
        dest.copy_image(source, home.region, {f"Tag{n}": "x" for n in range(51)})
    assert failed.value.transient
    assert {i["ImageId"] for i in dest.ec2.describe_images(Owners=["self"])["Images"]} == before

    # A copy left untagged by a step that died (AMI names are unique per region): removed, then copied again.
    dead = dest.ec2.copy_image(SourceImageId=source.id, SourceRegion=home.region, Name=source.name)["ImageId"]
    copy = dest.copy_image(source, home.region, {"ManagedBy": "image-assets", "SourceImageId": source.id})
    assert copy.id != dead and dest.get(dead) is None and copy.tags["SourceImageId"] == source.id
