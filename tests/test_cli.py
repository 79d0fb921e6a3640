"""`python -m image_assets` as the README and docs/ write it, run as a subprocess: the table forms, bad
arguments, and the sandbox's answers (a real Dagster instance, real packer builds in the sandbox)."""

import os
import subprocess
import sys
from pathlib import Path

from conftest import PROJECT, latest, write_demo_catalog
from test_lifecycle import run
from image_assets.catalog import load_catalog
from image_assets.stores import connect

LINUX_TREE = ["global-linux", "python310", "service-urllib3", "service-sshd-banner"]


def env_for(catalog_path, instance) -> dict:
    return {**os.environ, "IMAGE_ASSETS_CATALOG": str(catalog_path), "DAGSTER_HOME": instance.root_directory}


def shell(command: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *command], capture_output=True, text=True, env=env, cwd=PROJECT,
                          timeout=300)


def test_lineage_of_an_empty_image_id_is_a_usage_error(demo_catalog, instance):
    done = shell(["-m", "image_assets", "lineage", ""], env_for(demo_catalog.path, instance))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error: lineage: IMAGE_ID is empty"), done.stderr


def test_outdated_table_after_a_vendor_release(tmp_path, work_dir, instance):
    """docs/targets.md's vendor release, then `python -m image_assets outdated`: the Linux tree is on the
    old vendor image, and the table lists every image of it."""
    def own_region(doc):
        # A vendor release in a region of its own: other tests of the session find the same al2023.
        doc["defaults"]["region"] = "ap-southeast-2"
    catalog = load_catalog(write_demo_catalog(tmp_path / "project", own_region))
    env = env_for(catalog.path, instance)
    run(catalog, instance, "al2023*")
    old_root = latest(instance, "al2023")["image_id"]

    published = shell(["-m", "image_assets.sandbox", "publish-vendor", "al2023"], env)
    assert published.returncode == 0, published.stderr
    run(catalog, instance, "al2023")
    new_root = latest(instance, "al2023")["image_id"]
    assert new_root != old_root and new_root in published.stdout

    done = shell(["-m", "image_assets", "outdated"], env)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[1:] if line.strip()}
    assert done.stdout.splitlines()[0].split()[:2] == ["IMAGE", "IMAGE"]
    for name in LINUX_TREE:
        assert name in rows and latest(instance, name)["image_id"] in rows[name], done.stdout
    assert new_root in rows["global-linux"] and old_root in rows["global-linux"]
    assert "global-windows" not in rows and "service-iis" not in rows


def test_docs_debian_vendor_release_as_written(tmp_path, work_dir, instance, docker_daemon, sandbox_session):
    """docs/targets.md's vendor release on the demo catalog as shipped (Debian 11): publish-vendor, then
    the sensor preview with the old id as cursor names the Linux tree; the release runs as the image it
    replaces (the same container image behind it)."""
    import json
    from image_assets import sandbox
    from image_assets.sandbox import instances as sandbox_instances

    def own_region(doc):
        doc["defaults"]["region"] = "sa-east-1"  # a release of its own: the session's Debian stays
    catalog = load_catalog(write_demo_catalog(tmp_path / "project", own_region, machines=True))
    env = env_for(catalog.path, instance)
    old = connect("sandbox", "sa-east-1").newest_vendor_image(catalog.images["debian-11"].vendor).id

    published = shell(["-m", "image_assets.sandbox", "publish-vendor", "debian-11"], env)
    assert published.returncode == 0, published.stderr
    new = published.stdout.split("published ", 1)[1].split()[0]
    assert "debian-11-amd64-" in published.stdout and "(owner 136693071363" in published.stdout, published.stdout
    assert f"it was {old}" in published.stdout, published.stdout
    backing = sandbox_instances.read_backing(sandbox.port())
    assert backing[new] == backing[old]

    preview = subprocess.run([str(Path(sys.executable).parent / "dagster"), "sensor", "preview", "-m", "definitions", "vendor_image_sensor",
                              "--cursor", json.dumps({"debian-11": old})],
                             capture_output=True, text=True, env=env, cwd=PROJECT, timeout=300)
    assert preview.returncode == 0, preview.stderr
    assert f"debian-11={new} -> rebuild debian-11, global-linux, python310, service-sshd-banner, service-urllib3" \
        in preview.stdout + preview.stderr, preview.stdout + preview.stderr


def test_revoke_sets_the_deprecation_time_on_the_sandbox(tmp_path, work_dir, instance, sandbox_session):
    def own_region(doc):
        doc["defaults"]["region"] = "ap-northeast-1"  # revocation moves channels: this test's alone
    catalog = load_catalog(write_demo_catalog(tmp_path / "project", own_region))
    run(catalog, instance, "*global-linux")
    image_id = latest(instance, "global-linux")["image_id"]

    done = shell(["-m", "image_assets", "revoke", image_id, "--reason", "CVE-2026-0002"], env_for(catalog.path, instance))
    assert done.returncode == 0, done.stderr
    assert "not set" not in done.stdout and "Error" not in done.stdout, done.stdout
    line = next(line for line in done.stdout.splitlines() if line.startswith(f"revoked: {image_id}"))
    when = line.rsplit("; deprecated at ", 1)[1]
    described = connect("sandbox", "ap-northeast-1").ec2.describe_images(ImageIds=[image_id])["Images"][0]
    assert described["DeprecationTime"] == when.replace("Z", ".000Z")
