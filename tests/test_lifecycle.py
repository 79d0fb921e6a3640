"""Lineage, outdated images, revocation and retention: real packer builds in the sandbox, a real
Dagster instance, and the `python -m image_assets` CLI as a subprocess."""

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import botocore.exceptions
import dagster as dg
import pytest

from conftest import PROJECT, latest, write_demo_catalog
from image_assets import lifecycle
from image_assets.orchestration import jobs
from image_assets.orchestration.assets import image_assets
from image_assets.orchestration.resources import resources_for
from image_assets.catalog import load_catalog
from image_assets.stores import ImageRecord, connect

LINUX_CHAIN = ["service-urllib3", "python310", "global-linux", "al2023"]

# Checks of the al2023 tree that no machine can run on the sandbox (WARN "not run", never a pass).
NOT_RUN = ("image_tests", "compliance")


def run(catalog, instance, selection, raise_on_error=True):
    """Materialize with the asset checks, as a run from the UI or a sensor would."""
    return dg.materialize(image_assets(catalog), selection=selection, instance=instance,
                          resources=resources_for(catalog), raise_on_error=raise_on_error)


def run_checks(catalog, instance, *names) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    """Only the checks of these assets (a failed blocking check fails its step: no raise)."""
    result = run(catalog, instance, dg.AssetSelection.checks_for_assets(*names), raise_on_error=False)
    return {(e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()}


def cli(catalog, instance, *args, dagster_home=True):
    env = {**os.environ, "IMAGE_ASSETS_CATALOG": str(catalog.path)}
    env.pop("DAGSTER_HOME", None)
    if dagster_home:
        env["DAGSTER_HOME"] = instance.root_directory
    return subprocess.run([sys.executable, "-m", "image_assets", *args], capture_output=True, text=True,
                          env=env, cwd=PROJECT, timeout=120)


def cli_json(catalog, instance, *args):
    done = cli(catalog, instance, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def outdated_images(catalog, instance) -> list[dict]:
    """`outdated --json` without its release-channel entries: the session sandbox's SSM parameters
    are shared by every test's builds of the same image names (channels: tests/test_channels.py)."""
    return [o for o in cli_json(catalog, instance, "outdated") if o["status"] != "channel behind"]


def change_global_content(catalog, note: str) -> None:
    """A new release of global-linux's playbook: a commit and the next tag on ansible-roles (which
    global-linux reads its content from), as an image repo's CI would push it."""
    import tempfile

    from image_assets.devtools import demo
    url = catalog.repos["ansible-roles"].url
    with tempfile.TemporaryDirectory() as tmp:
        demo.git("clone", "-q", url, tmp)
        with (Path(tmp) / "global.yml").open("a") as handle:
            handle.write(f"# {note}\n")
        count = len(demo.git("tag", "--list", "v*", cwd=Path(tmp)).split())
        demo.git("commit", "-qam", note, cwd=Path(tmp))
        demo.git("tag", "-a", f"v1.{count}.0", "-m", note, cwd=Path(tmp))
        demo.git("push", "-q", "origin", "HEAD:main", f"v1.{count}.0", cwd=Path(tmp))


def ids(instance, names):
    return {n: latest(instance, n)["image_id"] for n in names}


def stale_status(catalog, instance) -> dict[str, str]:
    """Dagster's own staleness, built the way its GraphQL layer builds it for the UI."""
    from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
    from dagster._core.definitions.data_version import CachingStaleStatusResolver

    graph = dg.Definitions(assets=image_assets(catalog), resources=resources_for(catalog)).resolve_asset_graph()
    view = AssetGraphView(temporal_context=TemporalContext(effective_dt=datetime.now(timezone.utc), last_event_id=None),
                          instance=instance, asset_graph=graph)
    resolver = CachingStaleStatusResolver(instance=instance, asset_graph=graph, loading_context=view)
    return {n: resolver.get_status(dg.AssetKey([n])).value for n in catalog.images}


def observations(instance, name) -> list[dict]:
    records = instance.fetch_observations(dg.AssetKey([name]), limit=100).records
    return [{k: v.value for k, v in r.asset_observation.metadata.items()} for r in records]


# --- lineage and outdated -----------------------------------------------------------------------


def test_lineage_and_outdated_images(demo_catalog, instance, cloud):
    run(demo_catalog, instance, "*service-urllib3")
    first = ids(instance, LINUX_CHAIN)
    chain_ids = [first[n] for n in LINUX_CHAIN]

    # Metadata of each built image: its lineage, child first, to the vendor root.
    assert latest(instance, "service-urllib3")["lineage"] == chain_ids
    assert latest(instance, "python310")["lineage"] == chain_ids[1:]

    doc = cli_json(demo_catalog, instance, "lineage", first["service-urllib3"])
    assert [l["image_id"] for l in doc["lineage"]] == chain_ids
    assert [l["name"] for l in doc["lineage"][:3]] == LINUX_CHAIN[:3]
    assert [l["layer"] for l in doc["lineage"]] == ["service", "product", "global", "vendor"]
    assert doc["lineage"][-1]["managed"] is False and doc["lineage"][-1]["name"].startswith("al2023-ami-")
    assert doc["problems"] == []
    for child, parent in zip(chain_ids, chain_ids[1:]):  # the tags, one link at a time
        assert cloud.get(child).tags["ParentImageId"] == parent
    text = cli(demo_catalog, instance, "lineage", first["service-urllib3"])
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()[1:]
    assert [line.split()[2] for line in lines] == chain_ids and "vendor root" in lines[-1]
    assert cli(demo_catalog, instance, "lineage", "ami-0000000000000dead").returncode == 1

    assert outdated_images(demo_catalog, instance) == []
    assert {s for n, s in stale_status(demo_catalog, instance).items() if n in LINUX_CHAIN} == {"FRESH"}

    # global-linux gets a new image: python310 and the service on it are outdated.
    change_global_content(demo_catalog, "hardening v2")
    run(demo_catalog, instance, "global-linux")
    new_global = latest(instance, "global-linux")["image_id"]
    assert new_global != first["global-linux"]

    checked = run_checks(demo_catalog, instance, "python310", "service-urllib3")
    for name in ("python310", "service-urllib3"):
        assert not checked[(name, "up_to_date")].passed
        assert checked[(name, "up_to_date")].severity == dg.AssetCheckSeverity.WARN
        # image_tests and compliance cannot run on al2023 (no machine on the sandbox): WARN, not run.
        assert all(e.passed for (n, c), e in checked.items() if n == name and c not in ("up_to_date", *NOT_RUN)), checked
    assert new_global in checked[("python310", "up_to_date")].description

    outdated = {o["name"]: o for o in outdated_images(demo_catalog, instance)}
    assert set(outdated) == {"python310", "service-urllib3"}
    assert outdated["python310"] | {"cause": ""} == {
        "name": "python310", "image_id": first["python310"], "parent": "global-linux",
        "built_on": first["global-linux"], "expected_parent": new_global, "status": "outdated", "cause": ""}
    assert outdated["service-urllib3"]["built_on"] == outdated["service-urllib3"]["expected_parent"] == first["python310"]
    assert "python310" in outdated["service-urllib3"]["cause"] and new_global in outdated["service-urllib3"]["cause"]
    table = cli(demo_catalog, instance, "outdated")
    assert "python310" in table.stdout and new_global in table.stdout

    # Dagster marks the direct child stale (the UI's "Unsynced"); it compares each asset's recorded
    # input data versions only, so the grandchild turns stale once python310 is rebuilt. The
    # up_to_date check (above) and the CLI report the grandchild now.
    stale = stale_status(demo_catalog, instance)
    assert stale["python310"] == "STALE" and stale["global-linux"] == stale["service-urllib3"] == "FRESH"
    run(demo_catalog, instance, "python310")
    stale = stale_status(demo_catalog, instance)
    assert stale["python310"] == "FRESH" and stale["service-urllib3"] == "STALE"
    assert [o["name"] for o in outdated_images(demo_catalog, instance)] == ["service-urllib3"]

    # Rebuilding the subtree (the command the docs give) leaves nothing outdated.
    result = run(demo_catalog, instance, "global-linux*")
    assert latest(instance, "global-linux")["image_id"] == new_global  # unchanged inputs: reused
    assert latest(instance, "service-urllib3")["lineage"][2] == new_global
    assert all(e.passed for e in result.get_asset_check_evaluations() if e.check_name not in NOT_RUN)
    assert outdated_images(demo_catalog, instance) == []
    assert {s for n, s in stale_status(demo_catalog, instance).items() if n in LINUX_CHAIN} == {"FRESH"}


# --- revocation ---------------------------------------------------------------------------------


def test_revocation(demo_catalog, instance, cloud):
    linux = ["global-linux", "python310", "service-urllib3", "service-sshd-banner"]
    run(demo_catalog, instance, "*")
    old = ids(instance, linux)
    windows = ids(instance, ["global-windows", "service-iis"])
    change_global_content(demo_catalog, "second generation")
    run(demo_catalog, instance, "global-linux*")
    new = ids(instance, linux)
    assert not set(old.values()) & set(new.values())

    assert cli(demo_catalog, instance, "revoke", latest(instance, "al2023")["image_id"], "--reason", "x").returncode == 1

    reason = "CVE-2026-0001 in the CIS role"
    entries = cli_json(demo_catalog, instance, "revoke", old["global-linux"], "--reason", reason)
    assert {e["image_id"] for e in entries} == set(old.values())  # the old tree, and only it
    assert entries[0]["image_id"] == old["global-linux"]
    tags = {img.id: img.tags for img in cloud.managed_images()}
    for image_id in old.values():
        value = tags[image_id]["Revoked"]
        assert reason in value and len(value) <= 256
        assert datetime.strptime(value[:20], "%Y-%m-%dT%H:%M:%SZ")
        if image_id != old["global-linux"]:
            assert f"built on revoked {old['global-linux']}" in value
    for image_id in [*new.values(), *windows.values()]:
        assert "Revoked" not in tags[image_id]
    # The sandbox serves EnableImageDeprecation (moto has none): each image gets its deprecation time.
    for e in entries:
        assert e["deprecation"].startswith("deprecated at "), e
        deprecated = cloud.ec2.describe_images(ImageIds=[e["image_id"]])["Images"][0]["DeprecationTime"]
        assert deprecated == e["deprecation"].removeprefix("deprecated at ").replace("Z", ".000Z")
    for name in linux:  # one observation per revoked image, on its asset
        seen = [o for o in observations(instance, name) if o.get("action") == "revoked"]
        assert [o["image_id"] for o in seen] == [old[name]] and seen[0]["reason"] == reason

    again = cli_json(demo_catalog, instance, "revoke", old["python310"], "--reason", "again")
    assert [e["already"] for e in again] == [True, True]  # first reason kept, nothing re-recorded

    # The Dagster job on the current global image.
    job = dg.Definitions(jobs=jobs.lifecycle_jobs(demo_catalog), resources=resources_for(demo_catalog)).resolve_job_def("revoke_image")
    result = job.execute_in_process(instance=instance, run_config={"ops": {"revoke_image_and_descendants": {
        "config": {"image_id": new["global-linux"], "reason": "bad agent version"}}}})
    assert result.success
    revoked = {e.event_specific_data.asset_observation.metadata["image_id"].value
               for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"
               and e.event_specific_data.asset_observation.metadata["action"].value == "revoked"}  # not channel moves
    assert revoked == set(new.values())
    tags = {img.id: img.tags for img in cloud.managed_images()}
    assert all("Revoked" not in tags[i] for i in windows.values())

    # A child of a revoked parent does not build, and says how to rebuild the parent.
    failed = run(demo_catalog, instance, "python310", raise_on_error=False)
    assert not failed.success
    message = failed.get_step_failure_events()[0].step_failure_data.user_failure_data.description
    assert "revoked" in message and "dagster asset materialize -m definitions --select 'global-linux*'" in message
    checks = run_checks(demo_catalog, instance, "global-linux")
    assert not checks[("global-linux", "not_revoked")].passed

    # That command rebuilds the parent (a revoked image is never reused) and its subtree.
    run(demo_catalog, instance, "global-linux*")
    rebuilt = ids(instance, linux)
    assert not set(rebuilt.values()) & (set(old.values()) | set(new.values()))

    # The table: each revoked image's line says when it is deprecated.
    table = cli(demo_catalog, instance, "revoke", rebuilt["python310"], "--reason", "table").stdout
    assert table.count("; deprecated at ") == 2 and table.count("revoked: ami-") == 2, table
    assert "not set" not in table
    # outdated lists the revoked current images (it said "no outdated images" and nothing more).
    listed = cli(demo_catalog, instance, "outdated").stdout
    assert "2 current image(s) revoked" in listed and rebuilt["python310"] in listed and rebuilt["service-urllib3"] in listed
    revoked_json = {o["name"]: o for o in outdated_images(demo_catalog, instance) if o["status"] == "revoked"}
    assert set(revoked_json) == {"python310", "service-urllib3"} and "table" in revoked_json["python310"]["cause"]
    # A reader that goes away early (`| head`) is no error: the pipe is closed before the command
    # writes (it is still importing), so every write meets a closed pipe; no BrokenPipeError traceback.
    env = {**os.environ, "IMAGE_ASSETS_CATALOG": str(demo_catalog.path), "DAGSTER_HOME": instance.root_directory}
    piped = subprocess.Popen([sys.executable, "-m", "image_assets", "lineage", rebuilt["service-urllib3"], "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=PROJECT)
    piped.stdout.close()
    _, stderr = piped.communicate(timeout=120)
    assert piped.returncode == 0 and b"Traceback" not in stderr and b"BrokenPipe" not in stderr, stderr



# --- retention ----------------------------------------------------------------------------------


def _state(cloud):
    images = {i["ImageId"]: i for i in cloud.ec2.describe_images(Owners=["self"])["Images"]}
    snaps = {s["SnapshotId"] for s in cloud.ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    return images, snaps


def tags_of(resource: dict) -> dict[str, str]:
    """Tags of a boto3 resource, as the test reads the sandbox directly."""
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def _snapshots(image):
    return {m["Ebs"]["SnapshotId"] for m in image["BlockDeviceMappings"] if "Ebs" in m}


def test_retention(tmp_path, work_dir, instance):
    def edit(doc):
        doc["images"]["global-linux"]["retention"] = {"keep": 2, "min_age": "0s"}
        # Retention acts on the whole account region: a region of its own keeps the other tests'
        # images (same session sandbox) out of this one's exact expectations, and out of its reach.
        doc["defaults"]["region"] = "us-west-2"
    catalog = load_catalog(write_demo_catalog(tmp_path / "project", edit))
    cloud = connect("sandbox", "us-west-2")

    run(catalog, instance, "*python310")
    builds = [latest(instance, "global-linux")["image_id"]]
    child = latest(instance, "python310")["image_id"]  # built on the first (oldest) global image
    for n in range(4):
        started = time.monotonic()
        change_global_content(catalog, f"build {n + 2}")
        run(catalog, instance, "global-linux")
        builds.append(latest(instance, "global-linux")["image_id"])
        time.sleep(max(0.0, 1.05 - (time.monotonic() - started)))  # distinct CreationDate seconds
    assert len(set(builds)) == 5

    # An image someone made by hand in the same account, even named like ours: never touched.
    vendor = latest(instance, "al2023")["image_id"]
    instance_id = cloud.ec2.run_instances(ImageId=vendor, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    manual = cloud.ec2.create_image(InstanceId=instance_id, Name="hand-made")["ImageId"]
    cloud.tag(manual, {"ImageName": "global-linux"})

    before = _state(cloud)
    refused = cli(catalog, instance, "retention", dagster_home=False)
    assert refused.returncode == 2 and "DAGSTER_HOME is not set" in refused.stderr
    plan = cli_json(catalog, instance, "retention", "--dry-run")
    assert plan["dry_run"] is True
    doomed = {d["image_id"] for d in plan["decisions"] if d["delete"]}
    assert doomed == set(builds[1:3])
    reasons = {d["image_id"]: d["reason"] for d in plan["decisions"]}
    assert reasons[builds[0]] == f"parent of kept image {child}"
    assert reasons[builds[4]] == "current materialization"
    assert manual not in reasons
    assert _state(cloud) == before  # the dry run changed nothing

    job = dg.Definitions(jobs=jobs.lifecycle_jobs(catalog), resources=resources_for(catalog)).resolve_job_def("image_retention")
    assert job.execute_in_process(instance=instance).success  # dry_run defaults to false

    images, snaps = _state(cloud)
    remaining = {i for i, img in images.items() if tags_of(img).get("ImageName") == "global-linux"
                 and tags_of(img).get("ManagedBy")}
    assert remaining == {builds[0], builds[3], builds[4]}
    assert child in images and manual in images and _snapshots(images[manual]) <= snaps
    for gone in builds[1:3]:
        assert gone not in images
        assert not _snapshots(before[0][gone]) & snaps  # its snapshots are deleted too
        with pytest.raises(botocore.exceptions.ClientError):
            cloud.ec2.describe_snapshots(SnapshotIds=sorted(_snapshots(before[0][gone])))
    deleted = [o for o in observations(instance, "global-linux") if o.get("action") == "deleted"]
    assert {o["image_id"] for o in deleted} == set(builds[1:3])
    assert all(o["snapshots"] for o in deleted)

    # Nothing more to do on a second run; the schedule ships stopped.
    assert not [d for d in cli_json(catalog, instance, "retention")["decisions"] if d["delete"]]
    schedule = jobs.retention_schedule(job)
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED


def _image(image_id, name, created, parent="", managed=True, state="available", tags=None):
    if tags is None:
        tags = {"ImageName": name, "ParentImageId": parent, "ImageVersion": created}
        if managed:
            tags.update(ManagedBy="image-assets", Deployment="default")
    return ImageRecord(image_id, "", state, created, tags, ("snap-" + image_id,))


def test_retention_plan_rules(demo_catalog):
    """The keep rules, on made-up images: no cloud needed."""
    now = datetime(2026, 1, 10, tzinfo=timezone.utc)
    day = lambda n: (now - timedelta(days=n)).strftime("%Y-%m-%dT%H:%M:%S.000Z")  # noqa: E731
    images = [  # global-linux: keep 3, min_age 1d (demo catalog)
        *[_image(f"g{n}", "global-linux", day(n)) for n in range(1, 8)],
        _image("p1", "python310", day(8), parent="g7"),  # python310 (keep 3) -> its parent g7 stays
        _image("s1", "service-urllib3", day(9), parent="p1"),
        _image("x1", "global-linux", day(30), managed=False),  # unmanaged: not even in the plan
        _image("d1", "global-linux", day(30), tags={  # another deployment's image: not even in the plan
            "ManagedBy": "image-assets", "Deployment": "team-b", "ImageName": "global-linux"}),
        _image("o1", "retired-image", day(30)),  # not in the catalog: left alone
        _image("b1", "service-sshd-banner", day(30)),  # asset never materialized here: left alone
        _image("w1", "global-windows", day(30)), _image("w2", "global-windows", day(31)),
        _image("w3", "global-windows", day(32)), _image("w4", "global-windows", day(33), state="pending"),
        _image("w5", "global-windows", day(34)),
    ]
    current = {"global-linux": "g6", "python310": "p1", "service-urllib3": "s1", "global-windows": "w5"}
    plan = {d.image_id: d for d in lifecycle.plan_retention(demo_catalog, images, current, now)}
    assert "x1" not in plan and "d1" not in plan
    assert {i for i, d in plan.items() if d.delete} == {"g4", "g5"}
    assert plan["g6"].reason == "current materialization"  # older than the newest 3, still kept
    assert plan["g7"].reason == "parent of kept image p1"
    assert "not in the catalog" in plan["o1"].reason and "no materialization" in plan["b1"].reason
    assert plan["w4"].reason.startswith("pending") and plan["w5"].reason == "current materialization"
    assert plan["g4"].snapshots == ["snap-g4"]

    # min_age 1d: five builds within the last day all stay, whatever `keep` says.
    hour = lambda n: (now - timedelta(hours=n)).strftime("%Y-%m-%dT%H:%M:%S.000Z")  # noqa: E731
    recent = [_image(f"h{n}", "global-linux", hour(n)) for n in range(1, 6)]
    plan = lifecycle.plan_retention(demo_catalog, recent, {"global-linux": "h1"}, now)
    assert not any(d.delete for d in plan)
    assert [d.reason for d in plan if d.image_id in ("h4", "h5")] == ["younger than min_age 1d"] * 2
