"""Git inputs: remote tag listing, version ordering, and checkout of a tag into a fresh directory.

Every git call passes URLs and refs as arguments after `--`, never through a shell; remote tag
names are filtered to valid refnames that match the catalog glob before anything uses them.
"""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Protocols git may use for a catalog URL; `ext::` and `fd::` run commands and are never allowed.
_GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_ALLOW_PROTOCOL": "file:git:http:https:ssh",
    "GIT_CONFIG_NOSYSTEM": "1",
}
_VERSION = re.compile(r"^[vV]?(\d+(?:\.\d+)*)(.*)$")
_BAD_REF = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|^[/.-]|[/.]$|\.lock$|^@$")


class GitError(RuntimeError):
    pass


def redact_url(text: str) -> str:
    """Drop user:password@ from any URL in text, so no message carries a credential from a repo URL."""
    return re.sub(r"(?<=://)[^/@\s]+@", "***@", text)


@dataclass(frozen=True)
class Ref:
    tag: str
    commit: str

    def __str__(self) -> str:
        return f"{self.tag}@{self.commit}"

    @classmethod
    def parse(cls, text: str) -> "Ref":
        tag, _, commit = text.rpartition("@")
        if not tag or not re.fullmatch(r"[0-9a-f]{40}", commit):
            raise ValueError(f"{text!r} is not TAG@COMMIT")
        return cls(tag, commit)


def valid_tag(name: str) -> bool:
    """git's refname rules (check-ref-format) for a tag, plus a sane length and ASCII only."""
    return 0 < len(name) <= 200 and name.isascii() and not _BAD_REF.search(name)


def version_key(tag: str):
    """v1.10.0 after v1.9.0; names that are not versions sort by name, below versions."""
    match = _VERSION.match(tag)
    if not match:
        return (0, (), 0, tag)
    numbers = tuple(int(n) for n in match.group(1).split("."))
    suffix = match.group(2)
    return (1, numbers, 0 if suffix else 1, suffix)  # v1.0.0-rc1 before v1.0.0


def _git(args: list[str], timeout: float, cwd: Path | None = None) -> str:
    env = {**os.environ, **_GIT_ENV}
    try:
        done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True,
                              errors="replace", timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise GitError(f"git {args[0]} timed out after {timeout:.0f}s") from None
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
        # The first fatal line names the cause; the last is often advice ("...and the repository exists.").
        fatal = [ln for ln in lines if ln.startswith(("fatal:", "error:"))]
        why = fatal[0] if fatal else lines[-1] if lines else f"exit {done.returncode}"
        raise GitError(redact_url(f"git {args[0]} failed: {why}"))
    return done.stdout


def remote_tags(url: str, glob: str, timeout: float = 20) -> dict[str, str]:
    """tag -> commit for every valid tag matching glob (annotated tags peeled to their commit)."""
    out = _git(["ls-remote", "--tags", "--", url], timeout)
    tags: dict[str, str] = {}
    peeled: dict[str, str] = {}
    for line in out.splitlines():
        sha, _, ref = line.partition("\t")
        if not ref.startswith("refs/tags/"):
            continue
        name = ref.removeprefix("refs/tags/")
        target = peeled if name.endswith("^{}") else tags
        name = name.removesuffix("^{}")
        # git advertises refs with broken names (spaces, newlines) under the null id: not a tag.
        if (valid_tag(name) and fnmatch.fnmatchcase(name, glob) and re.fullmatch(r"[0-9a-f]{40}", sha)
                and sha != "0" * 40):
            target[name] = sha
    return {name: peeled.get(name, sha) for name, sha in tags.items()}


def newest(tags: dict[str, str]) -> Ref | None:
    if not tags:
        return None
    tag = max(tags, key=version_key)
    return Ref(tag, tags[tag])


def checkout(url: str, ref: Ref, dest: Path, timeout: float = 300) -> Path:
    """The tree of `ref.tag` at exactly `ref.commit`, in a fresh directory (never a branch head)."""
    dest.mkdir(parents=True, exist_ok=False)
    _git(["init", "-q", str(dest)], timeout)
    _git(["fetch", "-q", "--depth", "1", "--no-tags", "--", url, f"refs/tags/{ref.tag}"], timeout, cwd=dest)
    _git(["-c", "advice.detachedHead=false", "checkout", "-q", "--detach", "FETCH_HEAD"], timeout, cwd=dest)
    head = _git(["rev-parse", "HEAD"], timeout, cwd=dest).strip()
    if head != ref.commit:
        raise GitError(f"tag {ref.tag} of {redact_url(url)} now points at {head[:12]}, not {ref.commit[:12]} as resolved: "
                       "it moved during the run; the next sensor tick rebuilds from the new commit")
    return dest
