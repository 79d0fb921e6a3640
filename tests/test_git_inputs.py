"""Git inputs of a build: a new tag on the same commit reuses the image, a new commit rebuilds it (version
order, checkout at the tag and credentials in errors: tests/unit/test_git_inputs.py)."""

from conftest import latest, materialize

from unit.test_git_inputs import git


def test_new_tag_on_the_same_commit_reuses_the_image_and_a_new_commit_rebuilds(demo_catalog, instance, tmp_path):
    materialize(demo_catalog, instance, selection="*service-urllib3")
    first = latest(instance, "service-urllib3")
    assert first["git_refs"]["service-urllib3"].startswith("v1.0.0@")

    clone = tmp_path / "svc"
    git("clone", "-q", demo_catalog.repos["service-urllib3"].url, str(clone))
    git("tag", "-a", "v1.0.1", "-m", "same code, new tag", cwd=clone)
    git("push", "-q", "origin", "v1.0.1", cwd=clone)
    materialize(demo_catalog, instance, selection="service-urllib3")
    same = latest(instance, "service-urllib3")
    assert same["reused"] is True and same["image_id"] == first["image_id"]
    # A reused image reports its own history: the refs it was built from, read from its tags.
    assert same["git_refs"] == first["git_refs"] and same["fingerprint"] == first["fingerprint"]

    (clone / "service.py").write_text((clone / "service.py").read_text() + "\n# retry on 503\n")
    git("commit", "-qam", "Retry on 503", cwd=clone)
    git("tag", "-a", "v1.1.0", "-m", "v1.1.0", cwd=clone)
    git("push", "-q", "origin", "HEAD:main", "v1.1.0", cwd=clone)
    materialize(demo_catalog, instance, selection="service-urllib3")
    rebuilt = latest(instance, "service-urllib3")
    assert rebuilt["reused"] is False and rebuilt["image_id"] != first["image_id"]
    assert rebuilt["git_refs"]["service-urllib3"] == f"v1.1.0@{git('rev-parse', 'HEAD', cwd=clone)}"
