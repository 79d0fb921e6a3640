"""Provenance under stress: GitRefs within EC2's tag limit for many long refs, a reused image
reporting its own history, and a build whose image fails verification leaving nothing behind."""

import dagster as dg
import yaml
from conftest import latest, materialize, sandbox_inventory
from faultkit import IMAGE, write_fault_catalog

from image_assets import build as buildmod
from image_assets.devtools import demo
from image_assets.catalog import load_catalog
from image_assets.orchestration import records


def test_git_refs_tag_fits_the_limit_and_a_reused_image_reports_its_own_refs(docker_daemon, tmp_path, work_dir, instance, cloud):
    """Six input repos with long tag names: the GitRefs tag is a digest within 256 characters, the
    metadata has the full refs, and a reuse after new same-commit tags reports the image's own."""
    path = write_fault_catalog(tmp_path / "p")
    doc = yaml.safe_load(path.read_text())
    repos = {}
    for n in range(6):
        name = f"input-repository-number-{n}"
        bare = tmp_path / "git" / f"{name}.git"
        demo.make_repo(bare, {"README": f"repo {n}\n"}, tag=f"v1.0.0-release-candidate-with-a-long-name-{n}")
        repos[name] = {"url": str(bare), "tags": "v*"}
    doc["repos"] = repos
    doc["images"][IMAGE]["repos"] = sorted(repos)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    catalog = load_catalog(path)

    result = materialize(catalog, instance, selection=f"*{IMAGE}")
    meta = latest(instance, IMAGE)
    full = " ".join(f"{r}={ref}" for r, ref in sorted(meta["git_refs"].items()))
    assert len(full) > 256 and len(meta["git_refs"]) == 6
    image = cloud.get(meta["image_id"])
    tag = image.tags["GitRefs"]
    assert len(tag) <= 256 and tag.startswith("sha256:") and tag == buildmod.git_refs_tag(meta["git_refs"])
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["tags_complete"], checks

    # New tags on the same commits: reused, and the refs reported are the image's own.
    for name in repos:
        demo.git("tag", f"v1.0.1-same-commit-new-tag-{name}", "main", cwd=tmp_path / "git" / f"{name}.git")
    materialize(catalog, instance, selection=IMAGE)
    again = latest(instance, IMAGE)
    assert again["reused"] is True and again["image_id"] == meta["image_id"]
    assert again["git_refs"] == meta["git_refs"] and again["fingerprint"] == meta["fingerprint"]


def test_a_build_whose_image_fails_verification_leaves_no_image(docker_daemon, tmp_path, work_dir, instance, cloud):
    """A template that does not put var.tags on the AMI: the build fails naming the missing tags,
    and the untagged image (invisible to retention) is deregistered with its snapshots."""
    catalog = load_catalog(write_fault_catalog(tmp_path / "p", {"tag_image": False}))
    materialize(catalog, instance, selection="debian-11")
    before = sandbox_inventory(cloud)
    result = materialize(catalog, instance, selection=IMAGE, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    message = str(failure.step_failure_data.user_failure_data.description)
    assert "tags" in message and "missing or wrong" in message and "deregistered" in message
    after = sandbox_inventory(cloud)
    assert after["images"] == before["images"] and after["snapshots"] == before["snapshots"]
    assert after["instances"] == before["instances"]


def test_retention_and_reuse_never_cross_deployments(docker_daemon, tmp_path, work_dir, cloud):
    """Two Dagster instances share one account: team-b never adopts team-a's image, and team-a's
    retention deletes its own old image but never team-b's current one."""
    from image_assets import lifecycle

    def catalog_for(team: str, payload: str):
        path = write_fault_catalog(tmp_path / f"{team}-{payload}", {"payload": payload})
        doc = yaml.safe_load(path.read_text())
        doc["defaults"]["deployment"] = team
        doc["images"][IMAGE]["retention"] = {"keep": 1, "min_age": "0s"}
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return load_catalog(path)

    with dg.instance_for_test() as team_a, dg.instance_for_test() as team_b:
        materialize(catalog_for("team-a", "one"), team_a, selection=f"*{IMAGE}")
        a_old = latest(team_a, IMAGE)["image_id"]
        materialize(catalog_for("team-b", "one"), team_b, selection=f"*{IMAGE}")
        b_current = latest(team_b, IMAGE)
        assert b_current["image_id"] != a_old and b_current["reused"] is False  # same inputs, other deployment
        assert cloud.get(a_old).tags["Deployment"] == "team-a"
        catalog_a = catalog_for("team-a", "two")
        materialize(catalog_a, team_a, selection=IMAGE)
        a_current = latest(team_a, IMAGE)["image_id"]

        decisions = lifecycle.retention(catalog_a, cloud, records.current_images(catalog_a, team_a), dry_run=False)
        assert {d.image_id for d in decisions if d.delete} == {a_old}
        assert b_current["image_id"] not in {d.image_id for d in decisions}
        assert cloud.get(a_old) is None
        assert cloud.get(a_current) and cloud.get(b_current["image_id"])
