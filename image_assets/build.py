"""Building one image: resolve inputs, fingerprint, reuse or run packer, verify, describe.

Kept free of Dagster so the asset, the benchmarks and the tests all drive the same code.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from image_assets import cloud as cloudmod
from image_assets import gitrepos, packer, templates
from image_assets import lineage as lineagemod
from image_assets.catalog import Catalog, CatalogError, check_variables

MANAGED_BY = cloudmod.MANAGED_BY
SOURCES = {"sandbox": "amazon-ebs.sandbox", "aws": "amazon-ebs.aws", "local": "docker.local"}
WORK_ROOT_ENV = "IMAGE_ASSETS_WORK_DIR"


class BuildError(RuntimeError):
    """A permanent failure: retrying the same inputs cannot help."""


@dataclass
class Parent:
    image_id: str
    root_image_id: str


@dataclass
class Built:
    image_id: str
    region: str
    parent_image_id: str
    root_image_id: str
    fingerprint: str
    reused: bool
    git_refs: dict[str, str]
    packer_version: str
    build_seconds: float
    version: str
    tags: dict[str, str] = field(default_factory=dict)
    lineage: list[str] = field(default_factory=list)  # image ids, this one first, from ParentImageId tags

    def metadata(self) -> dict:
        return {
            "image_id": self.image_id, "region": self.region, "parent_image_id": self.parent_image_id,
            "root_image_id": self.root_image_id, "fingerprint": self.fingerprint, "reused": self.reused,
            "git_refs": self.git_refs, "packer_version": self.packer_version,
            "build_seconds": round(self.build_seconds, 2), "image_version": self.version,
            "lineage": self.lineage,
        }


def work_root(catalog: Catalog) -> Path:
    return Path(os.environ.get(WORK_ROOT_ENV) or catalog.root_dir / ".work")


def fingerprint(name: str, target: str, parent_image_id: str, content_digest: str,
                variables: dict, git_refs: dict[str, str]) -> str:
    """Digest of every input that can change the image; tags only matter through their commit."""
    commits = {repo: ref.rpartition("@")[2] for repo, ref in git_refs.items()}
    doc = json.dumps([name, target, parent_image_id, content_digest, variables, commits], sort_keys=True, default=str)
    return hashlib.sha256(doc.encode()).hexdigest()[:32]


def resolve_refs(catalog: Catalog, name: str, pinned: dict[str, str] | None = None) -> dict[str, gitrepos.Ref]:
    """The ref each input repo is built from: the one a sensor pinned, else its newest matching tag."""
    refs = {}
    for repo in catalog.input_repos(name):
        if pinned and repo in pinned:
            refs[repo] = gitrepos.Ref.parse(pinned[repo])
            continue
        spec = catalog.repos[repo]
        try:
            ref = gitrepos.newest(gitrepos.remote_tags(spec.url, spec.tags, catalog.defaults.git_timeout_seconds))
        except gitrepos.GitError as exc:
            raise BuildError(f"image {name!r}: repo {repo!r} ({gitrepos.redact_url(spec.url)}): {exc}") from None
        if ref is None:
            raise BuildError(f"image {name!r}: repo {repo!r} ({gitrepos.redact_url(spec.url)}) has no tag matching {spec.tags!r}")
        refs[repo] = ref
    return refs


def secret_values(catalog: Catalog, name: str) -> dict[str, str]:
    """Values of the image's catalog secrets, read from the environment variables they name."""
    values = {}
    for var, secret in catalog.images[name].secrets.items():
        value = os.environ.get(secret.env)
        if value is None:
            raise BuildError(f"image {name!r}, field 'secrets.{var}': environment variable {secret.env} is not set")
        values[var] = value
    return values


def image_tags(catalog: Catalog, name: str, version: str, parent: Parent, fp: str,
               git_refs: dict[str, str], run_id: str) -> dict[str, str]:
    return {
        "Name": f"{name}-{version}",
        "ManagedBy": MANAGED_BY,
        "ImageName": name,
        "ImageLayer": catalog.images[name].layer.value,
        "ImageVersion": version,
        "ParentImageId": parent.image_id,
        "RootImageId": parent.root_image_id,
        "Fingerprint": fp,
        "GitRefs": " ".join(f"{repo}={ref}" for repo, ref in sorted(git_refs.items())) or "-",
        "DagsterRunId": run_id,
    }


class _ImageLock:
    """A per-image flock under the work root; the file holds the run id of the build inside it.

    The kernel drops a flock when its process dies, so a run id still recorded when the lock is
    acquired belongs to a build that died without cleanup (SIGKILL, OOM, power loss).
    One machine only: across machines the `packer` pool and the run-id tags do this job.
    """

    def __init__(self, catalog: Catalog, name: str):
        self.path = work_root(catalog) / ".locks" / f"{name}.lock"

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "a+")
        fcntl.flock(self.handle, fcntl.LOCK_EX)  # a second build of this image waits here
        self.handle.seek(0)
        self.previous = self.handle.read().strip()
        return self

    def record(self, run_id: str) -> None:
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(run_id)
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def __exit__(self, *exc):
        self.handle.close()  # releases the flock
        return False


def remove_dead_builds(cloud: cloudmod.Cloud, name: str, run_id: str, died: str,
                       run_finished: Callable[[str], bool], log=print) -> list[str]:
    """Remove what earlier builds of `name` left, but only of runs known dead: the one that died
    holding the image lock, or runs Dagster reports finished. A run in progress is never touched."""
    removed = []
    for other in sorted(cloudmod.runs_with_leftovers(cloud, name)):
        if other == died or (other != run_id and run_finished(other)):
            removed += cloudmod.remove_leftovers(cloud, name, other, log)
    return removed


def _remove_stale_work_dirs(catalog: Catalog, name: str) -> None:
    # Under the image lock no other local build of this image runs; a dead one may have left a
    # var-file holding secrets.
    pattern = re.compile(re.escape(name) + r"-[0-9a-f]{8}-[0-9a-f]{8}")
    root = work_root(catalog)
    for entry in root.iterdir() if root.is_dir() else []:
        if entry.is_dir() and pattern.fullmatch(entry.name):
            shutil.rmtree(entry, ignore_errors=True)


def build_image(catalog: Catalog, name: str, parent: Parent, run_id: str, cli: packer.PackerCli,
                pinned_refs: dict[str, str] | None = None, log=print,
                run_finished: Callable[[str], bool] | None = None) -> Built:
    """Build (or reuse) one image: one build per image at a time on this machine, and what dead
    builds of it left is removed first. `run_finished(run_id)` asks Dagster whether a run ended."""
    if catalog.target in ("sandbox", "aws"):
        cloud = cloudmod.connect(catalog.target, catalog.defaults.region)
        cloud.check_reachable()  # before the lock: an unreachable target changes nothing on disk
    with _ImageLock(catalog, name) as lock:
        if catalog.target in ("sandbox", "aws"):
            remove_dead_builds(cloud, name, run_id, lock.previous, run_finished or (lambda _: False), log)
        _remove_stale_work_dirs(catalog, name)
        lock.record(run_id)
        try:
            return _build_image(catalog, name, parent, run_id, cli, pinned_refs, log)
        finally:
            lock.record("")  # not reached on SIGKILL: the next holder then knows this run died


def _build_image(catalog: Catalog, name: str, parent: Parent, run_id: str, cli: packer.PackerCli,
                 pinned_refs: dict[str, str] | None = None, log=print) -> Built:
    image = catalog.images[name]
    target, region = catalog.target, catalog.defaults.region
    if target not in SOURCES:
        raise BuildError(f"image {name!r}: unknown target {target!r}")
    cloud = cloudmod.connect(target, region)  # reachability was checked by build_image

    parent_image = cloudmod.require_available(cloud, parent.image_id, f"parent ({image.parent})")
    revoked = cloudmod.tags_of(parent_image).get("Revoked")
    if revoked:
        raise BuildError(
            f"image {name!r}: parent {image.parent!r} image {parent.image_id} is revoked ({revoked}); "
            f"rebuild the parent first: dagster asset materialize -m definitions --select '{image.parent}*'"
        )

    refs = resolve_refs(catalog, name, pinned_refs)
    git_refs = {repo: str(ref) for repo, ref in refs.items()}
    work = work_root(catalog) / f"{name}-{run_id[:8]}-{uuid.uuid4().hex[:8]}"
    for repo, ref in refs.items():
        try:
            gitrepos.checkout(catalog.repos[repo].url, ref, work / "repos" / repo)
        except gitrepos.GitError as exc:
            raise BuildError(f"image {name!r}: repo {repo!r} at {ref.tag}: {exc}") from None
    template_repo, template_path = catalog.template_ref(name)
    template_dir = (work / "repos" / template_repo / template_path) if template_repo else catalog.template_dir(name)
    if template_repo:
        if not template_dir.is_dir():
            raise BuildError(f"image {name!r}, field 'template': {template_path!r} does not exist in repo "
                             f"{template_repo!r} at {refs[template_repo].tag}")
        try:
            check_variables(catalog.path, name, image, template_dir)
        except CatalogError as exc:
            raise BuildError(str(exc)) from None

    fp = fingerprint(name, target, parent.image_id, templates.content_digest(template_dir), image.variables, git_refs)
    # A retry of this run reuses what the first attempt made; otherwise equal inputs reuse any build.
    existing = cloud.find_reusable(ImageName=name, DagsterRunId=run_id) or cloud.find_reusable(ImageName=name, Fingerprint=fp)
    if existing:
        shutil.rmtree(work, ignore_errors=True)
        tags = cloudmod.tags_of(existing)
        log(f"{name}: reusing {existing['ImageId']} (fingerprint {fp} unchanged)")
        return Built(existing["ImageId"], region, tags.get("ParentImageId", parent.image_id),
                     tags.get("RootImageId", parent.root_image_id), fp, True,
                     git_refs, cli.version(), 0.0, tags.get("ImageVersion", ""), tags,
                     lineagemod.lineage_ids(cloud, existing["ImageId"]))

    version = datetime.now(timezone.utc).strftime("%Y%m%d.%H%M%S") + "." + run_id[:8]
    tags = image_tags(catalog, name, version, parent, fp, git_refs, run_id)
    secrets = secret_values(catalog, name)
    declared = templates.declared_variables(template_dir)
    sensitive = [s for k, v in image.variables.items() if declared[k].sensitive for s in _leaves(v)]
    redact = packer.Redactor([*secrets.values(), *sensitive, *_credential_values()])
    variables = {
        **image.variables, **secrets,
        "image_name": name, "image_version": version, "source_image_id": parent.image_id,
        "region": region, "tags": tags, "sandbox_endpoint": cloud.endpoint or "",
    }
    optional = {"manifest_path": str(work / "manifest.json"),
                "input_dirs": {repo: str(work / "repos" / repo) for repo in refs}}
    variables.update({k: v for k, v in optional.items() if k in declared})
    work.mkdir(parents=True, exist_ok=True)
    var_file = work / "variables.pkrvars.json"
    fd = os.open(var_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(variables, handle)
    started = time.monotonic()
    try:
        artifact, _ = packer.build(cli, template_dir, SOURCES[target], var_file, cloud.packer_env(), redact)
    finally:
        var_file.unlink(missing_ok=True)  # it may hold secrets; nothing else in the work dir does
    image_id = artifact.rpartition(":")[2]
    built = cloudmod.require_available(cloud, image_id, f"built ({name})")
    missing = {k for k, v in tags.items() if cloudmod.tags_of(built).get(k) != v}
    if missing:
        raise BuildError(f"image {name!r}: packer built {image_id} but tags {sorted(missing)} are missing or wrong")
    shutil.rmtree(work, ignore_errors=True)
    return Built(image_id, region, parent.image_id, parent.root_image_id, fp, False, git_refs,
                 cli.version(), time.monotonic() - started, version, tags, lineagemod.lineage_ids(cloud, image_id))


def _credential_values() -> list[str]:
    return [v for k, v in os.environ.items() if k in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN") and v]


def _leaves(value) -> list[str]:
    """The scalar values inside a variable: a sensitive map or list is echoed item by item."""
    if isinstance(value, dict):
        return [s for v in value.values() for s in _leaves(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _leaves(v)]
    return [str(value)]
