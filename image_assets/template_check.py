"""Does a template directory meet the image-assets template contract? Every problem at once.

`check(template_dir, target, image)` is a pure function of the files (and the packer version it
is given): no packer, cloud or git call. It finds what `packer validate` misses or reports one at
a time, measured on packer 1.6.6:
- `-only=amazon-ebs.sandbox` does not match a source inside a named build (`name = "x"` makes it
  `x.amazon-ebs.sandbox`): packer builds nothing and exits 0.
- two unnamed builds with the target's source both run (two images), but packer reports one artifact.
- a post-processor other than manifest / shell-local adds an artifact (checksum: artifact-count 2,
  even with keep_input_artifact = false); zero or more than one artifact fails the build.
- a var-file variable the template does not declare is only a warning.
- `data`, `required_plugins` fail validation; `hcp_packer_registry` is reported only after those.
"""

from __future__ import annotations

import re
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


@dataclass(frozen=True)
class Finding:
    file: str
    line: int | None
    problem: str
    fix: str

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.problem}\n    fix: {self.fix}"


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


def check(template_dir: Path, target: str, image=None, packer_version: str = "1.6.6") -> list[Finding]:
    """Every way the template breaks the contract for `target` (sandbox | aws | local); with a
    catalog image (catalog.Image), its variables and secrets count as set."""
    template_dir = Path(template_dir)
    if not template_dir.is_dir() or not list(template_dir.glob("*.pkr.hcl")):
        return [Finding(str(template_dir), None, "not a directory of *.pkr.hcl files",
                        "point at the directory that holds the template's *.pkr.hcl files")]
    files = _Files(template_dir)
    findings = files.findings
    findings += _newer_blocks(files, packer_version)
    variables = _variables(files, findings)
    findings += _injected(files, variables)
    findings += _required(files, variables, image)
    kind = templates.SOURCE_KINDS.get(target)
    if kind is None:
        findings.append(Finding(str(template_dir), None, f"unknown target {target!r}",
                                f"use one of {sorted(templates.SOURCE_KINDS)}"))
        return findings
    have = [s for s in files.source_names() if s.partition(".")[0] == kind]  # as templates.target_source
    if len(have) == 1:
        source = have[0]
    else:
        problem = (f"{len(have)} {kind} sources ({', '.join(have)}): target {target} builds one" if have
                   else f"no {kind} source (target {target} builds the template's one {kind} source)")
        findings.append(Finding(str(template_dir), None, problem,
                                f"keep one source \"{kind}\" used on every target of its kind, listed in one build block without `name`"))
        return findings
    locals_ = {k: v for _, body in files.blocks("locals") for k, v in body.items() if not k.startswith("__")}
    findings += _sources(files, source)
    findings += _paths(files, locals_)
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
        for path, doc in files.docs:
            count = len(doc.get(block, [])) if block == "data" else sum(1 for _ in _walk_keys(doc, block))
            for nth in range(count):
                header = r'^\s*data\s+"' if block == "data" else rf"^\s*{block}\s*(=\s*)?\{{"
                found.append(Finding(str(path), files.line(path, header, nth),
                                     f"`{block}` needs packer >= {since}; the installed packer is {packer_version}",
                                     _NEWER_FIX[block]))
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


def _injected(files: _Files, variables: dict) -> list[Finding]:
    found = []
    missing = [n for n in ALWAYS_INJECTED if n not in variables]
    if missing:
        found.append(Finding(str(files.dir), None, f"injected variables not declared: {', '.join(missing)} "
                             "(packer ignores them with a warning)", f"copy {DROP_IN} next to the template"))
    for name in MUST_USE:
        if name in variables and not _uses(files, name):
            what = "the parent image (source_ami / image)" if name == "source_image_id" else "the image, instances, volumes and snapshots"
            path = variables[name][0]
            found.append(Finding(str(path), files.line(path, rf'^\s*variable\s+"{name}"'), f"var.{name} is declared but never used",
                                 f"use var.{name} for {what}"))
    return found


def _required(files: _Files, variables: dict, image) -> list[Finding]:
    given = set(templates.INJECTED) | (set(image.variables) | set(image.secrets) if image is not None else set())
    found = []
    for name, (path, body) in variables.items():
        if "default" not in body and name not in given:
            found.append(Finding(str(path), files.line(path, rf'^\s*variable\s+"{re.escape(name)}"'),
                                 f"variable {name!r} has no default and " +
                                 ("the catalog image does not set it" if image is not None else "is not injected"),
                                 f"give it a default, or set it in the image's `variables` (or `secrets`) in the catalog"))
    return found


def _build_sources(body: dict) -> list[str]:
    """Source names ("amazon-ebs.sandbox") a build block uses, as a list or as nested blocks."""
    names = [_unquote(s) for s in body.get("sources", [])]
    names += [_unquote(k) for block in body.get("source", []) for k in block]
    return [n.removeprefix("source.") for n in names]


def _applies(body: dict, source: str) -> bool:
    only = [_unquote(s) for s in body.get("only", [])]
    except_ = [_unquote(s) for s in body.get("except", [])]
    return (not only or source in only) and source not in except_


def _sources(files: _Files, source: str) -> list[Finding]:
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
    fix = f'define source "{kind}" "{name}" and list "source.{source}" in one build block without `name`'
    if not defined:
        found.append(Finding(str(files.dir), None, f"no source {source} (the build runs `packer build -only={source}`)", fix))
    elif not unnamed:
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
            if _unquote(raw_name) != name or kind != "amazon-ebs":
                continue
            missing = [a for a in TAG_ATTRS if "var.tags" not in str(body.get(a, ""))]
            if missing:
                found.append(Finding(str(path), files.line(path, rf'^\s*source\s+"{kind}"\s+"{name}"'),
                                     f"source {source} does not set {', '.join(missing)} from var.tags",
                                     "set " + ", ".join(f"{a} = var.tags" for a in missing)))
    return found


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


def _paths(files: _Files, locals_: dict) -> list[Finding]:
    found = []
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
                if not _rooted(value, locals_):
                    shown = _shown(value)
                    found.append(Finding(str(path), files.line(path, re.escape(shown)),
                                         f"{label}: path {shown!r} is relative to packer's working directory "
                                         "(a fresh work dir per build), not to the template",
                                         f'write "${{path.root}}/{shown.removeprefix("./")}" (or take it from a variable)'))
    return found


def _shown(value: str) -> str:
    """The path as written: the first string literal of the value, else the expression."""
    match = re.match(r'\s*"([^"]*)"', value)
    return match.group(1) if match else value
