"""What one layer changed against its parent: packages added, removed, upgraded (from the package
database, dpkg and rpm) and the number of files changed. Plain code, no Dagster.

Both targets keep a docker image behind a Linux image: on the local target the image id is one, on
the sandbox the AMI's backing container image (sandbox_instances). A layer is one `docker commit`
of a container started from its parent, so the child's image is the parent's layers plus its own,
and those own layers are the layer's change. With overlay2 on this machine the layers' directories
are read in place, nothing runs: a file the child's own layers hold is added, or modified when it
differs from the parent's (mode, owner, size, mtime, link: a file copied up unchanged is no change),
and a whiteout removes it (or all that was below a removed directory). dpkg's status is read from
the topmost layer that has it; a layer that did not touch it changed no packages. rpm's database
is binary: when a layer touches it, `rpm -qa` runs in a short-lived container of each image. Where
the layer directories cannot be read (another storage driver, a daemon elsewhere, not root), one
short-lived container per image lists its files and packages instead. Reading the layers costs
about as much as two `docker image inspect` calls plus a walk of the layer, so nothing is cached.
An image with no docker image behind it is not measured, and the delta says why.
"""

from __future__ import annotations

import functools
import json
import os
import re
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from debian.debian_support import version_compare

from image_assets import dockerd

DPKG_STATUS = "var/lib/dpkg/status"
RPM_DBS = ("var/lib/rpm/", "usr/lib/sysimage/rpm/")
RPM_QUERY = ["rpm", "-qa", "--qf", r"%{NAME}\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}\t%{ARCH}\n"]
_NOT_PRESENT = {"not-installed", "config-files"}  # dpkg states whose files are gone


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    arch: str = ""


@dataclass
class Delta:
    added: list[Package] = field(default_factory=list)
    removed: list[Package] = field(default_factory=list)
    upgraded: list[tuple[Package, Package]] = field(default_factory=list)  # (before, after)
    downgraded: list[tuple[Package, Package]] = field(default_factory=list)
    files_added: int = 0
    files_modified: int = 0
    files_removed: int = 0
    databases: tuple[str, ...] = ()  # the package databases the images have: dpkg, rpm
    not_measured: str = ""  # why not, when it was not measured; then nothing else is set

    def summary(self) -> str:
        if self.not_measured:
            return f"not measured: {self.not_measured}"
        packages = (f"{len(self.added)} packages added, {len(self.removed)} removed, {len(self.upgraded)} upgraded"
                    + (f", {len(self.downgraded)} downgraded" if self.downgraded else "")
                    if self.databases else "no package database (dpkg or rpm) in the image")
        return (f"{packages}; {self.files_changed} files changed ({self.files_added} added, "
                f"{self.files_modified} modified, {self.files_removed} removed)")

    @property
    def files_changed(self) -> int:
        return self.files_added + self.files_modified + self.files_removed

    def metadata(self) -> dict:
        """Plain values for the materialization: lists of {name, version(s), arch}, counts, a summary."""
        if self.not_measured:
            return {"layer_delta": self.summary()}

        def one(p: Package) -> dict:
            return {"name": p.name, "version": p.version, "arch": p.arch}

        def change(pair: tuple[Package, Package]) -> dict:
            return {"name": pair[1].name, "from": pair[0].version, "to": pair[1].version, "arch": pair[1].arch}

        meta = {"layer_delta": self.summary(),
                "packages_added": [one(p) for p in self.added], "packages_removed": [one(p) for p in self.removed],
                "packages_upgraded": [change(c) for c in self.upgraded]}
        if self.downgraded:
            meta["packages_downgraded"] = [change(c) for c in self.downgraded]
        meta["files_changed"] = self.files_changed
        return meta


METADATA_KEYS = ("layer_delta", "packages_added", "packages_removed", "packages_upgraded", "packages_downgraded",
                 "files_changed")


# --- package databases -------------------------------------------------------------------------

def parse_dpkg_status(text: str) -> list[Package]:
    """The installed packages of a dpkg status file (var/lib/dpkg/status)."""
    packages = []
    for stanza in re.split(r"\n\s*\n", text):
        fields = {}
        for line in stanza.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        status = fields.get("Status", "").split()
        if fields.get("Package") and status and status[-1] not in _NOT_PRESENT:
            packages.append(Package(fields["Package"], fields.get("Version", ""), fields.get("Architecture", "")))
    return packages


def parse_rpm_list(text: str) -> list[Package]:
    """The packages of `rpm -qa` in RPM_QUERY's format (name, epoch:version-release, arch)."""
    packages = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[0]:
            packages.append(Package(parts[0], parts[1], parts[2]))
    return packages


def compare_dpkg(a: str, b: str) -> int:
    """<0, 0, >0 as Debian version a is older than, equal to, newer than b (python-debian's dpkg order)."""
    return version_compare(a, b)


# rpm's order is written here: rpm-vercmp on PyPI (0.1.2) does not know `^`, which rpm 4.15 added.
def _rpmvercmp(a: str, b: str) -> int:
    """rpm's rpmvercmp: alphanumeric segments, numbers newer than letters, ~ before and ^ after the end."""
    if a == b:
        return 0
    x, y = re.findall(r"~|\^|[0-9]+|[A-Za-z]+", a), re.findall(r"~|\^|[0-9]+|[A-Za-z]+", b)
    for i in range(max(len(x), len(y))):
        s, t = (x[i] if i < len(x) else None), (y[i] if i < len(y) else None)
        for mark in ("~", "^"):
            if s == mark or t == mark:
                if s == t:
                    break
                if mark == "~":
                    return -1 if s == "~" else 1
                if s is None or t is None:  # a^ is newer than a, older than a.anything
                    return 1 if s == "^" else -1
                return -1 if s == "^" else 1
        else:
            if s is None or t is None:
                return 1 if t is None else -1
            if s.isdigit() != t.isdigit():
                return 1 if s.isdigit() else -1
            if s.isdigit():
                s, t = s.lstrip("0"), t.lstrip("0")
                if len(s) != len(t):
                    return len(s) - len(t)
            if s != t:
                return -1 if s < t else 1
    return 0


def compare_rpm(a: str, b: str) -> int:
    """<0, 0, >0 as rpm's epoch:version-release a is older than, equal to, newer than b."""
    def split(v: str) -> tuple[int, str, str]:
        epoch, _, rest = v.partition(":") if ":" in v else ("0", "", v)
        version, _, release = rest.rpartition("-") if "-" in rest else (rest, "", "")
        return int(epoch or 0), version, release

    (ea, va, ra), (eb, vb, rb) = split(a), split(b)
    return (ea - eb) or _rpmvercmp(va, vb) or _rpmvercmp(ra, rb)


def package_delta(before: list[Package], after: list[Package], compare=compare_dpkg) -> Delta:
    """Added, removed, upgraded and downgraded packages between two package lists. A name installed
    once on each side is compared by version; one installed for several architectures (multiarch)
    is compared per architecture, and several versions at once (rpm's kernels) by exact version."""
    delta = Delta()

    def pair(old: list[Package], new: list[Package]) -> None:
        if len(old) == 1 and len(new) == 1:
            order = compare(new[0].version, old[0].version)
            if order > 0:
                delta.upgraded.append((old[0], new[0]))
            elif order < 0:
                delta.downgraded.append((old[0], new[0]))
        else:
            delta.added.extend(p for p in new if p not in old)
            delta.removed.extend(p for p in old if p not in new)

    old_by, new_by = _by(before, "name"), _by(after, "name")
    for name in sorted(old_by.keys() | new_by.keys()):
        old, new = old_by.get(name, []), new_by.get(name, [])
        if len(old) <= 1 and len(new) <= 1:
            pair(old, new)
        else:
            old_arch, new_arch = _by(old, "arch"), _by(new, "arch")
            for arch in sorted(old_arch.keys() | new_arch.keys()):
                pair(old_arch.get(arch, []), new_arch.get(arch, []))
    return delta


def _by(packages: list[Package], attr: str) -> dict[str, list[Package]]:
    out: dict[str, list[Package]] = {}
    for p in packages:
        out.setdefault(getattr(p, attr), []).append(p)
    return out


# --- docker images -----------------------------------------------------------------------------

def container_image(store, image_id: str) -> tuple[str, str]:
    """(the docker image behind `image_id` in `store`, "") or ("", why there is none)."""
    if store.kind == "docker":
        return image_id, ""
    if getattr(store, "target", "") != "sandbox":
        return "", f"images on {store.where} have no container image on this machine to read"
    why = store.no_machine(image_id)
    if why:
        return "", why
    from image_assets import sandbox  # only the sandbox has this map
    from image_assets.sandbox import instances as sandbox_instances

    ref = sandbox_instances.read_backing(sandbox.port_of(store.endpoint)).get(image_id)
    return (ref, "") if ref else ("", f"{image_id} has no container image on the sandbox")


@dataclass
class _Image:
    ref: str
    id: str
    layers: list[str]  # diff ids, bottom first
    dirs: list[str]  # overlay2 layer directories, top first; [] when they cannot be read here


def _inspect(ref: str) -> _Image:
    done = dockerd.docker("image", "inspect", ref, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"docker image inspect {ref}: {done.stderr.strip()[-300:]}")
    info = json.loads(done.stdout)[0]
    layers = list((info.get("RootFS") or {}).get("Layers") or [])
    driver = info.get("GraphDriver") or {}
    data = driver.get("Data") or {}
    dirs = [p for p in [data.get("UpperDir", "")] + (data.get("LowerDir") or "").split(":") if p]
    readable = driver.get("Name") == "overlay2" and len(dirs) == len(layers) and all(os.access(d, os.R_OK | os.X_OK)
                                                                                     for d in dirs)
    return _Image(ref, info["Id"], layers, dirs if readable else [])


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


@functools.lru_cache(maxsize=65536)
def _dir_state(layer: str, rel: str) -> str:
    """What a layer holds at directory `rel`: "gone" (a whiteout, or not a directory: nothing
    below it in lower layers is seen), "opaque" (lower layers hidden below it), or ""."""
    try:
        st = os.lstat(os.path.join(layer, rel))
    except (FileNotFoundError, NotADirectoryError):
        return ""
    if not stat.S_ISDIR(st.st_mode):
        return "gone"
    try:
        return "opaque" if os.getxattr(os.path.join(layer, rel), "trusted.overlay.opaque") == b"y" else ""
    except OSError:
        return ""


def _lookup(dirs: list[str], path: str) -> tuple[str, os.stat_result] | None:
    """The entry at `path` in the image made of these layer directories (top first), as overlayfs
    shows it; None when there is none."""
    parents = ["/".join(path.split("/")[:i]) for i in range(1, path.count("/") + 1)]
    for d in dirs:
        states = [_dir_state(d, p) for p in parents]
        if "gone" in states:
            return None
        try:
            st = os.lstat(os.path.join(d, path))
        except (FileNotFoundError, NotADirectoryError):
            if "opaque" in states:
                return None
            continue
        return None if _is_whiteout(st) else (os.path.join(d, path), st)
    return None


def _walk(layer: str, under: str = ".") -> tuple[set[str], set[str]]:
    """Paths of the layer's entries below `under` other than directories (files, links, whiteouts),
    and of its opaque directories there."""
    entries, opaque = set(), set()
    layer = layer.rstrip("/")
    for top, dirs, files in os.walk(os.path.join(layer, under) if under != "." else layer):
        rel = top[len(layer) + 1:]
        if rel and _dir_state(layer, rel) == "opaque":
            opaque.add(rel)
        for name in files + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
            entries.add(f"{rel}/{name}" if rel else name)
    return entries, opaque


def _prefixes(path: str) -> list[str]:
    """`a/b/c` -> a, a/b, a/b/c."""
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _files_under(dirs: list[str], rel: str) -> set[str]:
    """The non-directory entries below directory `rel` in the image made of these layers (top first)."""
    found, hidden = set(), set()
    for d in dirs:
        states = [_dir_state(d, p) for p in _prefixes(rel)]
        if "gone" in states:
            break
        entries, opaque = _walk(d, rel)
        for path in sorted(entries):
            if path in found or any(p in hidden for p in _prefixes(path)):
                continue
            (hidden if _is_whiteout(os.lstat(os.path.join(d, path))) else found).add(path)
        hidden |= opaque
        if "opaque" in states:
            break
    return found


def _same(a: tuple[str, os.stat_result], b: tuple[str, os.stat_result]) -> bool:
    """An entry copied up unchanged (a lock file opened for writing, a touched owner) is no change."""
    (pa, sa), (pb, sb) = a, b
    if (sa.st_mode, sa.st_uid, sa.st_gid, sa.st_size, sa.st_mtime_ns) != (sb.st_mode, sb.st_uid, sb.st_gid,
                                                                           sb.st_size, sb.st_mtime_ns):
        return False
    return not stat.S_ISLNK(sa.st_mode) or os.readlink(pa) == os.readlink(pb)


def _read(dirs: list[str], path: str) -> str | None:
    found = _lookup(dirs, path)
    return Path(found[0]).read_text(errors="replace") if found and stat.S_ISREG(found[1].st_mode) else None


def _run(image: _Image, argv: list[str]) -> subprocess.CompletedProcess:
    return dockerd.docker("run", "--rm", "--network=none", "--pull=never", "--entrypoint", argv[0], image.id,
                          *argv[1:], timeout=300, check=False)


def _rpm_packages(image: _Image) -> dict[str, Package]:
    done = _run(image, RPM_QUERY)
    if done.returncode != 0:
        raise RuntimeError(f"rpm -qa in {image.ref}: {(done.stderr or done.stdout).strip()[-300:]}")
    return parse_rpm_list(done.stdout)


def _in_layers(parent: _Image, child: _Image) -> Delta:
    """The delta read from the overlay2 layer directories (child's own layers over the parent's)."""
    own = child.dirs[:len(child.layers) - len(parent.layers)]
    counts = {"added": 0, "modified": 0, "removed": 0}
    emptied = set()  # directories of the parent removed or replaced: what was below them is gone

    def classify(path: str) -> None:
        after, before = _lookup(own, path), _lookup(parent.dirs, path)
        if before is not None and stat.S_ISDIR(before[1].st_mode):
            emptied.add(path)
            before = None
        if after is None and before is not None:
            counts["removed"] += 1
        elif after is not None and before is None:
            counts["added"] += 1
        elif after is not None and not _same(after, before):
            counts["modified"] += 1

    touched = set()
    for d in own:
        entries, opaque = _walk(d)
        touched |= entries
        emptied |= opaque
    for path in touched:
        classify(path)
    for path in set().union(*(_files_under(parent.dirs, d) for d in sorted(emptied))) - touched:
        classify(path)
    delta, databases = Delta(), []
    before_status, after_status = _read(parent.dirs, DPKG_STATUS), _read(child.dirs, DPKG_STATUS)
    if before_status is not None or after_status is not None:
        databases.append("dpkg")
        if DPKG_STATUS in touched:  # untouched by the layer: no package changed
            delta = package_delta(parse_dpkg_status(before_status or ""), parse_dpkg_status(after_status or ""))
    rpm_touched = any(p.startswith(RPM_DBS) for p in touched)
    if rpm_touched or any(_lookup(parent.dirs, db.rstrip("/")) for db in RPM_DBS):
        databases.append("rpm")
        if rpm_touched:
            _merge(delta, package_delta(_rpm_packages(parent), _rpm_packages(child), compare_rpm))
    delta.files_added, delta.files_modified, delta.files_removed = counts["added"], counts["modified"], counts["removed"]
    delta.databases = tuple(databases)
    return delta


# One container per image, for a daemon whose layers cannot be read here: its dpkg status, rpm's
# list, and every file but directories (not /proc, /sys, /dev: -xdev) with its path, then type,
# mode, owner, size, mtime, link; not what docker puts in every container.
_LIST = (f"cat /{DPKG_STATUS} 2>/dev/null; echo @@rpm@@; command -v rpm >/dev/null && "
         + " ".join(f"'{a}'" for a in RPM_QUERY) + "; echo @@files@@; "
         "find / -xdev ! -type d ! -path /.dockerenv ! -path /etc/hostname ! -path /etc/hosts "
         "! -path /etc/resolv.conf ! -path /etc/mtab -printf '%p\\t%y %m %U %G %s %T@ %l\\n'")


def _listing(image: _Image) -> tuple[str | None, str | None, set[str]]:
    done = _run(image, ["/bin/sh", "-c", _LIST])
    status, _, rest = ("\n" + done.stdout).partition("\n@@rpm@@\n")
    rpm, _, files = rest.partition("@@files@@\n")
    status = status.strip()
    if done.returncode != 0 or not files:
        raise RuntimeError(f"listing {image.ref} in a container failed: {(done.stderr or done.stdout).strip()[-300:]}")
    return status or None, rpm or None, set(files.splitlines())


def _in_containers(parent: _Image, child: _Image) -> Delta:
    """The delta from each image's listing, made in a short-lived container of it."""
    (s0, r0, f0), (s1, r1, f1) = _listing(parent), _listing(child)
    delta, databases = Delta(), []
    if s0 or s1:
        databases.append("dpkg")
        delta = package_delta(parse_dpkg_status(s0 or ""), parse_dpkg_status(s1 or ""))
    if r0 or r1:
        databases.append("rpm")
        _merge(delta, package_delta(parse_rpm_list(r0 or ""), parse_rpm_list(r1 or ""), compare_rpm))
    paths0 = dict(line.split("\t", 1) for line in f0 if "\t" in line)
    paths1 = dict(line.split("\t", 1) for line in f1 if "\t" in line)
    delta.files_added = len(paths1.keys() - paths0.keys())
    delta.files_removed = len(paths0.keys() - paths1.keys())
    delta.files_modified = sum(1 for p in paths1.keys() & paths0.keys() if paths0[p] != paths1[p])
    delta.databases = tuple(databases)
    return delta


def _merge(into: Delta, other: Delta) -> None:
    into.added += other.added
    into.removed += other.removed
    into.upgraded += other.upgraded
    into.downgraded += other.downgraded


def measure(store, parent_id: str, child_id: str) -> Delta:
    """The delta of the layer `child_id` built on `parent_id` in `store`; never raises: a delta that
    cannot be measured says why."""
    try:
        refs = []
        for role, image_id in (("parent", parent_id), ("image", child_id)):
            ref, why = container_image(store, image_id)
            if not ref:
                return Delta(not_measured=why if image_id in why else f"{role} {image_id}: {why}")
            refs.append(ref)
        parent, child = _inspect(refs[0]), _inspect(refs[1])
        if child.layers[:len(parent.layers)] != parent.layers or len(child.layers) <= len(parent.layers):
            how = _in_containers  # not layers on its parent's layers (flattened, imported)
        else:
            how = _in_layers if parent.dirs and child.dirs else _in_containers
        return how(parent, child)
    except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:
        return Delta(not_measured=f"{child_id} against {parent_id}: {exc}")


def main(argv: list[str] | None = None) -> int:
    """`python -m image_assets.layer_delta PARENT IMAGE [--target T] [--region R]`: print the delta."""
    import argparse
    import time

    from image_assets import stores

    parser = argparse.ArgumentParser(prog="python -m image_assets.layer_delta", description=main.__doc__)
    parser.add_argument("parent")
    parser.add_argument("image")
    parser.add_argument("--target", default=os.environ.get("IMAGE_ASSETS_TARGET", "local"))
    parser.add_argument("--region", default="us-east-1")
    args = parser.parse_args(argv)
    started = time.monotonic()
    delta = measure(stores.connect(args.target, args.region), args.parent, args.image)
    print(json.dumps(delta.metadata(), indent=1))
    print(f"{delta.summary()} (measured in {time.monotonic() - started:.2f} s)")
    return 1 if delta.not_measured else 0


if __name__ == "__main__":
    raise SystemExit(main())
