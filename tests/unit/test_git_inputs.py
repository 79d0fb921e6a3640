"""Git inputs of a build: version order, checkout at the tag (never a branch head), no credentials in errors."""

import subprocess

import pytest

from image_assets import gitrepos

GIT_ID = ["-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"]


def git(*args, cwd=None) -> str:
    return subprocess.run(["git", *GIT_ID, *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def remote(tmp_path):
    """A bare remote and a work clone; returns (url, clone)."""
    url = tmp_path / "remote.git"
    git("init", "-q", "--bare", str(url))
    clone = tmp_path / "clone"
    git("clone", "-q", str(url), str(clone))
    return str(url), clone


def commit(clone, text: str) -> str:
    (clone / "file.txt").write_text(text)
    git("add", "file.txt", cwd=clone)
    git("commit", "-qm", text, cwd=clone)
    return git("rev-parse", "HEAD", cwd=clone)


def test_newest_tag_is_by_version_order_and_non_versions_sort_below():
    tags = {"v1.9.0": "a" * 40, "v1.10.0": "b" * 40, "v1.10.0-rc1": "c" * 40, "latest": "d" * 40, "v2": "e" * 40}
    assert sorted(tags, key=gitrepos.version_key) == ["latest", "v1.9.0", "v1.10.0-rc1", "v1.10.0", "v2"]
    assert gitrepos.newest(tags) == gitrepos.Ref("v2", "e" * 40)


def test_checkout_is_the_tagged_commit_not_the_branch_head(remote, tmp_path):
    url, clone = remote
    tagged = commit(clone, "released")
    git("tag", "-a", "v1.0.0", "-m", "v1.0.0", cwd=clone)
    commit(clone, "unreleased work on main")
    git("push", "-q", "origin", "HEAD:main", "v1.0.0", cwd=clone)

    tags = gitrepos.remote_tags(url, "v*")
    assert tags == {"v1.0.0": tagged}  # annotated tag peeled to its commit
    dest = gitrepos.checkout(url, gitrepos.newest(tags), tmp_path / "checkout")
    assert (dest / "file.txt").read_text() == "released"


def test_checkout_refuses_a_tag_that_moved_since_it_was_resolved(remote, tmp_path):
    url, clone = remote
    first = commit(clone, "one")
    git("tag", "v1.0.0", cwd=clone)
    git("push", "-q", "origin", "HEAD:main", "v1.0.0", cwd=clone)
    commit(clone, "two")
    git("tag", "-f", "v1.0.0", cwd=clone)
    git("push", "-q", "-f", "origin", "HEAD:main", "v1.0.0", cwd=clone)
    with pytest.raises(gitrepos.GitError, match="moved"):
        gitrepos.checkout(url, gitrepos.Ref("v1.0.0", first), tmp_path / "checkout")


def test_credentials_in_a_repo_url_never_reach_an_error(demo_catalog, instance, tmp_path):
    url = "http://builder:s3cr3t-token@127.0.0.1:9/roles.git"  # port 9: nothing listens
    with pytest.raises(gitrepos.GitError) as info:
        gitrepos.remote_tags(url, "v*", timeout=20)
    assert "s3cr3t-token" not in str(info.value)

    from image_assets.build import BuildError, resolve_refs
    from image_assets.catalog import load_catalog
    text = demo_catalog.path.read_text().replace(demo_catalog.repos["service-urllib3"].url, url)
    text = text.replace(".demo/git/service-urllib3.git", url)
    path = demo_catalog.path.parent / "creds.yaml"
    path.write_text(text)
    catalog = load_catalog(path)
    with pytest.raises(BuildError) as info:
        resolve_refs(catalog, "service-urllib3")
    assert "s3cr3t-token" not in str(info.value) and "***@127.0.0.1" in str(info.value)
