"""Does a template directory meet the image-assets template contract? Every problem at once.

`check(template_dir, target, image)` is a pure function of the files (and the packer version it
is given): no packer, cloud or git call. It finds what `packer validate` misses or reports one at
a time, measured on packer 1.6.6:
- `-only=amazon-ebs.aws` does not match a source inside a named build (`name = "x"` makes it
  `x.amazon-ebs.aws`): packer builds nothing and exits 0. The build names a source of one named
  build that way (templates.target_source); a source in several named builds has no one name.
- two unnamed builds with the target's source both run (two images), but packer reports one artifact.
- a post-processor other than manifest / shell-local adds an artifact (checksum: artifact-count 2,
  even with keep_input_artifact = false); zero or more than one artifact fails the build.
- a var-file variable the template does not declare is only a warning.
- `data`, `required_plugins` fail validation; `hcp_packer_registry` is reported only after those.
- `packer validate` passes a hard-coded region, `source_ami_filter` and `ami_regions`: the image
  would not come from the catalog's parent (whose id its tags claim) or would land elsewhere.

`packer_checks` adds packer's own word: `validate -syntax-only`, `fmt -check` (a warning: layout
only) and `validate` of the source the target builds, with the values it gets there and, on the
sandbox, also with AWS's: packer 1.6.6 refuses arguments of newer amazon plugins
(`temporary_security_group_source_public_ip`, `metadata_options`) only when that source is validated.
"""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from image_assets import templates

ALWAYS_INJECTED = ("image_name", "image_version", "source_image_id", "region", "tags", "sandbox_endpoint")
MUST_USE = ("source_image_id", "tags")
# Blocks and the first packer version that has them.
NEWER_BLOCKS = {"data": "1.7.0", "required_plugins": "1.7.0", "hcp_packer_registry": "1.7.7"}
PASS_THROUGH_POST_PROCESSORS = {"manifest", "shell-local"}  # they repeat the builder's artifact
TAG_ATTRS = ("tags", "run_tags", "run_volume_tags", "snapshot_tags")  # amazon-ebs: image, instance, volume, snapshot
# Attributes of provisioners and sources that name a file on the build host.
PATH_ATTRS = {"script", "scripts", "playbook_file", "galaxy_file", "inventory_file", "playbook_dir", "role_paths",
              "user_data_file", "ssh_private_key_file", "http_directory", "floppy_files", "cd_files"}
DROP_IN = "packer/contrib/image-assets.pkr.hcl"
# An amazon-ebs source reaches the sandbox's EC2 API only through these (AWS's own without them).
SANDBOX_SETTINGS = ("custom_endpoint_ec2", "skip_credential_validation", "skip_metadata_api_check", "skip_region_validation")
PACKER_TIMEOUT = 120  # seconds for one packer read (validate, fmt); start-up is ~0.1 s
ERROR, WARNING = "error", "warning"


@dataclass(frozen=True)
class Finding:
    file: str
    line: int | None
    problem: str
    fix: str
    severity: str = ERROR  # a warning (packer fmt's layout) is reported, and fails nothing

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {'warning: ' if self.severity == WARNING else ''}{self.problem}\n    fix: {self.fix}"


def errors(findings) -> list:
    """The findings that fail a check (Finding objects or their dicts)."""
    return [f for f in findings if (f.severity if isinstance(f, Finding) else f.get("severity", ERROR)) != WARNING]


def _unquote(text) -> str:
    text = str(text)
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def _version(text: str) -> tuple:
    return tuple(int(n) for n in re.findall(r"\d+", text)[:3]) or (0,)


class _Files:
    """The parsed *.pkr.hcl files, their text for line numbers, and findings about the files."""

    def __init__(self, template_dir: Path):
        import hcl2

        self.dir = template_dir
        self.docs: list[tuple[Path, dict]] = []
        self.text: dict[Path, str] = {}
        self.findings: list[Finding] = []
        for path in sorted(template_dir.glob("*.pkr.hcl")):
            if path.is_symlink() and not path.exists():
                self.findings.append(Finding(
                    str(path), None, f"dangling symlink to {path.readlink()} (a relative link copied with `cp -r`?)",
                    "replace the link with the file it should point to (`cp -L`), or remove it"))
                continue
            self.text[path] = path.read_text(errors="replace")
            try:
                with path.open() as handle:
                    self.docs.append((path, hcl2.load(handle)))
            except Exception as exc:  # python-hcl2 raises lark errors of several kinds
                self.findings.append(Finding(str(path), None, f"cannot parse HCL: {str(exc).splitlines()[0]}",
                                             f"run `packer validate -syntax-only {template_dir}` for packer's message"))

    def line(self, path: Path, pattern: str, nth: int = 0) -> int | None:
        """Line of the nth match of a regex (a block header, usually): python-hcl2 has no positions."""
        matches = list(re.finditer(pattern, self.text.get(path, ""), re.MULTILINE))
        return self.text[path].count("\n", 0, matches[nth].start()) + 1 if len(matches) > nth else None

    def blocks(self, kind: str):
        """(path, body) of every top-level block of a kind, in file order."""
        for path, doc in self.docs:
            for block in doc.get(kind, []):
                yield path, block

    def source_names(self) -> list[str]:
        """Every source as "type.name"."""
        return [f"{_unquote(kind)}.{_unquote(name)}" for _, block in self.blocks("source")
                for kind, named in block.items() for name in named]


def check(template_dir: Path, target: str, image=None, packer_version: str = "1.6.6",
          catalog_dir: Path | None = None, var_files: list[str] | None = None) -> list[Finding]:
    """Every way the template breaks the contract for `target` (sandbox | aws | local); with a
    catalog image (catalog.Image), its variables and secrets count as set, and so do its var-files
    (`var_files`, unless given). `catalog_dir` (the catalog file's directory) makes the suggested
    `content` paths relative to it."""
    template_dir = Path(template_dir)
    if not template_dir.is_dir() or not list(template_dir.glob("*.pkr.hcl")):
        return [Finding(str(template_dir), None, "not a directory of *.pkr.hcl files",
                        "point at the directory that holds the template's *.pkr.hcl files")]
    files = _Files(template_dir)
    findings = files.findings
    findings += _newer_blocks(files, packer_version)
    variables = _variables(files, findings)
    if var_files is None:
        var_files = getattr(image, "var_files", None) or []
    _, set_by_files = _var_files(template_dir, var_files, findings)
    findings += _required(files, variables, image, set_by_files)
    kind = templates.SOURCE_KINDS.get(target)
    if kind is None:
        findings += _injected(files, variables, "")
        findings.append(Finding(str(template_dir), None, f"unknown target {target!r}",
                                f"use one of {sorted(templates.SOURCE_KINDS)}"))
        return findings
    have = [s for s in files.source_names() if s.partition(".")[0] == kind]  # as templates.target_source
    if len(have) != 1:
        findings += _injected(files, variables, "")
        problem = (f"{len(have)} {kind} sources ({', '.join(have)}): target {target} builds one" if have
                   else f"no {kind} source (target {target} builds the template's one {kind} source)")
        findings.append(Finding(str(template_dir), None, problem,
                                f"keep one source \"{kind}\" used on every target of its kind, listed in one build block"))
        return findings
    locals_ = {k: v for _, body in files.blocks("locals") for k, v in body.items() if not k.startswith("__")}
    sources = _sources(files, have[0], target)
    # What the source findings already say (source_ami, tags) needs no "declared but never used".
    findings += _injected(files, variables, " ".join(f.fix for f in sources))
    findings += sources
    findings += _paths(files, locals_, Path(catalog_dir or Path.cwd()))
    return findings


def _walk_keys(value, key: str):
    """Every value under `key` anywhere in a parsed document."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k == key:
                yield v
            yield from _walk_keys(v, key)
    elif isinstance(value, list):
        for item in value:
            yield from _walk_keys(item, key)


def _newer_blocks(files: _Files, packer_version: str) -> list[Finding]:
    found = []
    for block, since in NEWER_BLOCKS.items():
        if _version(packer_version) >= _version(since):
            continue
        at = []  # (path, line) of each such block: one finding for all of them
        for path, doc in files.docs:
            count = len(doc.get(block, [])) if block == "data" else sum(1 for _ in _walk_keys(doc, block))
            header = r'^\s*data\s+"' if block == "data" else rf"^\s*{block}\s*(=\s*)?\{{"
            at += [(path, files.line(path, header, nth)) for nth in range(count)]
        if at:
            more = f" ({len(at)} blocks: " + ", ".join(f"{p.name}:{n}" for p, n in at) + ")" if len(at) > 1 else ""
            found.append(Finding(str(at[0][0]), at[0][1], f"`{block}` needs packer >= {since}; the installed packer is "
                                 f"{packer_version}{more}", _NEWER_FIX[block]))
    return found


_NEWER_FIX = {
    "data": "drop the data source: the parent image comes in as var.source_image_id, other lookups as catalog variables",
    "required_plugins": "remove the required_plugins block: packer 1.6.6 has its builders built in and no `packer init`",
    "hcp_packer_registry": "remove the hcp_packer_registry block: images are tracked by Dagster and their tags",
}


def _variables(files: _Files, findings: list[Finding]) -> dict[str, tuple[Path, dict]]:
    found: dict[str, tuple[Path, dict]] = {}
    for path, block in files.blocks("variable"):
        for raw, body in block.items():
            name = _unquote(raw)
            if name in found:
                findings.append(Finding(str(path), files.line(path, rf'^\s*variable\s+"{re.escape(name)}"'),
                                        f"variable {name!r} is also declared in {found[name][0].name}",
                                        "keep one declaration (the drop-in file declares the injected ones)"))
            found[name] = (path, body)
    return found


def _uses(files: _Files, name: str) -> bool:
    pattern = re.compile(rf"\bvar\.{name}\b")
    return any(pattern.search(re.sub(r"(?m)^\s*(#|//).*$", "", text)) for text in files.text.values())


def _injected(files: _Files, variables: dict, covered: str) -> list[Finding]:
    found = []
    missing = [n for n in ALWAYS_INJECTED if n not in variables]
    if missing:
        found.append(Finding(str(files.dir), None, f"injected variables not declared: {', '.join(missing)} "
                             "(packer ignores them with a warning)", f"copy {DROP_IN} next to the template"))
    for name in MUST_USE:
        if name in variables and not _uses(files, name) and f"var.{name}" not in covered:
            what = "the parent image (source_ami / image)" if name == "source_image_id" else "the image, instances, volumes and snapshots"
            path = variables[name][0]
            found.append(Finding(str(path), files.line(path, rf'^\s*variable\s+"{name}"'), f"var.{name} is declared but never used",
                                 f"use var.{name} for {what}"))
    return found


def _var_files(template_dir: Path, names: list[str], findings: list[Finding]) -> tuple[list[Path], set[str]]:
    """The image's var-files (catalog `var_files`, relative to the template directory) and the
    variables they set; a missing one, or one outside the directory, is a finding."""
    found, names_set = [], set()
    top = template_dir.resolve()
    for name in names:
        path = (template_dir / name).resolve()
        if not path.is_relative_to(top) or not path.is_file():
            why = "is outside the template directory" if not path.is_relative_to(top) else "does not exist"
            findings.append(Finding(str(template_dir / name), None, f"var-file {name!r} (catalog `var_files`) {why}",
                                    "list var-files by their path inside the template directory"))
            continue
        try:
            names_set |= templates.var_file_variables(path)
        except templates.TemplateError as exc:
            findings.append(Finding(str(path), None, f"var-file {name!r}: {exc}", "fix the var-file (HCL or JSON)"))
            continue
        found.append(path)
    return found, names_set


def _required(files: _Files, variables: dict, image, set_by_files: set[str]) -> list[Finding]:
    given = set(templates.INJECTED) | set_by_files | (set(image.variables) | set(image.secrets) if image is not None else set())
    unset = [(name, path) for name, (path, body) in variables.items() if "default" not in body and name not in given]
    if not unset:
        return []
    names = [name for name, _ in unset]
    path = unset[0][1]
    line = files.line(path, rf'^\s*variable\s+"{re.escape(names[0])}"')
    why = "the catalog image does not set" if image is not None else "is not injected"
    if len(names) == 1:
        problem = f"variable {names[0]!r} has no default and " + ("the catalog image does not set it" if image is not None else why)
    else:
        problem = (f"{len(names)} variables have no default and " +
                   ("the catalog image sets none of them" if image is not None else "are not injected") + ": " + ", ".join(names))
    return [Finding(str(path), line, problem, "give each a default, or set it in the image's `variables` (or `secrets`) "
                    "in the catalog, or in a var-file of the template the image lists under `var_files`")]


_build_sources = templates.build_sources


def _applies(body: dict, source: str) -> bool:
    only = [_unquote(s) for s in body.get("only", [])]
    except_ = [_unquote(s) for s in body.get("except", [])]
    return (not only or source in only) and source not in except_


def _sources(files: _Files, source: str, target: str) -> list[Finding]:
    kind, name = source.split(".")
    defined = [path for path, block in files.blocks("source") if name in {_unquote(n) for n in block.get(f'"{kind}"', {})}]
    found = []
    users = [(nth, path, body) for nth, (path, body) in enumerate(files.blocks("build")) if source in _build_sources(body)]
    unnamed = [u for u in users if "name" not in u[2]]
    named = [u for u in users if "name" in u[2]]
    build_lines, seen = {}, {}
    for nth, (path, _) in enumerate(files.blocks("build")):
        build_lines[nth] = files.line(path, r"^\s*build\s*\{", seen.get(path, 0))
        seen[path] = seen.get(path, 0) + 1
    fix = f'define source "{kind}" "{name}" and list "source.{source}" in one build block'
    if not defined:
        found.append(Finding(str(files.dir), None, f"no source {source} (the build runs `packer build -only={source}`)", fix))
    elif not unnamed and len(named) != 1:  # one named build is fine: the build says `-only=<name>.{source}`
        where = f"only in build {', '.join(repr(_unquote(b['name'])) for _, _, b in named)}" if named else "in no build block"
        path, line = (named[0][1], build_lines[named[0][0]]) if named else (defined[0], None)
        found.append(Finding(str(path), line, f"source {source} is {where}: packer 1.6.6 `-only={source}` does not match "
                             f"a named build's `<name>.{source}`, builds nothing and exits 0", fix))
    if len(users) > 1:  # unnamed ones all run; named ones would, once their name goes
        nth, path, _ = users[1]
        found.append(Finding(str(path), build_lines[nth], f"{len(users)} build blocks use {source}: each one that "
                             "runs makes an image, but packer reports one artifact", f"use {source} in one build block"))
    for nth, path, body in users:
        chains = [[block] for block in body.get("post-processor", [])]
        chains += [chain.get("post-processor", []) for chain in body.get("post-processors", [])]
        for block in (b for chain in chains for b in chain):
            for raw, pp in block.items():
                pp_type = _unquote(raw)
                if pp_type not in PASS_THROUGH_POST_PROCESSORS and _applies(pp, source):
                    found.append(Finding(str(path), files.line(path, rf'^\s*post-processor\s+"{re.escape(pp_type)}"'),
                                         f"post-processor {pp_type!r} adds an artifact to {source}'s image: "
                                         "a build must end with exactly one artifact",
                                         f'remove it or add `except = ["{source}"]` (manifest and shell-local are fine)'))
    for path, block in files.blocks("source"):
        for raw_name, body in block.get(f'"{kind}"', {}).items():
            if _unquote(raw_name) == name:
                found += (_ebs_settings if kind == "amazon-ebs" else _docker_settings)(files, path, source, body, target)
    return found


def _expr(value) -> str:
    """An attribute's value as python-hcl2 gives it, with a template string that is only one
    interpolation ("${var.x}" in quotes) the same as the bare expression."""
    text = str(value).strip()
    match = re.fullmatch(r'"(\$\{[^"{}]*\})"', text)
    return match.group(1) if match else text


def _ebs_settings(files: _Files, path: Path, source: str, body: dict, target: str) -> list[Finding]:
    """The amazon-ebs source the sandbox and AWS build: from the catalog's parent, in the build's
    region and only there, tagged, and (on the sandbox) against the sandbox's EC2 API."""
    found = []
    line = files.line(path, rf'^\s*source\s+"amazon-ebs"\s+"{re.escape(source.partition(".")[2])}"')
    claim = "while its tags (ParentImageId) name the catalog's parent"
    if body.get("source_ami_filter"):
        query = body["source_ami_filter"][0] if isinstance(body["source_ami_filter"], list) else body["source_ami_filter"]
        owners = [_unquote(o) for o in query.get("owners", [])] if isinstance(query, dict) else []
        pattern = _unquote((query.get("filters") or {}).get("name", "")) if isinstance(query, dict) else ""
        vendor = f"vendor: {{owners: {json.dumps(owners)}, name: {json.dumps(pattern)}}}" if owners and pattern else "vendor: {owners: [...], name: ...}"
        found.append(Finding(str(path), files.line(path, r"^\s*source_ami_filter\s*\{") or line,
                             f"source {source} looks its parent up with source_ami_filter: it would build from whatever "
                             f"AMI that finds, {claim}",
                             f"replace the source_ami_filter block with `source_ami = var.source_image_id`; the lookup "
                             f"is the catalog's vendor image ({vendor}) and the image's `parent`"))
    elif _expr(body.get("source_ami", "")) != "${var.source_image_id}":
        what = f"source_ami is {_unquote(_expr(body['source_ami']))}" if "source_ami" in body else "source_ami is not set"
        found.append(Finding(str(path), files.line(path, r"^\s*source_ami\s*=") or line,
                             f"source {source}: {what}, not var.source_image_id: the image would not be built from the "
                             f"catalog's parent, {claim}", "set `source_ami = var.source_image_id`"))
    if _expr(body.get("region", "")) != "${var.region}":
        what = f"region is {_unquote(_expr(body['region']))}" if "region" in body else "region is not set"
        found.append(Finding(str(path), files.line(path, r"^\s*region\s*=") or line,
                             f"source {source}: {what}, not var.region: the image would be built outside the "
                             "catalog's region, where its parent and channels are not",
                             "set `region = var.region` (the catalog's defaults.region)"))
    if "ami_regions" in body:
        found.append(Finding(str(path), files.line(path, r"^\s*ami_regions\s*=") or line,
                             f"source {source} copies the image to other regions (ami_regions): copies the catalog "
                             "does not know are neither tagged, tracked nor deleted by retention",
                             "remove ami_regions; copy with the catalog's `distribute: {regions: [...]}` instead"))
    missing = [a for a in TAG_ATTRS if "var.tags" not in str(body.get(a, ""))]
    if missing:
        found.append(Finding(str(path), line, f"source {source} does not set {', '.join(missing)} from var.tags",
                             "set " + ", ".join(f"{a} = var.tags" for a in missing) +
                             " (tags of your own: merge({...}, var.tags), the build's last so they win)"))
    if target == "sandbox":
        unset = [a for a in SANDBOX_SETTINGS if a not in body]
        if unset or _expr(body["custom_endpoint_ec2"]) != "${var.sandbox_endpoint}":
            found.append(Finding(str(path), line, f"source {source} does not reach the sandbox's EC2 API "
                                 f"({'no ' + ', '.join(unset) if unset else 'custom_endpoint_ec2 is not var.sandbox_endpoint'}): "
                                 "packer would call AWS's own endpoints",
                                 'set `custom_endpoint_ec2 = var.sandbox_endpoint` and `skip_credential_validation`, '
                                 '`skip_metadata_api_check`, `skip_region_validation` = `var.sandbox_endpoint != ""` '
                                 "(the endpoint is empty on AWS, so AWS builds are unchanged)"))
    return found


def _docker_settings(files: _Files, path: Path, source: str, body: dict, target: str) -> list[Finding]:
    if _expr(body.get("image", "")) == "${var.source_image_id}":
        return []
    line = files.line(path, rf'^\s*source\s+"docker"\s+"{re.escape(source.partition(".")[2])}"')
    return [Finding(str(path), files.line(path, r"^\s*image\s*=") or line,
                    f"source {source}: image is not var.source_image_id: the image would not be built from the "
                    "catalog's parent", "set `image = var.source_image_id`")]


# --- relative paths -----------------------------------------------------------------------------

_CALL = re.compile(r"\b(file|templatefile|abspath|fileset)\(\s*\"")


def _rooted(expr: str, locals_: dict, seen=()) -> bool:
    """Whether a path expression starts from ${path.root}, a variable, or an absolute path; anything
    not a literal (an iterator, a function of variables) counts as rooted."""
    expr = expr.strip()
    if expr.startswith("${") and expr.endswith("}"):
        expr = expr[2:-1].strip()  # a bare expression: python-hcl2 quotes template strings, not these
    if expr.startswith('"'):  # a template string: judge what it starts with
        inner = expr[1:]
        if inner.startswith("${"):
            depth, end = 0, 0
            for end, char in enumerate(inner):
                depth += {"{": 1, "}": -1}.get(char, 0)
                if char == "}" and depth == 0:
                    break
            return _rooted(inner[2:end], locals_, seen)
        return inner.startswith("/") or inner in ('"', "")
    if expr.startswith("path.cwd"):
        return False
    if expr.startswith("local."):
        name = re.match(r"local\.(\w+)", expr).group(1)
        if name in seen or name not in locals_ or not isinstance(locals_[name], str):
            return True
        return _rooted(locals_[name], locals_, (*seen, name))
    call = re.match(r"(abspath|file|templatefile|pathexpand|dirname)\((.*)", expr, re.DOTALL)
    if call:
        return _rooted(call.group(2), locals_, seen)
    return True


def _path_values(body: dict, is_file_provisioner: bool):
    for key, value in body.items():
        if key.startswith("__"):  # python-hcl2's __comments__, __is_block__
            continue
        values = value if isinstance(value, list) else [value]
        if key in PATH_ATTRS or (key == "source" and is_file_provisioner and _unquote(body.get("direction", "")) != "download"):
            yield from (v for v in values if isinstance(v, str))
        for v in values:  # file("...") and friends anywhere in the block
            if isinstance(v, str):
                for match in _CALL.finditer(v):
                    yield v[match.end() - 1:]
            elif isinstance(v, dict):
                yield from _path_values(v, False)


def _template_relative(expr: str, locals_: dict, seen=()) -> str | None:
    """The literal part of a path expression, relative to the template directory: for
    "${path.root}/../ansible/site.yml" or "../ansible/site.yml", "../ansible/site.yml"; None when
    it starts from anything else (a variable, an absolute path)."""
    expr = expr.strip()
    if expr.startswith("${") and expr.endswith("}"):
        inner = expr[2:-1].strip()
        call = re.match(r"(abspath|file|templatefile|pathexpand|dirname)\((.*)", inner, re.DOTALL)
        if call:
            return _template_relative(call.group(2), locals_, seen)
        name = re.fullmatch(r"local\.(\w+)", inner)
        if name and name.group(1) not in seen and isinstance(locals_.get(name.group(1)), str):
            return _template_relative(locals_[name.group(1)], locals_, (*seen, name.group(1)))
        return None
    if not expr.startswith('"'):
        return None
    text = expr[1:]
    if text.startswith("${path.root}"):
        text = text[len("${path.root}"):].lstrip("/") or "."
    elif text.startswith(("${", "/")):
        return None
    return re.split(r'\$\{|"', text, maxsplit=1)[0] or "."


def _paths(files: _Files, locals_: dict, catalog_dir: Path) -> list[Finding]:
    relative, outside = [], {}  # (path, line, label, shown); content entry -> [...]
    top = files.dir.resolve()
    for path, doc in files.docs:
        blocks = []  # (label, kind, body)
        for block in doc.get("source", []):
            for kind, named in block.items():
                blocks += [(f"source {_unquote(kind)}.{_unquote(n)}", _unquote(kind), body) for n, body in named.items()]
        for build in doc.get("build", []):
            for block in build.get("provisioner", []):
                blocks += [(f"provisioner {_unquote(k)!r}", _unquote(k), body) for k, body in block.items()]
            for block in build.get("dynamic", []):
                dynamic = block.get('"provisioner"')
                if isinstance(dynamic, dict):
                    kind = _unquote((dynamic.get("labels") or [""])[0])
                    blocks += [(f"dynamic provisioner {kind!r}", kind, body) for body in dynamic.get("content", [])]
        for label, kind, body in blocks:
            for value in _path_values(body, kind == "file"):
                shown = _shown(value)
                line = files.line(path, re.escape(shown))
                rel = _template_relative(value, locals_)
                target = Path(os.path.normpath(top / rel)) if rel is not None else None
                if target is not None and not target.is_relative_to(top):
                    uses = outside.setdefault(_content_entry(top, target, catalog_dir), [])
                    if not any(u[0] == path and u[2] == label and u[4] == target for u in uses):  # abspath("...") twice
                        uses.append((path, line, label, shown, target))
                elif not _rooted(value, locals_) and (path, line, label, shown) not in relative:
                    relative.append((path, line, label, shown))
    found = []
    if len(relative) == 1:
        path, line, label, shown = relative[0]
        found.append(Finding(str(path), line, f"{label}: path {shown!r} is relative to packer's working directory "
                             "(a fresh work dir per build), not to the template",
                             f'write "${{path.root}}/{shown.removeprefix("./")}" (or take it from a variable)'))
    elif relative:
        path, line = relative[0][:2]
        listed = "; ".join(f"{label} {shown!r} ({Path(p).name}:{n})" for p, n, label, shown in relative)
        found.append(Finding(str(path), line, f"{len(relative)} paths are relative to packer's working directory "
                             f"(a fresh work dir per build), not to the template: {listed}",
                             "write " + ", ".join(f'"${{path.root}}/{s.removeprefix("./")}"' for *_, s in relative) +
                             " (or take them from variables)"))
    for (name, where, content_path), uses in outside.items():
        path, line = uses[0][:2]
        listed = "; ".join(f"{label} {shown!r} ({Path(p).name}:{n})" for p, n, label, shown, _ in uses)
        rewrites = ", ".join(f'"${{var.content_dirs["{name}"]}}' + (f"/{t.relative_to(content_path)}" if t != content_path else "") + '"'
                             for *_, t in uses)
        found.append(Finding(str(path), line, f"{'a path' if len(uses) == 1 else f'{len(uses)} paths'} outside the "
                             f"template directory, in {os.path.relpath(content_path, top)}: {listed}. A build's "
                             "fingerprint covers the template directory and the image's `content`, so a change there "
                             "would reuse the old image",
                             f"make it the image's content: add `{name}: {where}` under the image's `content` in the "
                             f"catalog (a path relative to the catalog file, or \"<repo>:<path>\" in an input repo) and "
                             f"write {rewrites}"))
    return found


def _content_entry(top: Path, target: Path, catalog_dir: Path) -> tuple[str, str, Path]:
    """(content name, path for the catalog, the content path) for a file outside the template: the
    first directory (or file) past what the template directory and the file share."""
    common = Path(os.path.commonpath([top, target]))
    first = common / target.relative_to(common).parts[0] if target != common else common
    name = re.sub(r"\W+", "_", first.stem).strip("_") or "content"
    return name, os.path.relpath(first, catalog_dir.resolve()), first


def _shown(value: str) -> str:
    """The path as written: the first string literal of the value, else the expression."""
    match = re.match(r'\s*"([^"]*)"', value)
    return match.group(1) if match else value


# --- packer's own checks ------------------------------------------------------------------------

# A placeholder value for a variable nothing sets, by the kind of its declared type (a string otherwise).
PLACEHOLDERS = {"map": {}, "object": {}, "list": [], "set": [], "tuple": [], "number": 0, "bool": False}


def placeholder(variable: templates.Variable):
    return PLACEHOLDERS.get(variable.type.partition("(")[0], "placeholder")


def placeholder_values(declared: dict, region: str, given: dict, dirs: dict, set_by_files=()) -> dict:
    """The values a `packer validate` gets: placeholders for what the build injects, the given ones
    (catalog variables), the input and content directories, and a placeholder for every other
    variable without a default, so packer judges the rest of the template."""
    injected = {"image_name": "image", "image_version": "0.0.0", "source_image_id": "ami-00000000", "region": region,
                "tags": {"ManagedBy": "image-assets"}, "sandbox_endpoint": "", "manifest_path": "manifest.json", **dirs}
    values = {k: v for k, v in injected.items() if k in declared}
    values.update({name: placeholder(var) for name, var in declared.items()
                   if not var.has_default and name not in values and name not in given and name not in set_by_files})
    return {**values, **given}


def run_packer(cli, args: list[str], cwd: Path, env: dict, redact) -> tuple[int, str]:
    """One packer read through the project's runner; its human output, masked."""
    from image_assets.packer import PackerError

    try:
        out = cli.run(args, cwd=cwd, env={**os.environ, "CHECKPOINT_DISABLE": "1", **env}, redact=redact,
                      echo=lambda _: None, timeout=PACKER_TIMEOUT)
    except (PackerError, OSError) as exc:
        return -1, redact(str(exc))
    text = out.output + "".join(f"\n{e}" for e in out.errors if e not in out.output)
    return out.returncode, redact(text).strip()


def packer_checks(cli, template_dir: Path, target: str, values: dict, var_files: list[Path], env: dict, redact,
                  work: Path, placeholder_dirs=(), known=()) -> tuple[list[dict], list[Finding]]:
    """(each packer step with its exit code and output, the findings they make): `validate
    -syntax-only`, `fmt -check` (a warning) and `validate` of the source the target builds, on the
    sandbox once with its values and once as on AWS (sandbox_endpoint empty). They are independent
    reads, so they run at once. Errors about files under `placeholder_dirs` (content nobody named)
    are dropped, and so are syntax errors `known` contract findings (Finding objects) already report."""
    template_dir = Path(template_dir)
    commands = [("syntax", ["validate", "-syntax-only"]), ("fmt", ["fmt", "-check", "-diff"])]
    for label, source, own in _validations(template_dir, target, values):
        var_file = work / f"{label}-variables.pkrvars.json"
        var_file.write_text(json.dumps(own))
        commands.append((label, ["validate", f"-only={source}", *[f"-var-file={f}" for f in var_files],
                                 f"-var-file={var_file}"]))
    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        # packer runs in `work`: the template by its absolute path
        results = list(pool.map(lambda c: run_packer(cli, [*c[1], str(template_dir.resolve())], work, env, redact), commands))
    steps = [{"command": "packer " + " ".join(args), "as": label, "exit_code": code, "output": output}
             for (label, args), (code, output) in zip(commands, results)]
    version = cli.version()
    if steps[0]["exit_code"] != 0:  # a template that does not parse gives packer nothing more to say
        return steps[:1], _syntax_findings(template_dir, steps[0]["output"], version, known)
    findings = []
    if steps[1]["exit_code"] != 0:
        changed = [line for line in steps[1]["output"].splitlines() if line.endswith(".pkr.hcl") and " " not in line]
        findings.append(Finding(str(template_dir), None, f"packer fmt would change the layout of "
                                f"{', '.join(Path(c).name for c in changed) or 'the template'} (layout only: the build "
                                "does not need it)", f"run `packer fmt {template_dir}`", WARNING))
    # Paths the contract already names (relative, outside the template): packer's "no such file" repeats them.
    said = [p for f in known for p in re.findall(r"'([^' ]*[/.][^' ]*)'", f.problem)] + [str(d) for d in placeholder_dirs]
    seen: dict[tuple, list[str]] = {}
    for step in steps[2:]:
        if step["exit_code"] == 0:
            continue
        errors_ = _packer_errors(step["output"]) or [(None, None, "packer validate failed", _one_line(step["output"]))]
        for error in errors_:
            if not any(p in error[3] for p in said):
                seen.setdefault(error, []).append(step["as"])
    for (file, line, title, detail), labels in seen.items():
        source = next(c[1][1].removeprefix("-only=") for c in commands if c[0] == labels[0])
        as_where = " (as on AWS: sandbox_endpoint empty)" if labels == ["aws"] and target == "sandbox" else ""
        findings.append(Finding(_shown_file(template_dir, file), line,
                                f"packer {version} validate of {source}{as_where}: {title}: {detail}",
                                _packer_fix(title, detail, version, source)))
    return steps, findings


# packer's syntax errors that a contract finding reports in its own words (where packer gives no line).
_SAID = {"Duplicate variable": "is also declared in", "Failed to read file": "dangling symlink"}


def _shown_file(template_dir: Path, file: str | None) -> str:
    """A file packer names, as the findings name it: a template file by the template directory as
    given, anything else (a var-file) as packer wrote it."""
    if not file:
        return str(template_dir)
    return str(template_dir / Path(file).name) if Path(file).parent == template_dir.resolve() else file


def _syntax_findings(template_dir: Path, output: str, version: str, known) -> list[Finding]:
    at = {(Path(f.file).name, f.line) for f in known}
    said = " ".join(f.problem for f in known)
    found = [Finding(_shown_file(template_dir, file), line,
                     f"packer {version} validate -syntax-only: {title}: {detail}", _packer_fix(title, detail, version, ""))
             for file, line, title, detail in dict.fromkeys(_packer_errors(output) or [(None, None, "fails", _one_line(output))])
             if (file and Path(file).name, line) not in at and not (title in _SAID and _SAID[title] in said)]
    return found or [Finding(str(template_dir), None, "packer validate of the template's sources did not run: packer's "
                             "syntax check stops at the problems above", "fix them, then check again", WARNING)]


def _validations(template_dir: Path, target: str, values: dict) -> list[tuple[str, str, dict]]:
    """(label, source, values) of each `packer validate` the target needs: its source, and the
    amazon-ebs source as it runs on AWS."""
    try:
        sources = templates.sources(template_dir)
    except (templates.TemplateError, OSError):
        return []
    builds = list(_Files(template_dir).blocks("build"))
    # A source in a named build is "<name>.<source>" to -only; where the build would not find it (in
    # several builds), validate it anyway under its first build's name, so packer's findings come too.
    named = {}
    for _, body in builds:
        for s in _build_sources(body):
            named.setdefault(s, f"{_unquote(body['name'])}.{s}" if "name" in body else s)
    ebs = [named.get(s, s) for s in sources if s.startswith("amazon-ebs.")]
    docker = [named.get(s, s) for s in sources if s.startswith("docker.")]
    aws = {**values, "sandbox_endpoint": ""}
    out = []
    if target == "sandbox" and len(ebs) == 1:
        out.append(("sandbox", ebs[0], {**values, "sandbox_endpoint": values.get("sandbox_endpoint") or "http://127.0.0.1:1"}))
    if target == "local" and len(docker) == 1:
        out.append(("local", docker[0], values))
    if len(ebs) == 1:
        out.append(("aws", ebs[0], aws))
    return out


_ERROR_BLOCK = re.compile(r"Error: (?P<title>[^\n]+)\n(?:\s*\n)*(?:\s*on (?P<file>[^\s,]+) line (?P<line>\d+)[^\n]*\n)?"
                          r"(?:[^\n]*source code not available[^\n]*\n|\s*\d+:[^\n]*\n)?(?P<detail>.*?)(?=\nError: |\Z)",
                          re.DOTALL)


def _packer_errors(output: str) -> list[tuple]:
    """packer's HCL diagnostics: (file, line, title, detail) each."""
    return [(m["file"], int(m["line"]) if m["line"] else None, m["title"].strip(),
             _one_line(re.sub(r"\d+ error\(s\) occurred:", "", m["detail"]))) for m in _ERROR_BLOCK.finditer(output)]


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("* ", "")).strip()


def _packer_fix(title: str, detail: str, version: str, source: str) -> str:
    kind = f"{source.split('.')[-2]} builder" if source else "HCL"
    argument = re.search(r'argument named "([^"]+)"', detail)
    block = re.search(r'Blocks of type "([^"]+)"', detail)
    if argument:
        return (f"remove `{argument.group(1)}`: packer {version}'s {kind} does not know it (an argument of a "
                "newer plugin), so the build would fail the same way")
    if block:
        return (f"remove the `{block.group(1)}` block: packer {version}'s {kind} does not know it (a block of "
                "a newer plugin), so the build would fail the same way")
    if "no such file" in detail:
        return "the file must exist on the build host: a path under ${path.root}, or the image's `content`"
    return "fix what packer names: the build would fail the same way"


# --- the command line ---------------------------------------------------------------------------


def main(template_dir: str, target: str, image_name: str | None, catalog, as_json: bool,
         var_files: list[str] | None = None) -> int:
    """`python -m image_assets check-template`: the contract, then packer's own checks with
    placeholder values (with --image, that image's variables, content and var-files; --var-file
    adds var-files of the template). 1 when any finding is an error; warnings alone exit 0."""
    from image_assets.packer import PackerCli, PackerError, Redactor

    template_dir = Path(template_dir)
    image = catalog.images[image_name] if image_name else None
    # Suggested content paths are relative to the catalog: --image's, $IMAGE_ASSETS_CATALOG's, or here.
    named = os.environ.get("IMAGE_ASSETS_CATALOG")
    catalog_dir = catalog.root_dir if image is not None else Path(named).resolve().parent if named else Path.cwd()
    cli = PackerCli()
    try:
        version = cli.version()
        why = "" if version != "unknown" else f"`{cli.binary} version` printed no version"
    except PackerError as exc:
        version, why = "unknown", str(exc)
    if why:
        version = "1.6.6"  # what these machines install; the blocks it lacks are still reported
    var_files = [*(image.var_files if image is not None else []), *(var_files or [])]
    findings = check(template_dir, target, image, version, catalog_dir, var_files)
    if why:
        findings.append(Finding(str(template_dir), None, f"packer validate did not run: {why}",
                                "install packer (bin/setup) to have packer judge the template too", WARNING))
    else:
        findings += _packer_for_cli(cli, template_dir, target, image_name, catalog, var_files, Redactor([]), findings)
    if as_json:
        print(json.dumps({"template_dir": str(template_dir), "target": target, "packer_version": version,
                          "findings": [f.as_dict() for f in findings]}, indent=2))
    else:
        for finding in findings:
            print(finding)
        problems, warnings = len(errors(findings)), len(findings) - len(errors(findings))
        also = f", {warnings} warning(s)" if warnings else ""
        print(f"{problems} problem(s){also} in {template_dir} for target {target} (packer {version})" if problems
              else f"{template_dir}: no problems{also} for target {target} (packer {version})")
    return 1 if errors(findings) else 0


def _packer_for_cli(cli, template_dir: Path, target: str, image_name, catalog, var_names, redact, known) -> list[Finding]:
    import tempfile

    image = catalog.images[image_name] if image_name else None
    try:
        declared = templates.declared_variables(template_dir)
    except (templates.TemplateError, OSError):
        declared = {}  # the syntax check says why in packer's words
    with tempfile.TemporaryDirectory(prefix="image-assets-check-") as tmp:
        work = Path(tmp)
        # Content and input repos the CLI does not check out: empty directories, and no finding about them.
        given, inputs = {}, {}
        placeholders = work / "content"
        try:
            content = {name: placeholders / name for name in templates.content_names(template_dir)}
        except (templates.TemplateError, OSError):
            content = {}
        if image is not None:
            given = {k: (placeholder(declared[k]) if declared[k].sensitive else v)
                     for k, v in image.variables.items() if k in declared}
            given.update({k: placeholder(declared[k]) for k in image.secrets if k in declared})
            for key in image.content:
                repo, path = catalog.content_ref(image_name, key)
                content[key] = placeholders / key if repo else (catalog.root_dir / path).resolve()
            inputs = {repo: placeholders / "repos" / repo for repo in catalog.input_repos(image_name)}
        for path in [*content.values(), *inputs.values()]:
            if path.is_relative_to(placeholders):
                path.mkdir(parents=True, exist_ok=True)
        dirs = {"content_dirs": {k: str(v) for k, v in content.items()}, "input_dirs": {k: str(v) for k, v in inputs.items()},
                "manifest_path": str(work / "manifest.json")}
        var_files, set_by_files = _var_files(template_dir.resolve(), var_names, [])
        values = placeholder_values(declared, catalog.defaults.region if catalog else "us-east-1", given, dirs, set_by_files)
        _, findings = packer_checks(cli, template_dir, target, values, var_files, {}, redact, work, [placeholders], known)
    return findings
