"""Asset checks on every built image: exists_and_available, tags_complete, not_revoked,
template_valid, up_to_date; and, where the catalog declares them, image_tests and compliance
(the image's content run in a container and scanned by OpenSCAP; blocking).

They are declared on the image's asset and run in its step, right after the build, so a run
pays no second step per image. They still report the image as it is now, not as it was built:
an image is revoked, deleted by hand or by retention, re-tagged, or its parent asset rebuilt,
and "Execute checks" in the UI (or a check-only selection) subsets the step to the checks
alone, without building. The first three are blocking, and so are image_tests and compliance:
a failure fails the step, so children never build on a missing, untraceable, revoked, broken or
less hardened image within that run. template_valid (ERROR)
and up_to_date (WARN) are not: an outdated image is still a sound parent, and a broken template
fails its own build.

Each check is a plain function returning a CheckResult; orchestration/checks.py declares them
on the assets and turns results into Dagster's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from image_assets import build as buildmod
from image_assets import channels as channelsmod
from image_assets import gitrepos, lineage, scan, template_check, templates
from image_assets import secrets as secretsmod
from image_assets.catalog import Catalog, Compliance
from image_assets.errors import StoreError
from image_assets.stores import MANAGED_BY, ImageRecord, Store
from image_assets.packer import PackerCli, PackerError, Redactor, resolve_binary

EXISTS = "exists_and_available"
TAGS = "tags_complete"
NOT_REVOKED = "not_revoked"
TEMPLATE = "template_valid"
UP_TO_DATE = "up_to_date"
IMAGE_TESTS = "image_tests"
COMPLIANCE = "compliance"
CHECKS = (EXISTS, TAGS, NOT_REVOKED, TEMPLATE, UP_TO_DATE)  # on every built image
TEST_TIMEOUT = 600  # seconds for all of one image's tests
REQUIRED_TAGS = ("ManagedBy", "Deployment", "ImageName", "ImageLayer", "ImageVersion", "ParentImageId",
                 "RootImageId", "Fingerprint", "GitRefs", "DagsterRunId")
OUTPUT_LIMIT = 2000  # characters of packer output kept in check metadata

DESCRIPTIONS = {
    EXISTS: "The asset's current image exists in the target and is available.",
    TAGS: "The image carries every image-assets tag, equal to the materialization metadata.",
    NOT_REVOKED: "The asset's current image is not tagged Revoked.",
    TEMPLATE: "The template contract (`python -m image_assets check-template`), `packer validate -syntax-only` "
              "and `packer validate` of the source the target builds (as on the sandbox and on AWS) with the "
              "catalog variables and var-files pass on the image's template; `packer fmt` differences are a warning.",
    UP_TO_DATE: "The image was built on the current image of its parent asset (and so were its ancestors).",
    IMAGE_TESTS: "The catalog's `tests` of the image and of every ancestor (theirs first, from the root down) "
                 "succeed, in order, in a throwaway container of the image (target local) or on an instance "
                 "launched from it, each through SSM Run Command (sandbox, aws); an image no machine can run "
                 "is reported as not run.",
    COMPLIANCE: "OpenSCAP scores the image's filesystem at least `compliance.min_pass_ratio` and it passes every "
                "rule its parent passes (targets local and sandbox; an image without a machine, or on aws, "
                "is reported as not run).",
}
BLOCKING = {EXISTS, TAGS, NOT_REVOKED, IMAGE_TESTS, COMPLIANCE}


def image_tests_of(catalog: Catalog, name: str) -> list[tuple[str, str]]:
    """(the image that declares it, command) of every test that binds an image: its ancestors'
    first, from the root down, then its own. A test declared on a layer binds every image built on
    it, as compliance does, so no layer undoes what a layer above it checks (e.g. a drop-in that
    sshd reads and the scanner does not)."""
    return [(image, command) for image in reversed(catalog.chain(name)) for command in catalog.images[image].tests]


def image_checks(catalog: Catalog, name: str) -> tuple[str, ...]:
    """The checks of one built image: every image's, plus tests and compliance when it or an
    ancestor declares them."""
    extra = (IMAGE_TESTS,) if image_tests_of(catalog, name) else ()
    return CHECKS + extra + ((COMPLIANCE,) if catalog.compliance(name) else ())


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict on one image. `warn`: a failure that blocks nothing (WARN in Dagster)."""

    image: str
    check: str
    passed: bool
    description: str
    warn: bool = False
    metadata: dict = field(default_factory=dict)  # lists and dicts are JSON, a Path a file

    @property
    def blocks(self) -> bool:
        """Whether this result stops what a passing blocking check releases (children, channels)."""
        return not self.passed and not self.warn


def _result(name: str, check: str, passed: bool, description: str, warn: bool = False, **metadata) -> CheckResult:
    return CheckResult(name, check, passed, description, warn, metadata)


@dataclass(frozen=True)
class Subject:
    """One built image as its own checks read it (tags, image tests, compliance), resolved from
    the catalog once: what it inherits from its ancestors is already folded in."""

    name: str
    layer: str
    parent: str
    deployment: str
    tests: tuple[tuple[str, str], ...]  # (the image that declares it, command), root first
    masked: tuple[str, ...]  # values test output must not show (secrets and sensitive variables of those images)
    compliance: tuple[str, Compliance] | None  # (the image that declares it, its policy)
    tailoring: Path | None

    @classmethod
    def of(cls, catalog: Catalog, name: str) -> Subject:
        image = catalog.images[name]
        tests = tuple(image_tests_of(catalog, name))
        return cls(name, image.layer.value, image.parent or "", catalog.deployment, tests,
                   _masked(catalog, sorted({declared_on for declared_on, _ in tests})),
                   catalog.compliance(name), catalog.tailoring_path(name))


# --- the checks, as plain functions of (subject or catalog, build record, image) --------------


def exists_and_available(name: str, image_id: str, image: ImageRecord | None, where: str) -> CheckResult:
    if image is None:
        return _result(name, EXISTS, False, f"image {image_id} does not exist in {where}", image_id=image_id)
    return _result(name, EXISTS, image.available, f"image {image_id} is {image.state} in {where}",
                   image_id=image_id, state=image.state)


def expected_tags(subject: Subject, built: buildmod.BuildRecord) -> dict[str, str | None]:
    """Tag -> the value the materialization implies (None: must be present, value not recorded)."""
    return {
        "ManagedBy": MANAGED_BY, "Deployment": subject.deployment, "ImageName": subject.name,
        "ImageLayer": subject.layer,
        "ImageVersion": built.image_version, "ParentImageId": built.parent_image_id,
        "RootImageId": built.root_image_id, "Fingerprint": built.fingerprint,
        "GitRefs": None, "DagsterRunId": None,  # a reused image keeps the run and tag names of its build
    }


def _commits_from_tag(value: str) -> dict[str, str]:
    pairs = (part.split("=", 1) for part in value.split() if "=" in part)
    return {repo: ref.rpartition("@")[2] for repo, ref in pairs}


def tags_complete(subject: Subject, built: buildmod.BuildRecord, image: ImageRecord | None) -> CheckResult:
    name = subject.name
    if image is None:
        return _result(name, TAGS, False, f"image {built.image_id} does not exist: no tags to check")
    tags = image.tags
    missing = [k for k in REQUIRED_TAGS if not tags.get(k)]
    wrong = {k: f"tag {tags[k]!r} != materialization {want!r}"
             for k, want in expected_tags(subject, built).items()
             if want is not None and tags.get(k) and tags[k] != want}
    # git refs: the commits must match (tag names may differ); a digest tag must match exactly.
    meta_refs = built.git_refs or {}
    meta_commits = {repo: str(ref).rpartition("@")[2] for repo, ref in meta_refs.items()}
    if tags.get("GitRefs") and built.git_refs is not None:
        own = buildmod.git_refs_from_tag(tags["GitRefs"])
        if (own is None and tags["GitRefs"] != buildmod.git_refs_tag(meta_refs)) or \
                (own is not None and _commits_from_tag(tags["GitRefs"]) != meta_commits):
            wrong["GitRefs"] = f"tag {tags['GitRefs']!r} != materialization {meta_refs!r}"
    problems = [f"missing {k}" for k in missing] + [f"{k}: {v}" for k, v in wrong.items()]
    return _result(name, TAGS, not problems, "; ".join(problems) or f"all {len(REQUIRED_TAGS)} tags match",
                   missing=missing, mismatched=sorted(wrong))


def not_revoked(name: str, image_id: str, image: ImageRecord | None) -> CheckResult:
    revoked = image.revoked if image else ""
    if revoked:
        return _result(name, NOT_REVOKED, False,
                        f"image {image_id} is revoked ({revoked}); rebuild it: "
                        f"dagster asset materialize -m definitions --select '{name}*'", revoked=revoked)
    return _result(name, NOT_REVOKED, True, f"image {image_id} is not revoked")


def up_to_date(catalog: Catalog, name: str, chain: list[lineage.Link], current: dict,
               channels_behind: list[str] | None = None) -> CheckResult:
    """Fresh against the parent asset's current image; release channels behind the image are
    shown (a release decision, not a fault), never failed on."""
    fresh = lineage.freshness(catalog, name, chain, current)
    description = fresh.cause or f"built on {fresh.built_on}, the current image of {fresh.parent!r}"
    if channels_behind:
        description += "; release channels behind it: " + "; ".join(channels_behind)
    return _result(name, UP_TO_DATE, fresh.status == "current", description, warn=True,
                   status=fresh.status, built_on=fresh.built_on, expected_parent=fresh.expected_parent or "",
                   channels_behind=channels_behind or [])


def _channels_behind(catalog: Catalog, store: Store, name: str, image_id: str) -> list[str]:
    """Channels other than latest (published right after these checks pass) not on image_id."""
    if set(catalog.images[name].channels) <= {channelsmod.LATEST}:
        return []  # nothing to read
    try:
        rows = channelsmod.listing(catalog, store, {name: image_id}, name)
    except StoreError as exc:
        return [f"channels not read: {exc}"]
    return [f"{r.channel} ({r.region}) is on {r.image_id}, not on this image" if r.image_id
            else f"{r.channel} ({r.region}) is not set" for r in rows if r.channel != channelsmod.LATEST and not r.current]


# --- image_tests and compliance: the image's content, run and scanned --------------------------


def _not_run(name: str, check: str, store: Store, why: str, what: str = "", **metadata) -> CheckResult:
    # Never a pass: a WARN failure does not block children (nothing was learned about the image).
    where = "the sandbox" if store.target == "sandbox" else store.where
    return _result(name, check, False, f"{what + ' ' if what else ''}not run on {where}: {why}",
                   warn=True, status="not run", **metadata)


def _masked(catalog: Catalog, names: list[str]) -> tuple[str, ...]:
    """What the images' builds were given as secret: their secrets (from the environment, when
    set here), sensitive catalog variables and cloud credentials."""
    values = []
    for name in names:
        image = catalog.images[name]
        template_dir = catalog.template_dir(name)
        try:
            declared = templates.declared_variables(template_dir) if template_dir else {}
        except templates.TemplateError:
            declared = {}
        values += secretsmod.sensitive_variables(name, image, declared).values
        values += [os.environ[s.env] for s in image.secrets.values() if os.environ.get(s.env)]
    return tuple(values)


def image_tests(subject: Subject, image_id: str, store: Store) -> CheckResult:
    name, tests = subject.name, subject.tests
    redact = Redactor(list(subject.masked))
    declared = [{"declared_on": image, "command": redact(command)} for image, command in tests]
    per_image = Counter(image for image, _ in tests)  # in chain order, root first
    what = f"{len(tests)} image test(s) (declared on " + ", ".join(f"{image!r}: {n}" for image, n in per_image.items()) + ")"
    why = store.cannot_run or store.no_machine(image_id)
    if why:
        return _not_run(name, IMAGE_TESTS, store, why, what, tests=declared)
    started = time.monotonic()
    try:
        ran = store.run_commands(image_id, [command for _, command in tests], TEST_TIMEOUT)
    except StoreError as exc:
        return _result(name, IMAGE_TESTS, False, redact(f"{what} could not run on {image_id}: {exc}"),
                       tests=declared)
    seconds = time.monotonic() - started
    results = [{**test, "exit_code": r.exit_code, "output": redact(r.output)[-OUTPUT_LIMIT:]}
               for test, r in zip(declared, ran)]
    failed = [r for r in results if r["exit_code"] != 0]
    if failed:
        first = failed[0]
        description = (f"{len(failed)} of {what} failed in {image_id}; first: `{first['command']}` (declared on "
                       f"{first['declared_on']!r}) exited {first['exit_code']}: {first['output'][-500:]}")
    else:
        description = f"{what} passed on {image_id} in {store.where} ({seconds:.1f} s)"
    return _result(name, IMAGE_TESTS, not failed, description, status="failed" if failed else "passed",
                   tests_passed=len(results) - len(failed), tests_failed=len(failed), seconds=round(seconds, 2),
                   results=results)


def compliance(subject: Subject, built: buildmod.BuildRecord, store: Store, report_dir: Path) -> CheckResult:
    name = subject.name
    why = store.cannot_export or store.no_machine(built.image_id)
    if why:
        return _not_run(name, COMPLIANCE, store, why)
    declared_by, policy = subject.compliance
    tailoring = subject.tailoring
    parent_id = built.parent_image_id
    try:
        own = scan.scan_image(store, built.image_id, policy.profile, tailoring, report_dir=report_dir)
        parent = scan.scan_image(store, parent_id, policy.profile, tailoring, report_dir=report_dir) if parent_id else None
    except (StoreError, RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return _result(name, COMPLIANCE, False, f"OpenSCAP scan of {built.image_id} failed: {exc}")
    # A layer never undoes hardening: every rule the parent passes must still pass.
    undone_ids = sorted(r for r, v in (parent.rules if parent else {}).items() if v == "pass" and own.rules.get(r) != "pass")
    undone = [r.split("_rule_")[-1] for r in undone_ids]
    problems = []
    if own.ratio < policy.min_pass_ratio:
        problems.append(f"pass ratio {own.ratio:.2f} is under the floor {policy.min_pass_ratio:.2f}")
    if undone:
        problems.append(f"{len(undone)} rule(s) its parent {subject.parent!r} passes now fail: "
                        + ", ".join(undone))
        # The SSG sshd rules read sshd_config alone: say where sshd may read the keyword first.
        problems += scan.drop_in_notes(own, undone_ids)
    score = (f"{own.passed} pass / {own.failed} fail / {own.notapplicable} not applicable "
             f"(ratio {own.ratio:.2f}; parent {parent.passed if parent else '-'} pass)")
    description = (f"{'; '.join(problems)}. " if problems else "") + \
        f"{score}, profile {policy.profile} (set on {declared_by!r}), SCAP content {own.content_version}"
    return _result(name, COMPLIANCE, not problems, description,
                   rules_passed=own.passed, rules_failed=own.failed, rules_notapplicable=own.notapplicable,
                   other=own.other, ratio=round(own.ratio, 3),
                   min_pass_ratio=policy.min_pass_ratio, parent_rules_passed=parent.passed if parent else -1,
                   undone=undone, profile=own.profile, declared_by=declared_by,
                   tailoring=str(tailoring or ""), content=own.content, content_version=own.content_version,
                   report=Path(own.report), seconds=own.seconds)


# --- template_valid ---------------------------------------------------------------------------


def _placeholder_vars(catalog: Catalog, name: str, declared: dict, dirs: dict, var_files: list[Path]) -> dict:
    """The var-file: catalog variables but the sensitive ones (they go in the environment, as in
    the build), placeholders for what the build injects, for secrets and for variables nothing
    sets, and the input and content directories (they must exist: packer validate stats
    provisioner files)."""
    image = catalog.images[name]
    secrets = {k: template_check.placeholder(declared[k]) if k in declared else "placeholder" for k in image.secrets}
    sensitive = {k for k in image.variables if k in declared and declared[k].sensitive}
    variables = {k: v for k, v in image.variables.items() if k not in sensitive}
    set_elsewhere = sensitive.union(*(templates.var_file_variables(f) for f in var_files))
    injected = {"image_name": name, "tags": {"ManagedBy": MANAGED_BY}, "sandbox_endpoint": "http://127.0.0.1:1", **dirs}
    return template_check.placeholder_values(declared, catalog.defaults.region, {**variables, **secrets}, injected,
                                             set_elsewhere)


def validate_template(cli: PackerCli, catalog: Catalog, name: str, template_dir: Path,
                      dirs: dict | None = None) -> tuple[list[dict], list[dict]]:
    """(each packer step with its exit code and output, the findings as dicts: the template
    contract of template_check and packer's own, from `validate` of the source the target builds,
    as on the sandbox and on AWS, `validate -syntax-only` and `fmt -check`, a warning)."""
    image = catalog.images[name]
    contract = template_check.check(template_dir, catalog.target, image, cli.version(), catalog.root_dir)
    with tempfile.TemporaryDirectory(prefix="image-assets-validate-") as tmp:
        try:
            declared = templates.declared_variables(template_dir)
        except (templates.TemplateError, OSError):
            declared = {}  # the contract and packer's syntax check say why
        # Sensitive catalog variables and cloud credentials; catalog secrets are never read here.
        sensitive = secretsmod.sensitive_variables(name, image, declared)
        redact = Redactor(sensitive.values)
        var_files = [template_dir / f for f in image.var_files if (template_dir / f).is_file()]
        dirs = {**(dirs or {}), "manifest_path": str(Path(tmp) / "manifest.json")}
        try:
            values = _placeholder_vars(catalog, name, declared, dirs, var_files)
        except templates.TemplateError:
            values = {}  # the contract reports the var-file
        steps, found = template_check.packer_checks(cli, template_dir, catalog.target, values, var_files, sensitive.env,
                                                    redact, Path(tmp), known=contract)
    steps = [{**step, "output": step["output"][-OUTPUT_LIMIT:]} for step in steps]
    findings = [dataclasses.replace(f, file=os.path.relpath(f.file, template_dir)).as_dict() for f in contract + found]
    return steps, findings


_NO_PARENT = buildmod.Parent("ami-00000000", "ami-00000000")  # validation needs no parent image
# What decides a validation besides its inputs: the code of the checks themselves.
_CHECK_CODE = hashlib.sha256(b"".join(Path(m.__file__).read_bytes() for m in (template_check, templates))
                             + Path(__file__).read_bytes()).hexdigest()[:16]


def _validation_key(cli: PackerCli, catalog: Catalog, name: str, refs: dict) -> str:
    """A digest of everything a validation reads: packer (binary and version), target, the image's
    variables, secret names and content (local content by digest), the input repos' commits and a
    local template's digest. Not the image's name: siblings on one template share the result."""
    image = catalog.images[name]
    repo, _ = catalog.template_ref(name)
    local_content = {key: templates.content_digest(catalog.root_dir / path)
                     for key in image.content for r, path in [catalog.content_ref(name, key)]
                     if not r and (catalog.root_dir / path).exists()}
    doc = json.dumps([_CHECK_CODE, cli.binary, cli.version(), catalog.target, catalog.defaults.region,
                      image.variables, sorted(image.secrets), image.content, local_content, image.var_files,
                      sorted((r, ref.commit) for r, ref in refs.items()), catalog.template_ref(name),
                      "" if repo else templates.content_digest(catalog.template_dir(name))],
                     sort_keys=True, default=str)
    return hashlib.sha256(doc.encode()).hexdigest()


def _cached_validation(catalog: Catalog, key: str, validate) -> tuple[list[dict], list[dict]]:
    """validate() once per key on this machine: the result (masked packer output and findings) is
    kept under the work root, so each image step, a process of its own, does not run packer
    three times and parse the template again for inputs already validated."""
    path = buildmod.work_root(catalog) / ".cache" / "template-valid" / f"{key}.json"
    try:
        steps, findings = json.loads(path.read_text())
        return steps, findings
    except (OSError, ValueError):
        pass
    steps, findings = validate()
    if any(step["exit_code"] < 0 for step in steps):
        return steps, findings  # packer did not run or timed out: not a fact about the template
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps([steps, findings]))
    partial.replace(path)  # atomic: a concurrent reader sees the whole result or none
    return steps, findings


def template_valid(cli: PackerCli, catalog: Catalog, name: str, built: buildmod.BuildRecord | None = None) -> CheckResult:
    """packer's checks and the template contract (template_check) on the image's template, with
    its input repos (a repo template too) at the refs the image was built from (the build record's git_refs;
    the newest tags when no build is recorded)."""
    image = catalog.images[name]
    repo, path = catalog.template_ref(name)
    try:
        recorded = (built.git_refs if built else None) or {}
        refs = buildmod.resolve_refs(catalog, name, recorded)
        where = f"{repo}:{path} at {refs[repo]}" if repo else str(catalog.template_dir(name))
        if set(refs) - set(recorded):
            where += " (no build recorded: newest tags)"

        def validate():
            with tempfile.TemporaryDirectory(prefix="image-assets-template-") as tmp:
                resolved = buildmod.resolve(catalog, name, _NO_PARENT, Path(tmp), {r: str(ref) for r, ref in refs.items()})
                dirs = {"input_dirs": {r: str((Path(tmp) / "repos" / r).resolve()) for r in resolved.refs},
                        "content_dirs": {k: str(p) for k, p in resolved.content_dirs.items()}}
                return validate_template(cli, catalog, name, resolved.template_dir, dirs)

        steps, findings = _cached_validation(catalog, _validation_key(cli, catalog, name, refs), validate)
    except (buildmod.BuildError, gitrepos.GitError, templates.TemplateError, secretsmod.SecretError, PackerError,
            OSError, ValueError) as exc:
        return _result(name, TEMPLATE, False, f"template {image.template}: {exc}")

    def line(f: dict) -> str:
        return f"{f['file']}{':' + str(f['line']) if f['line'] else ''}: {f['problem']} (fix: {f['fix']})"

    problems = [line(f) for f in template_check.errors(findings)]
    warnings = [f"warning: {line(f)}" for f in findings if f not in template_check.errors(findings)]
    if problems:
        description = f"{len(problems)} problem(s) with {where}: " + "\n".join(problems + warnings)
    else:
        description = "\n".join([f"packer validate of the source the target builds (as on the sandbox and on AWS), "
                                  f"fmt and the template contract pass on {where}", *warnings])
    return _result(name, TEMPLATE, not problems, description[:4000], template=where,
                   steps=steps, findings=findings)


# --- evaluation ----------------------------------------------------------------------------


def evaluate(catalog: Catalog, name: str, selected: set[str], packer: PackerCli, built: buildmod.BuildRecord | None,
             connect: Callable[[], Store], current: dict[str, str | None], report_dir: Path,
             chain: list[lineage.Link] | None = None, record: ImageRecord | None = None) -> Iterator[CheckResult]:
    """Results of the selected checks for the asset's current image (`built`: the build just made or
    the latest materialization, None when there is none; `chain` and `record`: the lineage and the image the build read
    moments ago). `connect()` gives the image store, when a check needs it; `current`: each
    ancestor asset's current image id (read for up_to_date)."""
    if TEMPLATE in selected:
        try:
            resolve_binary(packer.binary)
            yield template_valid(packer, catalog, name, built)
        except PackerError as exc:
            yield _result(name, TEMPLATE, False, str(exc))
    store_checks = [c for c in image_checks(catalog, name) if c in selected and c != TEMPLATE]
    if not store_checks:
        return
    if built is None:
        for check in store_checks:
            yield _result(name, check, False, f"asset {name!r} has no materialization in this Dagster instance")
        return
    image_id = built.image_id
    try:
        store = connect()
        image = record or store.get(image_id)
    except StoreError as exc:
        for check in store_checks:
            yield _result(name, check, False, f"cannot check image {image_id}: {exc}")
        return
    if EXISTS in selected:
        yield exists_and_available(name, image_id, image, store.where)
    subject = Subject.of(catalog, name)
    if TAGS in selected:
        yield tags_complete(subject, built, image)
    if NOT_REVOKED in selected:
        yield not_revoked(name, image_id, image)
    if UP_TO_DATE in selected:
        try:
            yield up_to_date(catalog, name, chain or lineage.lineage(store, image_id), current,
                             _channels_behind(catalog, store, name, image_id))
        except (lineage.LineageError, StoreError) as exc:
            yield _result(name, UP_TO_DATE, False, str(exc), warn=True)
    if IMAGE_TESTS in selected:
        yield image_tests(subject, image_id, store)
    if COMPLIANCE in selected:
        yield compliance(subject, built, store, report_dir)
