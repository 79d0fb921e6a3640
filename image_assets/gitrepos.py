"""Git inputs: remote tag listing, version ordering, and checkout of a tag into a fresh directory.

Every git call passes URLs and refs as arguments after `--`, never through a shell; remote tag
names are filtered to valid refnames that match the catalog glob before anything uses them.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import string
import subprocess
from dataclasses import dataclass
from pathlib import Path

from image_assets.errors import ImageAssetsError

# Protocols git may use for a catalog URL; `ext::` and `fd::` run commands and are never allowed.
_GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_ALLOW_PROTOCOL": "file:git:http:https:ssh",
    "GIT_CONFIG_NOSYSTEM": "1",
}
_VERSION = re.compile(r"^[vV]?(\d+(?:\.\d+)*)(.*)$")
_BAD_REF = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|^[/.-]|[/.]$|\.lock$|^@$")


class GitError(ImageAssetsError):
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


def invalid_tag(name: str) -> str | None:
    """Why `name` is not used as a tag (None when it is): git's refname rules (check-ref-format),
    plus a sane length and ASCII only."""
    if not name.isascii():
        return "not ASCII"
    if not 0 < len(name) <= 200:
        return f"{len(name)} characters long, over 200"
    if _BAD_REF.search(name):
        return "not a valid git ref name (git check-ref-format)"
    return None


def valid_tag(name: str) -> bool:
    return invalid_tag(name) is None


def shown_tag(name: str) -> str:
    """A tag name fit for one log line: escaped to ASCII, long ones cut."""
    return ascii(name) if len(name) <= 80 else f"{ascii(name[:80])}... ({len(name)} characters)"


# Characters a glob's wildcard may stand for in a tag, letters and digits first: they never make a
# name invalid, so they are the first choice for the example tag below.
_TAG_CHARS = string.ascii_letters + string.digits + "-._/+!]@#%&=,;"


def glob_problem(glob: str) -> str | None:
    """Why `glob` can match no valid tag (None when some tag fits it). Builds an example tag the
    glob matches, as fnmatch reads it: a '[' that no ']' closes is a literal '[', which no tag holds."""
    example, i = [], 0
    while i < len(glob):
        if glob[i] in "*?":
            example.append("x")
        elif glob[i] == "[":
            start = i + 2 if glob[i + 1:i + 2] == "!" else i + 1
            end = glob.find("]", start + 1 if glob[start:start + 1] == "]" else start)
            if end < 0:
                return f"'[' at {i + 1} opens a set no ']' closes (fnmatch then reads it as a '[', which no tag holds)"
            body, members, k = glob[start:end], set(), 0
            while k < len(body):
                if body[k + 1:k + 2] == "-" and k + 2 < len(body):
                    if body[k] > body[k + 2]:
                        return f"range '{body[k]}-{body[k + 2]}' is empty"
                    members.update(map(chr, range(ord(body[k]), ord(body[k + 2]) + 1)))
                    k += 3
                else:
                    members.add(body[k])
                    k += 1
            fits = [c for c in _TAG_CHARS if (c in members) != (start > i + 1)]
            if not fits:
                return f"the set {glob[i:end + 1]!r} holds no character a tag may have"
            example.append(fits[0])
            i = end
        else:
            example.append(glob[i])
        i += 1
    tag = "".join(example)
    if not valid_tag(tag) or not fnmatch.fnmatchcase(tag, glob):
        return ("it matches no valid tag name (git refuses names with '..', starting with '.', '/' or '-', or ending "
                "in '.', '/' or '.lock')")
    return None


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


def remote_tags(url: str, glob: str, timeout: float = 20, skipped: dict[str, str] | None = None) -> dict[str, str]:
    """tag -> commit for every valid tag matching glob (annotated tags peeled to their commit).
    `skipped` gets tag -> why for each tag that matches the glob but is not used."""
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
        if not fnmatch.fnmatchcase(name, glob):
            continue
        # git advertises refs with broken names (spaces, newlines) under the null id: not a tag.
        why = invalid_tag(name) or (None if re.fullmatch(r"[0-9a-f]{40}", sha) and sha != "0" * 40
                                    else "advertised by git without a commit (a broken ref)")
        if why is None:
            target[name] = sha
        elif skipped is not None:
            skipped[name] = why
    return {name: peeled.get(name, sha) for name, sha in tags.items()}


def newest(tags: dict[str, str]) -> Ref | None:
    if not tags:
        return None
    tag = max(tags, key=version_key)
    return Ref(tag, tags[tag])


def checkout(url: str, ref: Ref, dest: Path, timeout: float = 300) -> Path:
    """The tree of `ref.tag` at exactly `ref.commit`, in a fresh directory (never a branch head),
    without its `.git`: the tree is content that images ship, and nothing reads the history."""
    dest.mkdir(parents=True, exist_ok=False)
    _git(["init", "-q", str(dest)], timeout)
    _git(["fetch", "-q", "--depth", "1", "--no-tags", "--", url, f"refs/tags/{ref.tag}"], timeout, cwd=dest)
    _git(["-c", "advice.detachedHead=false", "checkout", "-q", "--detach", "FETCH_HEAD"], timeout, cwd=dest)
    head = _git(["rev-parse", "HEAD"], timeout, cwd=dest).strip()
    if head != ref.commit:
        raise GitError(f"tag {ref.tag} of {redact_url(url)} now points at {head[:12]}, not {ref.commit[:12]} as resolved: "
                       "it moved during the run; the next sensor tick rebuilds from the new commit")
    shutil.rmtree(dest / ".git")
    return dest
