"""Shared fixtures: one real sandbox per test session (started when first needed), demo catalogs in temp
dirs, real instances."""

import copy
import os
import shutil
import socket
from pathlib import Path

import dagster as dg
import pytest
import yaml

from image_assets import dockerd, sandbox
from image_assets.devtools import demo
from image_assets.catalog import load_catalog
from image_assets.orchestration.assets import image_assets
from image_assets.orchestration.resources import resources_for
from image_assets.stores.ec2 import Ec2Store

PROJECT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def unavailable(why: str):
    """A tool this machine lacks: its tests skip here, but in CI (CI=true) the run fails."""
    if in_ci():
        pytest.fail(f"{why} (CI is set: a missing tool fails the run instead of skipping)", pytrace=False)
    pytest.skip(why)


def pytest_collection_modifyitems(config, items):
    """Tiers by folder: tests/unit is the fast tier (marker `unit`); the rest is integration and system."""
    unit_dir = Path(__file__).resolve().parent / "unit"
    for item in items:
        if unit_dir in Path(item.fspath).resolve().parents:
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session", autouse=True)
def session_env(tmp_path_factory):
    """Every test runs with its session's own sandbox port and state dir, never the user's sandbox on 5055
    and never their target. Nothing is started here: the sandbox starts when a test asks for it
    (sandbox_session, cloud) or when a build connects to the store (stores.connect starts it on this port)."""
    state = tmp_path_factory.mktemp("state")
    saved = {k: os.environ.get(k) for k in ("IMAGE_ASSETS_SANDBOX_PORT", "IMAGE_ASSETS_STATE_DIR", "IMAGE_ASSETS_TARGET")}
    os.environ["IMAGE_ASSETS_SANDBOX_PORT"] = str(free_port())
    os.environ["IMAGE_ASSETS_STATE_DIR"] = str(state)
    os.environ.pop("IMAGE_ASSETS_TARGET", None)
    yield
    # Stops the session's sandbox if this process or a child (a CLI, a Dagster step) started one, and
    # forgets the images it kept (state file, committed container images); else a no-op.
    sandbox.stop(forget=True)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def sandbox_session(session_env) -> str:
    """The session's sandbox, started; its endpoint."""
    return sandbox.start()


@pytest.fixture(scope="session")
def docker_daemon(session_env):
    """A docker daemon for the local target (started if none answers; stopped only if started here)."""
    try:
        started = dockerd.start()
    except dockerd.DockerUnavailable as exc:
        unavailable(f"docker cannot run on this machine: {exc}")
    if started and sandbox.is_running() and sandbox.without_debian(sandbox.port()):
        # The session's sandbox started before docker answered, so it serves no Debian AMIs: restart it
        # (it keeps the images it built).
        sandbox.stop()
        sandbox.start()
    yield
    if started:
        # The session's sandbox first, while docker can still remove its containers and images.
        sandbox.stop(forget=True)
        dockerd.stop()


@pytest.fixture(scope="session")
def base_image(docker_daemon):
    """The local target's vendor image (made once: debootstrap bullseye, imported)."""
    ref, seconds = dockerd.base_image()
    print(f"base image {dockerd.BASE_IMAGE} {ref}: " + ("present" if seconds is None else f"made in {seconds:.0f} s"))
    return ref


@pytest.fixture
def cloud(sandbox_session) -> Ec2Store:
    """The session sandbox's EC2 store; tests read the sandbox through its boto3 client `.ec2` too."""
    return Ec2Store("sandbox", "us-east-1")


@pytest.fixture
def work_dir(tmp_path, monkeypatch):
    work = tmp_path / "work"
    monkeypatch.setenv("IMAGE_ASSETS_WORK_DIR", str(work))
    return work


# Moto's Amazon Linux AMI: no machine runs it on the sandbox, so a tree on it builds in seconds
# without running its template (the stand-in build).
AL2023 = {"layer": "vendor", "description": "Amazon Linux 2023, as published by Amazon",
          "vendor": {"owners": ["amazon"], "name": "al2023-ami-2023.*-kernel-6.1-x86_64"}}


def write_demo_catalog(dest: Path, edit=None, machines: bool = False) -> Path:
    """The demo catalog in `dest`, with its templates and repos copied there (each test owns them).
    Its Linux tree is on Debian 11, whose builds run every provisioner in containers, with
    `machines`; otherwise on al2023 (moto's, no machine): the tree's shape for tests of sensors,
    lineage, channels and the CLI, built in seconds."""
    shutil.copytree(PROJECT / "packer", dest / "packer", dirs_exist_ok=True)
    shutil.copytree(PROJECT / "compliance", dest / "compliance", dirs_exist_ok=True)
    demo.create_demo_repos(dest)
    doc = yaml.safe_load((PROJECT / "images.yaml").read_text())
    if not machines:
        doc["images"] = {("al2023" if name == "debian-11" else name): (copy.deepcopy(AL2023) if name == "debian-11" else image)
                         for name, image in doc["images"].items()}
        doc["images"]["global-linux"]["parent"] = "al2023"
    if edit:
        edit(doc)
    path = dest / "images.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture
def demo_catalog(tmp_path, work_dir):
    return load_catalog(write_demo_catalog(tmp_path / "project"))


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as inst:
        yield inst


def materialize(catalog, instance, selection="*", tags=None, raise_on_error=True):
    """Materialize a selection of the catalog's assets in process against a real instance."""
    return dg.materialize(image_assets(catalog), selection=selection, instance=instance, tags=tags,
                          resources=resources_for(catalog), raise_on_error=raise_on_error)


def latest(instance, name) -> dict:
    event = instance.get_latest_materialization_event(dg.AssetKey([name]))
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def sandbox_inventory(cloud) -> dict[str, set]:
    """What a build can leave behind in the sandbox, by id; terminated instances do not count."""
    # Through every page: after 100 reservations the sandbox, like EC2, pages describe_instances.
    instances = {i["InstanceId"] for r in cloud.describe_all("describe_instances", "Reservations") for i in r["Instances"]
                 if i["State"]["Name"] not in ("terminated", "shutting-down")}
    return {
        "instances": instances,
        "images": {i["ImageId"] for i in cloud.describe_all("describe_images", "Images", Owners=["self"])},
        "snapshots": {s["SnapshotId"] for s in cloud.describe_all("describe_snapshots", "Snapshots", OwnerIds=["self"])},
        "volumes": {v["VolumeId"] for v in cloud.describe_all("describe_volumes", "Volumes") if v["State"] != "deleted"},
        "security_groups": {g["GroupId"] for g in cloud.describe_all("describe_security_groups", "SecurityGroups")},
        "key_pairs": {k["KeyName"] for k in cloud.ec2.describe_key_pairs()["KeyPairs"]},
    }
