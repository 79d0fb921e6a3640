"""A git_tag_sensor run request executed for real: the subtree is rebuilt from the new tag, nothing else."""

import subprocess

import dagster as dg
from conftest import latest, materialize

from image_assets import cloud as cloudmod
from image_assets.assets import GIT_REFS_TAG
from image_assets.defs import build_defs

GIT_ID = ["-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"]


def git(*args, cwd=None) -> str:
    return subprocess.run(["git", *GIT_ID, *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def evaluate(defs, instance, cursor):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    result = defs.resolve_sensor_def("git_tag_sensor").evaluate_tick(context)
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
            tags = cloudmod.tags_of(cloud.get_image(after[name]))
            if "ansible-roles" in demo_catalog.input_repos(name):
                assert f"ansible-roles=v1.1.0@{commit}" in tags["GitRefs"]
            parent = demo_catalog.images[name].parent
            assert tags["ParentImageId"] == after[parent]
        else:
            assert after[name] == before[name], f"{name} is outside the subtree but changed"

    # The same tick evaluated again starts nothing new.
    again, _ = evaluate(defs, instance, cursor)
    assert again == []
