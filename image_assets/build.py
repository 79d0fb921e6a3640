"""Building one image: resolve its inputs from the catalog once (Resolved), then fingerprint,
reuse or run packer, verify and describe it from that resolved input alone.

Free of Dagster, so the asset, the benchmarks and the tests all drive the same code.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from image_assets import gitrepos, packer, stores, templates
from image_assets import secrets as secretsmod
from image_assets import lineage as lineagemod
from image_assets.catalog import Catalog, CatalogError, check_variables
from image_assets.errors import ImageAssetsError, StoreError

MANAGED_BY = stores.MANAGED_BY
# The sandbox's stand-in for an image no machine runs there (see its build.pkr.hcl).
NO_MACHINE_TEMPLATE = Path(__file__).resolve().parent / "no_machine"  # package data: the deploy image has it too
WORK_ROOT_ENV = "IMAGE_ASSETS_WORK_DIR"
TAG_VALUE_MAX = 256  # EC2's limit on a tag value
RUN_MARK = "IMAGE_ASSETS_BUILD"  # env marker on packer: "<image>/<run id>", to find a dead run's packer
PACKER_TEMP_LINK = "packer-tmp"  # in a build's work dir: a link to packer's temp dir, found by the next build


class BuildError(ImageAssetsError):
    """A permanent failure: retrying the same inputs cannot help."""


@dataclass
class Parent:
    image_id: str
    root_image_id: str
    lineage: tuple[str, ...] = ()  # as the parent's materialization recorded it (read ahead by the walk)


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
    chain: list[lineagemod.Link] = field(default_factory=list, repr=False)  # the walk behind `lineage`, for checks
    record: stores.ImageRecord | None = field(default=None, repr=False)  # the image as the build last read it, for checks
    not_provisioned: str = ""  # why the image's template did not run (the sandbox's images without a machine)

    def metadata(self) -> dict:
        # The UI lists these in this order: what a platform engineer looks for first (which image, on
        # which parent and root, from which git refs) comes first, the build's details last.
        return {
            "image_id": self.image_id, "image_version": self.version, "parent_image_id": self.parent_image_id,
            "root_image_id": self.root_image_id, "git_refs": self.git_refs, "lineage": self.lineage,
            "reused": self.reused, "fingerprint": self.fingerprint, "region": self.region,
            "packer_version": self.packer_version, "build_seconds": round(self.build_seconds, 2),
            "provisioning": f"not run on the sandbox: {self.not_provisioned}" if self.not_provisioned else "ran",
        }


@dataclass(frozen=True)
class BuildRecord:
    """What a materialization recorded of its image (Built.metadata()), as the checks read it.
    A field is None when the record has no value for it (an older materialization)."""

    image_id: str
    image_version: str | None = None
    parent_image_id: str | None = None
    root_image_id: str | None = None
    fingerprint: str | None = None
    git_refs: dict[str, str] | None = None

    @classmethod
    def of(cls, meta: dict | None) -> BuildRecord | None:
        if not meta or not meta.get("image_id"):
            return None
        return cls(meta["image_id"], meta.get("image_version"), meta.get("parent_image_id"), meta.get("root_image_id"),
                   meta.get("fingerprint"), meta.get("git_refs") if "git_refs" in meta else None)


def work_root(catalog: Catalog) -> Path:
    return Path(os.environ.get(WORK_ROOT_ENV) or catalog.root_dir / ".work")


@dataclass(frozen=True)
class Resolved:
    """One image resolved for one build: everything the build reads. The fingerprint covers what
    decides the image's content: name, target, parent image, template directory, provisioning
    content, variables, var-files and the input repos' commits. The rest says where and how it
    is built and tagged (region, deployment, layer, secrets), never what is in it."""

    name: str
    target: str
    parent: Parent
    template_dir: Path
    content_dirs: dict[str, Path]
    variables: dict
    refs: dict[str, gitrepos.Ref]
    var_files: tuple[str, ...] = ()  # the template's own var-files, inside template_dir
    region: str = ""
    deployment: str = ""
    layer: str = ""
    parent_name: str = ""
    secrets: dict = field(default_factory=dict)  # variable -> the catalog's secret entry (where its value comes from)

    @property
    def git_refs(self) -> dict[str, str]:
        return {repo: str(ref) for repo, ref in self.refs.items()}

    def fingerprint(self) -> str:
        # Tags only matter through their commit; secrets are not part of it (rotating a token
        # does not rebuild, and a digest of a secret in a public tag could be guessed back).
        doc = json.dumps([
            self.name, self.target, self.parent.image_id, templates.content_digest(self.template_dir),
            {key: templates.content_digest(path) for key, path in self.content_dirs.items()},
            self.variables, {repo: ref.commit for repo, ref in self.refs.items()},
        ] + ([list(self.var_files)] if self.var_files else []), sort_keys=True, default=str)
        return hashlib.sha256(doc.encode()).hexdigest()[:32]


def git_refs_tag(git_refs: dict[str, str]) -> str:
    """The GitRefs tag: `repo=tag@commit ...`, or its sha256 when that exceeds EC2's 256 characters
    (the full refs are in the materialization metadata)."""
    full = " ".join(f"{repo}={ref}" for repo, ref in sorted(git_refs.items())) or "-"
    return full if len(full) <= TAG_VALUE_MAX else "sha256:" + hashlib.sha256(full.encode()).hexdigest()


def git_refs_from_tag(value: str) -> dict[str, str] | None:
    """The refs a GitRefs tag holds; None for the digest form."""
    if value.startswith("sha256:"):
        return None
    return dict(part.split("=", 1) for part in value.split() if "=" in part)


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


def secret_values(resolved: Resolved, declared: dict) -> secretsmod.Secrets:
    """The image's secrets, typed by the template's `declared` variables: the PKR_VAR_ environment
    that hands them to packer and the values to mask (see image_assets.secrets)."""
    try:
        return secretsmod.for_image(resolved.name, resolved, declared)
    except secretsmod.SecretError as exc:
        raise BuildError(str(exc)) from None


def image_tags(resolved: Resolved, version: str, fp: str, run_id: str) -> dict[str, str]:
    return {
        "Name": f"{resolved.name}-{version}",
        "ManagedBy": MANAGED_BY,
        "Deployment": resolved.deployment,
        "ImageName": resolved.name,
        "ImageLayer": resolved.layer,
        "ImageVersion": version,
        "ParentImageId": resolved.parent.image_id,
        "RootImageId": resolved.parent.root_image_id,
        "Fingerprint": fp,
        "GitRefs": git_refs_tag(resolved.git_refs),
        "DagsterRunId": run_id,
    }


class _ImageLock:
    """A per-image flock under the work root; the file records the build inside it: its run id
    and, once packer runs, packer's process group.

    The kernel drops a flock when its process dies, so a build still recorded when the lock is
    acquired died without cleanup (SIGKILL, OOM, power loss). Its packer runs in a session of its
    own and may still be alive: it is stopped before anything of its build is removed.
    One machine only: across machines the `packer` pool and the run-id tags do this job.
    """

    def __init__(self, catalog: Catalog, name: str):
        self.path = work_root(catalog) / ".locks" / f"{name}.lock"
        self.run_id = ""

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "a+")
        fcntl.flock(self.handle, fcntl.LOCK_EX)  # a second build of this image waits here
        self.handle.seek(0)
        text = self.handle.read().strip()
        try:
            self.previous = json.loads(text) if text.startswith("{") else {"run_id": text, "pgid": None}
        except ValueError:
            self.previous = {"run_id": "", "pgid": None}
        return self

    def record(self, run_id: str, pgid: int | None = None) -> None:
        self.run_id = run_id
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(json.dumps({"run_id": run_id, "pgid": pgid}) if run_id else "")
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def record_packer(self, pgid: int) -> None:
        self.record(self.run_id, pgid)

    def __exit__(self, *exc):
        self.handle.close()  # releases the flock
        return False


def _packer_groups(name: str, run_id: str) -> set[int]:
    """Process groups of live processes that carry this build's marker (packer and its plugins)."""
    wanted = f"{RUN_MARK}={name}/{run_id}".encode()
    groups = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if wanted in (entry / "environ").read_bytes().split(b"\0"):
                    groups.add(os.getpgid(int(entry.name)))
            except OSError:
                continue
    return groups


def stop_dead_packer(name: str, run_id: str, recorded_pgid: int | None, timeout: float, log=print) -> list[int]:
    """Stop what is left running of a dead build's packer (SIGINT so it cleans up, then SIGKILL).

    Only groups whose processes carry the build's marker are signalled, so a recycled pid or
    process group is never hit; the recorded group is checked the same way."""
    groups = _packer_groups(name, run_id)
    if recorded_pgid and recorded_pgid not in groups:
        recorded_pgid = None  # gone, or reused by an unrelated process
    for pgid in sorted(groups):
        log(f"{name}: dead build {run_id} still has packer running (process group {pgid}): stopping it")
        try:
            os.killpg(pgid, signal.SIGINT)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + timeout
    while _packer_groups(name, run_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pgid in _packer_groups(name, run_id):
        log(f"{name}: packer of dead build {run_id} did not stop in {timeout:.0f}s: killing process group {pgid}")
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return sorted(groups)


def remove_dead_builds(store: stores.Store, name: str, run_id: str, died: dict,
                       run_finished: Callable[[str], bool], timeout: float, log=print) -> list[str]:
    """Remove what earlier builds of `name` left, but only of runs known dead: the one that died
    holding the image lock, or runs Dagster reports finished. A run in progress is never touched,
    and a dead run's packer still running on this machine is stopped first."""
    removed = []
    # The lock's dead run always: its packer may have terminated the instance before it died.
    for other in sorted(store.runs_with_leftovers(name) | ({died["run_id"]} if died.get("run_id") else set())):
        if other == died.get("run_id") or (other != run_id and run_finished(other)):
            if other != died.get("run_id"):  # the lock's own dead run was stopped on acquiring it
                stop_dead_packer(name, other, None, timeout, log)
            removed += store.remove_leftovers(name, other, log)
    return removed


def _packer_temp_dir(work: Path) -> Path:
    """A temp dir for this build's packer, linked from the work dir so that removing the work dir
    (here, or by the next build when this one dies) removes whatever packer left in it. Not in
    the work dir itself: packer's plugin sockets need a short path (see packer.PackerRun.start)."""
    temp = Path(tempfile.mkdtemp(prefix="packer-"))
    (work / PACKER_TEMP_LINK).symlink_to(temp)
    return temp


def _remove_work_dir(work: Path) -> None:
    link = work / PACKER_TEMP_LINK
    if link.is_symlink():
        target = Path(os.readlink(link))
        if target.name.startswith("packer-"):  # only what _packer_temp_dir made
            shutil.rmtree(target, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)


def _remove_stale_work_dirs(catalog: Catalog, name: str) -> None:
    # Under the image lock no other local build of this image runs; a dead one may have left a
    # var-file holding secrets, and packer's temp dir.
    pattern = re.compile(re.escape(name) + r"-[0-9a-f]{8}-[0-9a-f]{8}")
    root = work_root(catalog)
    for entry in root.iterdir() if root.is_dir() else []:
        if entry.is_dir() and pattern.fullmatch(entry.name):
            _remove_work_dir(entry)


def build_image(catalog: Catalog, name: str, parent: Parent, run_id: str, cli: packer.PackerCli,
                pinned_refs: dict[str, str] | None = None, log=print,
                run_finished: Callable[[str], bool] | None = None,
                recorded_refs: Callable[[str], dict | None] | None = None, store: stores.Store | None = None) -> Built:
    """Build (or reuse) one image: one build per image at a time on this machine, and what dead
    builds of it left is removed first. The catalog is read here, to resolve the image's inputs;
    the build itself reads only that Resolved. `run_finished(run_id)` asks Dagster whether a run
    ended; `recorded_refs(image_id)` gives the git refs recorded when an image was built (for a
    reused image whose GitRefs tag is a digest); `store`: the target's store (else connected here)."""
    if catalog.target not in templates.SOURCE_KINDS:
        raise BuildError(f"image {name!r}: unknown target {catalog.target!r}")
    store = store or stores.connect(catalog.target, catalog.defaults.region)
    store.check_reachable()  # before the lock: an unreachable target changes nothing on disk
    with _ImageLock(catalog, name) as lock:
        died = lock.previous
        if died.get("run_id"):
            stop_dead_packer(name, died["run_id"], died.get("pgid"), cli.cleanup_timeout_seconds, log)
        remove_dead_builds(store, name, run_id, died, run_finished or (lambda _: False),
                           cli.cleanup_timeout_seconds, log)
        _remove_stale_work_dirs(catalog, name)
        lock.record(run_id)
        work = work_root(catalog) / f"{name}-{run_id[:8]}-{uuid.uuid4().hex[:8]}"
        try:
            parent_image = _usable_parent(store, name, catalog.images[name].parent, parent)
            resolved = resolve(catalog, name, parent, work, pinned_refs)
            return _build(resolved, parent_image, store, run_id, cli, log, lock, recorded_refs, work)
        finally:
            # Nothing in it is kept, whatever happened: packer's output is in the compute logs,
            # and a checkout is its tag@commit again.
            _remove_work_dir(work)
            lock.record("")  # not reached on SIGKILL: the next holder then knows this run died


def remove_rejected(store: stores.Store, built: Built, failed_checks: list[str], log=print) -> bool:
    """Delete the image this step just built when blocking checks ran on it and failed: it is never
    published or built on, and a kept one would be reused by its fingerprint. What explains the
    failure stays: each check's output and report in its metadata, packer's log in the compute
    logs. A reused image is left alone: an earlier run built it, a channel may point at it, and its
    checks report it."""
    if built.reused or not failed_checks:
        return False
    why = f"blocking checks {', '.join(failed_checks)} failed on it"
    try:
        image = store.get(built.image_id)
        if image is None:
            return False
        snapshots = store.deregister(image)
    except StoreError as exc:
        log(f"could not remove {built.image_id} ({why}): {exc}")
        return False
    log(f"removed {built.image_id}{' and snapshots ' + ' '.join(snapshots) if snapshots else ''}: {why}")
    return True


def resolve(catalog: Catalog, name: str, parent: Parent, work: Path,
            pinned_refs: dict[str, str] | None = None) -> Resolved:
    """Check out the image's input repos at their refs into `work` and resolve its template and content."""
    image = catalog.images[name]
    refs = resolve_refs(catalog, name, pinned_refs)
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
    content = {}
    for key in image.content:
        repo, path = catalog.content_ref(name, key)  # the catalog made sure a repo is an input
        if repo:
            found = (work / "repos" / repo / path).resolve()
            where = f"{path or '/'} in repo {repo!r} at {refs[repo].tag}"
        else:
            found = (catalog.root_dir / path).resolve()
            where = str(found)
        if not found.exists():
            raise BuildError(f"image {name!r}, field 'content.{key}': {where} does not exist")
        content[key] = found
    return Resolved(name, catalog.target, parent, template_dir, content, dict(image.variables), refs,
                    tuple(image.var_files), catalog.defaults.region, catalog.deployment, image.layer.value,
                    image.parent or "", dict(image.secrets))


def _lineage(store: stores.Store, image: stores.ImageRecord, parent: Parent,
             parent_image: stores.ImageRecord) -> tuple[list[str], list[lineagemod.Link], stores.ImageRecord]:
    """The image's lineage, walked over the records the build already holds (the image, its parent)
    and the parent's recorded lineage read ahead in one call: one store call, not one per layer."""
    chain = lineagemod.lineage(store, image.id, {image.id: image, parent.image_id: parent_image}, parent.lineage[1:])
    return [link.image_id for link in chain], chain, image


def _reused(resolved: Resolved, existing: stores.ImageRecord, store: stores.Store, cli,
            recorded_refs, log, parent_image: stores.ImageRecord) -> Built:
    """A reused image reports its own history (from its tags), not the inputs of this run."""
    tags = existing.tags
    own_refs = git_refs_from_tag(tags.get("GitRefs", "-"))
    if own_refs is None:  # digest form: the refs recorded when it was built, if this instance has them
        recorded = recorded_refs(existing.id) if recorded_refs else None
        own_refs = recorded if recorded and git_refs_tag(recorded) == tags["GitRefs"] else resolved.git_refs
    log(f"{resolved.name}: reusing {existing.id} (fingerprint {tags.get('Fingerprint')} unchanged)")
    return Built(existing.id, resolved.region, tags.get("ParentImageId", resolved.parent.image_id),
                 tags.get("RootImageId", resolved.parent.root_image_id), tags.get("Fingerprint", ""), True,
                 own_refs, cli.version(), 0.0, tags.get("ImageVersion", ""), tags,
                 *_lineage(store, existing, resolved.parent, parent_image),
                 not_provisioned=_not_provisioned(store, resolved))


def _not_provisioned(store: stores.Store, resolved: Resolved) -> str:
    """Why the image's template cannot run: on the sandbox, a template that connects to its instance
    (communicator other than "none") on a parent no machine runs; "" when it runs."""
    if resolved.target != "sandbox":
        return ""
    try:
        source = templates.target_source(resolved.template_dir, resolved.target)
    except templates.TemplateError:
        return ""  # the build says what is wrong with the template
    return store.no_machine(resolved.parent.image_id) if templates.needs_machine(resolved.template_dir, source) else ""


def _verify(store: stores.Store, name: str, image_id: str, tags: dict[str, str], log) -> stores.ImageRecord:
    """The built image, available and tagged as asked; otherwise it is deregistered with its
    snapshots (an untagged image is invisible to retention) and the build fails."""
    try:
        built = store.require_available(image_id, f"built ({name})")
        wrong = sorted(k for k, v in tags.items() if built.tags.get(k) != v)
        if not wrong:
            return built
        problem = BuildError(f"image {name!r}: packer built {image_id} but tags {wrong} are missing or wrong "
                             "(does every source set tags = var.tags?); the image was deregistered")
    except StoreError as exc:
        if exc.transient:
            raise  # the retry finds the image by its fingerprint if it is sound
        problem = BuildError(f"image {name!r}: {exc}; the image was deregistered")
    image = store.get(image_id)
    if image is not None:
        snapshots = store.deregister(image)
        log(f"{name}: deregistered {image_id} and snapshots {' '.join(snapshots) or '(none)'} after failed verification")
    raise problem


def _usable_parent(store: stores.Store, name: str, parent_name: str, parent: Parent) -> stores.ImageRecord:
    parent_image = store.require_available(parent.image_id, f"parent ({parent_name})")
    revoked = parent_image.revoked
    if revoked:
        raise BuildError(
            f"image {name!r}: parent {parent_name!r} image {parent.image_id} is revoked ({revoked}); "
            f"rebuild the parent first: dagster asset materialize -m definitions --select '{parent_name}*'"
        )
    return parent_image


def _build(resolved: Resolved, parent_image: stores.ImageRecord, store: stores.Store, run_id: str,
           cli: packer.PackerCli, log, lock: _ImageLock, recorded_refs, work: Path) -> Built:
    name, parent, target, region = resolved.name, resolved.parent, resolved.target, resolved.region
    template_dir = resolved.template_dir
    fp = resolved.fingerprint()
    # Equal inputs reuse any sound build of this deployment, a retry's first attempt included; a
    # retry whose inputs changed builds anew.
    existing = store.find_reusable(ImageName=name, Fingerprint=fp, Deployment=resolved.deployment)
    if existing:
        return _reused(resolved, existing, store, cli, recorded_refs, log, parent_image)

    version = datetime.now(timezone.utc).strftime("%Y%m%d.%H%M%S") + "." + run_id[:8]
    tags = image_tags(resolved, version, fp, run_id)
    try:
        source = templates.target_source(template_dir, target)
    except templates.TemplateError as exc:
        raise BuildError(f"image {name!r}, field 'template': {exc}") from None
    declared = templates.declared_variables(template_dir)
    secrets = secret_values(resolved, declared)
    redact = packer.Redactor(secrets.values)
    # Secrets travel as PKR_VAR_ environment variables: packer quotes the var-file when it rejects it.
    variables = {
        **{k: v for k, v in resolved.variables.items() if k not in secrets.names},
        "image_name": name, "image_version": version, "source_image_id": parent.image_id,
        "region": region, "tags": tags, "sandbox_endpoint": store.endpoint or "",
    }
    optional = {"manifest_path": str(work / "manifest.json"),
                "input_dirs": {repo: str((work / "repos" / repo).resolve()) for repo in resolved.refs},
                "content_dirs": {key: str(path) for key, path in resolved.content_dirs.items()}}
    variables.update({k: v for k, v in optional.items() if k in declared})
    variables.update({k: v for k, v in store.build_variables().items() if k in declared and k not in resolved.variables})
    var_files = [template_dir / f for f in resolved.var_files]
    no_machine = _not_provisioned(store, resolved)
    if no_machine:
        # Nothing can run the template here (it connects to its instance, and no machine is behind
        # the parent): the stand-in makes the image (tags, lineage and children as usual) and the
        # image says its template did not run. A template with communicator "none" runs as it is.
        log(f"{name}: not running {template_dir} on the sandbox: {no_machine}; building it with the stand-in {NO_MACHINE_TEMPLATE}")
        template_dir, source, var_files = NO_MACHINE_TEMPLATE, "amazon-ebs.no-machine", []
        scripts = resolved.variables.get("scripts") or []
        variables = {**{k: variables[k] for k in templates.INJECTED if k in variables}, **optional,
                     "template": str(resolved.template_dir), "playbook": resolved.variables.get("playbook", ""),
                     "scripts": scripts, "os_family": "windows" if any(str(s).endswith(".ps1") for s in scripts) else "linux"}
    work.mkdir(parents=True, exist_ok=True)
    var_file = work / "variables.pkrvars.json"
    fd = os.open(var_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(variables, handle)
    env = {**store.packer_env(), **secrets.env, RUN_MARK: f"{name}/{run_id}"}
    started = time.monotonic()
    try:
        with store.watch() as guard:
            artifact, _ = packer.build(cli, template_dir, source, var_file, env, redact,
                                       on_start=lambda pgid: (lock.record_packer(pgid), guard(pgid)),
                                       temp_dir=_packer_temp_dir(work), var_files=var_files)
    finally:
        var_file.unlink(missing_ok=True)
    # amazon-ebs: "<region>:<ami id>"; docker: the image id itself ("sha256:<hex>")
    image_id = artifact if stores.kind_of(target) == "docker" else artifact.rpartition(":")[2]
    built = _verify(store, name, image_id, tags, log)
    return Built(image_id, region, parent.image_id, parent.root_image_id, fp, False, resolved.git_refs,
                 cli.version(), time.monotonic() - started, version, tags, *_lineage(store, built, parent, parent_image),
                 not_provisioned=no_machine)
