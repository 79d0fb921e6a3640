"""git_tag_sensor against real git repositories (bare remotes in tmp_path) and a real Dagster instance."""

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import dagster as dg
import pytest
import yaml

from image_assets import gitrepos
from image_assets.orchestration.assets import GIT_REFS_TAG
from image_assets.catalog import CatalogError, load_catalog
from image_assets.orchestration.defs import build_defs
from image_assets.orchestration.sensors import TAG_VALUE_MAX, TRIGGER_TAG

VARIABLES = """
variable "image_name" { type = string }
variable "image_version" { type = string }
variable "source_image_id" { type = string }
variable "region" { type = string }
variable "tags" { type = map(string) }
variable "sandbox_endpoint" {
  type    = string
  default = ""
}
"""
GIT_ID = ["-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "init.defaultBranch=main",
          "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"]
REPOS = ["roles", "tpl", "app", "svc-a", "svc-b", "tools"]
# Everything below `base` except the tools branch uses roles; see the expected selections below.
IMAGES = {
    "base": {"layer": "vendor", "vendor": {"owners": ["amazon"], "name": "al2023-*"}},
    "global-linux": {"layer": "global", "parent": "base", "template": "templates/linux", "repos": ["roles"]},
    "global-hardened": {"layer": "global", "parent": "base", "template": "tpl:packer/linux", "repos": ["roles"]},
    "product-py": {"layer": "product", "parent": "global-linux", "template": "templates/linux", "repos": ["app"]},
    "svc-a": {"layer": "service", "parent": "product-py", "template": "templates/linux", "repos": ["svc-a"]},
    "svc-b": {"layer": "service", "parent": "global-hardened", "template": "templates/linux", "repos": ["svc-b"]},
    "svc-plain": {"layer": "service", "parent": "global-linux", "template": "templates/linux"},
    "global-tools": {"layer": "global", "parent": "base", "template": "templates/linux", "repos": ["tools"]},
    "svc-tools": {"layer": "service", "parent": "global-tools", "template": "templates/linux"},
}
ROLES_TREE = ["global-linux", "global-hardened", "product-py", "svc-b", "svc-plain", "svc-a"]  # by depth


def git(*args, cwd=None) -> str:
    done = subprocess.run(["git", *GIT_ID, *args], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


class World:
    """Bare repos under tmp/remotes, a work clone of each, a catalog and a real instance."""

    def __init__(self, tmp: Path, instance):
        self.tmp, self.instance = tmp, instance
        (tmp / "templates" / "linux").mkdir(parents=True)
        (tmp / "templates" / "linux" / "variables.pkr.hcl").write_text(VARIABLES)
        for repo in REPOS:
            git("init", "-q", "--bare", str(self.bare(repo)))
            git("clone", "-q", str(self.bare(repo)), str(self.work(repo)))
            if repo == "tpl":  # the template repo holds the template dir the catalog names
                (self.work(repo) / "packer" / "linux").mkdir(parents=True)
                (self.work(repo) / "packer" / "linux" / "variables.pkr.hcl").write_text(VARIABLES)
            self.commit(repo)
            git("push", "-q", "origin", "HEAD:refs/heads/main", cwd=self.work(repo))
            self.tag(repo, "v1.0.0")
        self.repos = {r: {"url": str(self.bare(r)), "tags": "*" if r == "tools" else "v*"} for r in REPOS}

    def bare(self, repo) -> Path:
        return self.tmp / "remotes" / f"{repo}.git"

    def work(self, repo) -> Path:
        return self.tmp / "work" / repo

    def commit(self, repo) -> str:
        work = self.work(repo)
        n = len(list(work.glob("change-*")))
        (work / f"change-{n}").write_text(str(n))
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", f"change {n}", cwd=work)
        return git("rev-parse", "HEAD", cwd=work)

    def tag(self, repo, tag, new_commit=False, force=False, annotated=True) -> str:
        if new_commit:
            self.commit(repo)
        work = self.work(repo)
        flags = (["-f"] if force else []) + (["-a", "-m", tag] if annotated else [])
        git("tag", *flags, "--", tag, cwd=work)
        git("push", "-q", *(["-f"] if force else []), "origin", f"refs/tags/{tag}", cwd=work)
        return git("rev-parse", "HEAD", cwd=work)

    def commit_of(self, repo, tag) -> str:
        return git("rev-parse", f"refs/tags/{tag}^{{commit}}", cwd=self.bare(repo))

    def defs(self, **defaults):
        doc = {"defaults": {"target": "sandbox", "git_timeout_seconds": 10, **defaults},
               "repos": self.repos, "images": IMAGES}
        path = self.tmp / "images.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        self.catalog = load_catalog(path)
        return build_defs(self.catalog)

    def tick(self, cursor=None, defs=None):
        defs = defs or self.defs()
        ctx = dg.build_sensor_context(instance=self.instance, cursor=cursor, definitions=defs)
        return defs.resolve_sensor_def("git_tag_sensor").evaluate_tick(ctx)

    def baseline(self):
        result = self.tick()
        assert not result.run_requests and "baseline" in result.skip_message
        return result.cursor


@pytest.fixture
def world(tmp_path):
    (tmp_path / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as instance:
        yield World(tmp_path, instance)


def only_request(result) -> dg.RunRequest:
    assert result.run_requests and len(result.run_requests) == 1, result.skip_message
    return result.run_requests[0]


def selected(request) -> list[str]:
    return [key.to_user_string() for key in request.asset_selection]


def pinned(request) -> dict[str, str]:
    return json.loads(request.tags[GIT_REFS_TAG])


def tags_in(cursor: str) -> dict[str, dict[str, str]]:
    return json.loads(cursor)["repos"]


def fake_git(world, monkeypatch) -> Path:
    """A `git` first on PATH that only records that it ran."""
    ran, fake = world.tmp / "GIT_RAN", world.tmp / "fakebin"
    fake.mkdir()
    (fake / "git").write_text(f"#!/bin/sh\ntouch '{ran}'\nexit 1\n")
    (fake / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    return ran


def test_definitions_carry_both_sensors_running_by_default(world, monkeypatch):
    ran = fake_git(world, monkeypatch)
    defs = world.defs(git_sensor_interval_seconds=17, vendor_sensor_interval_seconds=170)
    assert not ran.exists()  # no git at definition time: only inside a tick
    git_sensor = defs.resolve_sensor_def("git_tag_sensor")
    vendor_sensor = defs.resolve_sensor_def("vendor_image_sensor")
    assert git_sensor.default_status == vendor_sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert (git_sensor.minimum_interval_seconds, vendor_sensor.minimum_interval_seconds) == (17, 170)


def test_baseline_then_roles_tag_selects_users_and_descendants(world):
    cursor = world.baseline()
    assert tags_in(cursor)["roles"] == {"v1.0.0": world.commit_of("roles", "v1.0.0")}
    assert set(tags_in(cursor)) == set(REPOS)

    commit = world.tag("roles", "v1.1.0", new_commit=True)
    result = world.tick(cursor)
    request = only_request(result)
    assert selected(request) == ROLES_TREE  # parents before children, no vendor, no tools branch
    assert request.tags[TRIGGER_TAG] == "roles@v1.1.0"
    # Every input of every selected image is pinned, the unchanged ones at their newest tag.
    refs = pinned(request)
    assert set(refs) == {"roles", "tpl", "app", "svc-a", "svc-b"}
    assert refs["roles"] == f"v1.1.0@{commit}"
    assert refs["tpl"] == f"v1.0.0@{world.commit_of('tpl', 'v1.0.0')}"
    assert tags_in(result.cursor)["roles"]["v1.1.0"] == commit
    # The next tick with the new cursor sees nothing new.
    again = world.tick(result.cursor)
    assert not again.run_requests and "no new or moved" in again.skip_message


def test_service_repo_tag_selects_that_service_only(world):
    cursor = world.baseline()
    commit = world.tag("svc-a", "v1.0.1", new_commit=True)
    request = only_request(world.tick(cursor))
    assert selected(request) == ["svc-a"]
    assert pinned(request) == {"svc-a": f"v1.0.1@{commit}"}


def test_template_repo_tag_selects_its_image_subtree(world):
    cursor = world.baseline()
    world.tag("tpl", "v2.0.0", new_commit=True)
    assert selected(only_request(world.tick(cursor))) == ["global-hardened", "svc-b"]


def test_overlapping_repos_in_one_tick_give_one_run_without_duplicates(world):
    cursor = world.baseline()
    world.tag("roles", "v1.1.0", new_commit=True)
    world.tag("app", "v3.0.0", new_commit=True)
    world.tag("svc-a", "v1.0.1", new_commit=True)
    request = only_request(world.tick(cursor))
    assert selected(request) == ROLES_TREE
    assert len(set(selected(request))) == len(selected(request))
    assert request.tags[TRIGGER_TAG] == "app@v3.0.0 roles@v1.1.0 svc-a@v1.0.1"


def test_non_matching_tag_starts_nothing(world):
    cursor = world.baseline()
    world.tag("roles", "release-7", new_commit=True)
    world.tag("roles", "nightly", annotated=False)
    result = world.tick(cursor)
    assert not result.run_requests
    assert "release-7" not in tags_in(result.cursor)["roles"]


def test_deleted_tag_starts_nothing_and_leaves_the_cursor(world, capsys):
    world.tag("roles", "v1.1.0", new_commit=True)
    cursor = world.baseline()
    git("push", "-q", "origin", "--delete", "refs/tags/v1.1.0", cwd=world.work("roles"))
    result = world.tick(cursor)
    assert not result.run_requests
    assert tags_in(result.cursor)["roles"] == {"v1.0.0": world.commit_of("roles", "v1.0.0")}
    assert "'v1.1.0' was deleted from repo 'roles'" in capsys.readouterr().err


def test_reevaluated_tick_gives_the_same_run_key_and_the_next_one_nothing(world):
    cursor = world.baseline()
    world.tag("roles", "v1.1.0", new_commit=True)
    first, second = only_request(world.tick(cursor)), only_request(world.tick(cursor))
    assert first.run_key == second.run_key and selected(first) == selected(second)
    assert first.tags == second.tags
    after = world.tick(cursor)
    assert not world.tick(after.cursor).run_requests


def test_moved_tag_triggers_and_moving_it_back_triggers_again(world):
    cursor = world.baseline()
    old = world.commit_of("roles", "v1.0.0")
    moved = world.tag("roles", "v1.0.0", new_commit=True, force=True)
    first = world.tick(cursor)
    request = only_request(first)
    assert selected(request) == ROLES_TREE and pinned(request)["roles"] == f"v1.0.0@{moved}"
    # Moved back to the commit it had: still a change, and a key no earlier run has.
    git("tag", "-f", "-a", "-m", "back", "v1.0.0", old, cwd=world.work("roles"))
    git("push", "-q", "-f", "origin", "refs/tags/v1.0.0", cwd=world.work("roles"))
    back = only_request(world.tick(first.cursor))
    assert pinned(back)["roles"] == f"v1.0.0@{old}" and back.run_key != request.run_key


def move_tag(world, repo, tag, commit):
    git("tag", "-f", "-a", "-m", f"move to {commit}", tag, commit, cwd=world.work(repo))
    git("push", "-q", "-f", "origin", f"refs/tags/{tag}", cwd=world.work(repo))


def test_tag_moved_back_and_forth_gets_a_new_run_key_each_time_and_one_per_tick(world):
    """A->B->A->B->A repeats the same two changes; Dagster skips a run key any earlier run had."""
    cursor = world.baseline()
    a, b = world.commit_of("roles", "v1.0.0"), world.commit("roles")
    git("push", "-q", "origin", "HEAD:refs/heads/main", cwd=world.work("roles"))
    keys = []
    for commit in (b, a, b, a):
        move_tag(world, "roles", "v1.0.0", commit)
        first, again = world.tick(cursor), world.tick(cursor)  # a tick that raised is evaluated again
        request = only_request(first)
        assert only_request(again).run_key == request.run_key and again.cursor == first.cursor
        assert pinned(request)["roles"] == f"v1.0.0@{commit}"
        keys.append(request.run_key)
        cursor = first.cursor
    assert len(set(keys)) == 4, keys
    assert json.loads(cursor)["requests"] == 4

    # A reset cursor starts a new baseline; the same change as the first one still gets a new key.
    reset = world.baseline()
    move_tag(world, "roles", "v1.0.0", b)
    assert only_request(world.tick(reset)).run_key not in keys


def test_cursor_of_the_first_format_is_read_and_migrated(world):
    old_format = json.dumps(tags_in(world.baseline()))  # {repo: {tag: commit}}
    commit = world.tag("roles", "v1.1.0", new_commit=True)
    result = world.tick(old_format)
    request = only_request(result)  # the repos are known: a change, not a new baseline
    assert selected(request) == ROLES_TREE and pinned(request)["roles"] == f"v1.1.0@{commit}"
    assert only_request(world.tick(old_format)).run_key == request.run_key
    migrated = json.loads(result.cursor)
    assert migrated["requests"] == 1 and migrated["repos"]["roles"]["v1.1.0"] == commit
    assert set(migrated["repos"]) == set(REPOS)
    assert not world.tick(result.cursor).run_requests


def test_lower_version_tag_triggers_but_pins_the_newest_version(world):
    """A hotfix tag below the newest release rebuilds, from the newest release: never a rollback."""
    world.tag("roles", "v1.9.0", new_commit=True)
    newest = world.tag("roles", "v1.10.0", new_commit=True)
    cursor = world.baseline()
    git("tag", "-a", "-m", "hotfix", "v1.9.1", world.commit_of("roles", "v1.9.0"), cwd=world.work("roles"))
    git("push", "-q", "origin", "refs/tags/v1.9.1", cwd=world.work("roles"))
    request = only_request(world.tick(cursor))
    assert request.tags[TRIGGER_TAG] == "roles@v1.9.1"
    assert pinned(request)["roles"] == f"v1.10.0@{newest}"  # v1.10.0 after v1.9.x by version order


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_repo_is_skipped_and_picked_up_when_back(world, capsys, monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    # A repo behind credentials in its URL that never answers: reported without the password.
    world.repos["tools"]["url"] = f"http://ci:s3cret-token@127.0.0.1:{free_port()}/tools.git"
    cursor = world.baseline()
    assert "tools" not in tags_in(cursor)

    away = world.tmp / "roles-away.git"
    world.bare("roles").rename(away)
    git("remote", "set-url", "origin", str(away), cwd=world.work("roles"))
    roles_commit = world.tag("roles", "v1.1.0", new_commit=True)  # pushed while the URL is dead
    svc_commit = world.tag("svc-a", "v1.0.1", new_commit=True)
    capsys.readouterr()
    result = world.tick(cursor)
    log = capsys.readouterr().err  # the sensor's context.log goes to stderr in tests
    request = only_request(result)
    assert selected(request) == ["svc-a"]
    assert pinned(request)["svc-a"] == f"v1.0.1@{svc_commit}"
    assert tags_in(result.cursor)["roles"] == tags_in(cursor)["roles"]  # kept as it was
    assert f"WARNING - git_tag_sensor: repo 'roles' ({world.bare('roles')}) cannot be reached" in log
    assert "does not appear to be a git repository" in log
    assert "repo 'tools' (http://***@127.0.0.1:" in log
    assert "s3cret-token" not in log

    away.rename(world.bare("roles"))
    back = only_request(world.tick(result.cursor))
    assert selected(back) == ROLES_TREE
    assert pinned(back)["roles"] == f"v1.1.0@{roles_commit}"
    assert back.tags[TRIGGER_TAG] == "roles@v1.1.0"


def test_unreachable_input_of_a_selected_image_is_pinned_as_last_seen(world):
    cursor = world.baseline()
    shutil.move(world.bare("tpl"), world.tmp / "tpl-away.git")
    world.tag("roles", "v1.1.0", new_commit=True)
    request = only_request(world.tick(cursor))
    assert pinned(request)["tpl"] == f"v1.0.0@{tags_in(cursor)['tpl']['v1.0.0']}"


HOSTILE_VIA_GIT = ["$(touch${IFS}%s)", ";touch${IFS}%s", "`touch${IFS}%s`", "v1|touch${IFS}%s", "v2.0.0-ünïcødé"]
HOSTILE_RAW = ["--upload-pack=touch %s", "$(touch %s)", ";touch %s", "`touch %s`", "v3\ntouch %s",
               "--upload-pack=touch${IFS}%s", "-n", "v" + "9" * 299]


def add_hostile_tags(world: World, repo: str, marker: Path) -> list[str]:
    """Tags git accepts are pushed; names git refuses are written into the bare repo directly."""
    names = []
    for pattern in HOSTILE_VIA_GIT:
        name = pattern.replace("%s", str(marker))
        world.tag(repo, name)
        names.append(name)
    commit = git("rev-parse", "HEAD", cwd=world.work(repo))  # pushed with the tags above
    refs = world.bare(repo)
    for pattern in HOSTILE_RAW:
        name = pattern.replace("%s", str(marker))
        if len(name) > 200:  # longer than a file name may be: packed-refs
            with open(refs / "packed-refs", "a") as packed:
                packed.write(f"{commit} refs/tags/{name}\n")
        else:
            path = refs / "refs" / "tags" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(commit + "\n")
        names.append(name)
    return names


def test_hostile_tag_names_never_run_anything_nor_crash(world):
    marker = world.tmp / "MARKER"
    add_hostile_tags(world, "tools", marker)  # in the baseline too
    cursor = world.baseline()
    assert not marker.exists()
    baseline_tags = tags_in(cursor)["tools"]
    # Only valid refnames survive: the shell-looking ones git accepts; never spaces, newlines,
    # option-like, over-long or non-ASCII names (nor refs git advertises with a null id).
    assert all(gitrepos.valid_tag(t) for t in baseline_tags)
    assert f"$(touch${{IFS}}{marker})" in baseline_tags
    assert not any(" " in t or "\n" in t or t.startswith("-") or len(t) > 200 for t in baseline_tags)
    assert "0" * 40 not in baseline_tags.values()

    # The same names as new tags on a new commit (and a real release) trigger a normal run.
    shutil.rmtree(world.bare("tools") / "refs" / "tags")
    (world.bare("tools") / "packed-refs").unlink(missing_ok=True)
    for name in git("tag", "-l", cwd=world.work("tools")).splitlines():
        git("tag", "-d", "--", name, cwd=world.work("tools"))
    world.commit("tools")
    release = world.tag("tools", "v5.0.0")  # first: git refuses pushes into a repo with broken refs
    names = add_hostile_tags(world, "tools", marker)
    request = only_request(world.tick(cursor))
    assert not marker.exists()
    assert selected(request) == ["global-tools", "svc-tools"]
    assert pinned(request) == {"tools": f"v5.0.0@{release}"}
    trigger = request.tags[TRIGGER_TAG]
    assert "\n" not in trigger and trigger.isascii() and len(trigger) <= TAG_VALUE_MAX
    assert f"tools@;touch${{IFS}}{marker}" in trigger
    # A build pinned to a hostile (but valid) tag checks it out as plain data.
    hostile = names[0]
    dest = gitrepos.checkout(str(world.bare("tools")), gitrepos.Ref(hostile, release), world.tmp / "co")
    assert (dest / "change-1").exists() and not marker.exists()


def test_many_changed_tags_keep_the_trigger_tag_bounded(world):
    cursor = world.baseline()
    work = world.work("roles")
    for i in range(40):
        git("tag", f"v1.1.{i}-{'x' * 60}", cwd=work)
    git("push", "-q", "origin", "--tags", cwd=work)
    request = only_request(world.tick(cursor))
    assert len(request.tags[TRIGGER_TAG]) <= TAG_VALUE_MAX
    assert request.tags[TRIGGER_TAG].endswith("...(truncated)")
    assert len(tags_in(world.tick(cursor).cursor)["roles"]) == 41


@pytest.mark.parametrize("url", [
    "--upload-pack=touch %s",
    "-u touch %s",
    "ext::sh -c touch% %s",
    "ssh://-oProxyCommand=touch${IFS}%s/x.git",
    "file:///tmp/x.git --upload-pack=touch${IFS}%s",
])
def test_hostile_url_is_refused_at_load_and_git_never_runs(world, monkeypatch, url):
    marker = world.tmp / "MARKER"
    ran = fake_git(world, monkeypatch)
    world.repos["tools"]["url"] = url.replace("%s", str(marker))
    with pytest.raises(CatalogError, match=r"repo 'tools', field 'url'"):
        world.defs()
    assert not marker.exists() and not ran.exists()


def test_unusable_tags_are_warned_about_once_with_repo_and_why(world, capsys):
    non_ascii, long_name = "v2.0.0-ünïcødé", "v" + "9" * 299
    world.tag("tools", non_ascii)  # annotated: listed twice by git (the tag and its peeled commit)
    commit = git("rev-parse", "HEAD", cwd=world.work("tools"))
    with open(world.bare("tools") / "packed-refs", "a") as packed:  # longer than a file name may be
        packed.write(f"{commit} refs/tags/{long_name}\n")
    capsys.readouterr()
    cursor = world.baseline()
    log = capsys.readouterr().err
    assert log.count(f"repo 'tools': tag {ascii(non_ascii)} skipped: not ASCII") == 1, log
    assert log.count(f"repo 'tools': tag {ascii(long_name[:80])}... (300 characters) skipped: 300 characters "
                     "long, over 200") == 1, log
    assert non_ascii not in tags_in(cursor)["tools"]

    # Not again on the next ticks; a new unusable tag is warned about when it appears.
    again = world.tick(cursor)
    assert "skipped" not in capsys.readouterr().err
    world.tag("tools", "v3.0.0-ß")
    world.tick(again.cursor)
    log = capsys.readouterr().err
    assert "repo 'tools': tag 'v3.0.0-\\xdf' skipped: not ASCII" in log and non_ascii not in log
    assert ascii(non_ascii) not in log, log
