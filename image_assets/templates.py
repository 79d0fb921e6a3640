"""Reading packer templates: declared variables, and the digest of a directory that feeds the fingerprint."""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from image_assets.errors import ImageAssetsError


# Variables the build sets on every template (a JSON var-file); a catalog variable may not reuse them.
INJECTED = ("image_name", "image_version", "source_image_id", "region", "tags", "sandbox_endpoint",
            "manifest_path", "input_dirs", "content_dirs")


class TemplateError(ImageAssetsError, ValueError):
    pass


@dataclass(frozen=True)
class Variable:
    name: str
    sensitive: bool
    has_default: bool
    type: str = "any"  # the HCL type expression as written, e.g. "string", "map(string)", "list(string)"


def _type_expr(raw) -> str:
    """python-hcl2 gives a bare keyword for `string` and `${map(string)}` for calls; one spelling."""
    if raw is None:
        return "any"
    text = str(raw).strip()
    if text.startswith("${") and text.endswith("}"):
        text = text[2:-1]
    return re.sub(r"\s+", "", text)


def template_files(template_dir: Path) -> list[Path]:
    files = sorted(template_dir.glob("*.pkr.hcl"))
    if not files:
        raise TemplateError(f"{template_dir}: no *.pkr.hcl files")
    return files


def _cache_dir() -> Path:
    return Path(os.environ.get("IMAGE_ASSETS_STATE_DIR") or Path.home() / ".cache" / "image-assets") / "hcl"


def build_sources(body: dict) -> list[str]:
    """Source names ("amazon-ebs.aws") a parsed build block uses, as a list or as nested blocks."""
    names = [str(s).strip('"') for s in body.get("sources", [])]
    names += [str(k).strip('"') for block in body.get("source", []) for k in block]
    return [n.removeprefix("source.") for n in names]


def _parse(files: list[Path]) -> tuple[dict[str, Variable], dict[str, str], dict[str, str]]:
    """The variables the files declare, their sources as "type.name" with their communicator as
    written (packer's default "ssh" when unset), and the name `-only` knows a source by where that
    differs: "<build>.type.name" for a source whose one build is named."""
    import hcl2  # lark-based: ~0.3 s to import, so only on a cache miss

    found: dict[str, Variable] = {}
    sources: dict[str, str] = {}
    builds: dict[str, list[str]] = {}  # source -> the names of the builds that use it ("" unnamed)
    for path in files:
        try:
            with path.open() as handle:
                doc = hcl2.load(handle)
        except Exception as exc:  # python-hcl2 raises lark errors of several kinds
            raise TemplateError(f"{_where(path, exc)}: cannot parse HCL: {_problem(exc)}") from None
        for block in doc.get("variable", []):
            for raw_name, body in block.items():
                name = raw_name.strip('"')
                found[name] = Variable(name, bool(body.get("sensitive")), "default" in body, _type_expr(body.get("type")))
        for block in doc.get("source", []):
            for kind, named in block.items():
                for name, body in named.items():
                    communicator = str(body.get("communicator", "ssh") if isinstance(body, dict) else "ssh").strip('"')  # python-hcl2 8 keeps quotes
                    sources[f"{kind.strip(chr(34))}.{name.strip(chr(34))}"] = str(communicator)
        for body in doc.get("build", []):
            for source in build_sources(body):
                builds.setdefault(source, []).append(str(body.get("name", "")).strip('"'))
    only = {s: f"{names[0]}.{s}" for s, names in builds.items() if len(names) == 1 and names[0]}
    return found, sources, only


def _where(path: Path, exc: Exception) -> str:
    """file:line:column from a lark error (its lines count from 1), or just the file."""
    line, column = getattr(exc, "line", None), getattr(exc, "column", None)
    return f"{path}:{line}:{column}" if isinstance(line, int) and line > 0 else str(path)


def _problem(exc: Exception) -> str:
    """One line: the unexpected token when lark names one, else the error's first line."""
    token = str(getattr(exc, "token", "") or "").strip()
    if token:
        return f"unexpected {token.splitlines()[0][:40]!r}"
    return re.sub(r",? at line \d+,? col(umn)? \d+\.?$", "", (str(exc) or type(exc).__name__).splitlines()[0])


_ONCE: contextvars.ContextVar[dict | None] = contextvars.ContextVar("templates_read_once", default=None)


@contextlib.contextmanager
def read_once():
    """Within it, each template directory is read once: a catalog load asks about a template for
    every image built from it (100 times each in a 1,000-image catalog on 20 templates, 0.6 s)."""
    token = _ONCE.set({})
    try:
        yield
    finally:
        _ONCE.reset(token)


def _once(kind: str, template_dir: Path, compute):
    memo = _ONCE.get()
    if memo is None:
        return compute()
    key = (kind, str(template_dir))
    if key not in memo:
        memo[key] = compute()
    return memo[key]


def declared_variables(template_dir: Path) -> dict[str, Variable]:
    """Variables the template declares. Parsing HCL costs ~0.1 s a file and every code-location
    load needs it, so results are cached on disk by the digest of the files' contents."""
    return _once("declared", template_dir, lambda: _read(template_dir)[0])


def sources(template_dir: Path) -> list[str]:
    """The template's sources, as "type.name" (e.g. "amazon-ebs.aws")."""
    return list(_once("sources", template_dir, lambda: _read(template_dir)[1]))


def needs_machine(template_dir: Path, source: str) -> bool:
    """Whether the source (as target_source names it) connects to its instance: any communicator
    but a literal "none"."""
    communicators = _once("sources", template_dir, lambda: _read(template_dir)[1])
    found = [c for name, c in communicators.items() if source == name or source.endswith("." + name)]
    return not found or found[0] != "none"


# The kind of source each target builds: one per template, whatever its name.
SOURCE_KINDS = {"sandbox": "amazon-ebs", "aws": "amazon-ebs", "local": "docker"}


def target_source(template_dir: Path, target: str) -> str:
    """The one source of the template the target builds, as `packer build -only` names it: its
    amazon-ebs source on the sandbox and on AWS alike, its docker source on the local target.
    packer 1.6.6 names a source of a named build "<build>.<source>" (`-only=<source>` matches
    nothing there, builds nothing and exits 0), so such a source goes by that name."""
    kind = SOURCE_KINDS[target]
    found = [s for s in sources(template_dir) if s.partition(".")[0] == kind]
    if len(found) != 1:
        have = ", ".join(sources(template_dir)) or "none"
        raise TemplateError(f"{template_dir}: target {target!r} builds the template's one {kind!r} source; "
                            f"it has {len(found) or 'no'} {kind!r} sources (sources: {have})")
    return _once("only", template_dir, lambda: _read(template_dir)[2]).get(found[0], found[0])


def _read(template_dir: Path) -> tuple[dict[str, Variable], dict[str, str], dict[str, str]]:
    files = template_files(Path(template_dir).resolve())
    digest = hashlib.sha256(b"".join(p.read_bytes() + b"\0" for p in files)).hexdigest()
    if digest in _memo:
        return _memo[digest]
    cached = _cache_dir() / f"{digest}.v6.json"  # v6: variables with their type, sources with communicator, -only names
    try:
        doc = json.loads(cached.read_text())
        found = {v["name"]: Variable(**v) for v in doc["variables"]}, dict(doc["sources"]), dict(doc["only"])
    except (OSError, ValueError, TypeError, KeyError):
        found = _parse(files)
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"variables": [asdict(v) for v in found[0].values()], "sources": found[1],
                                       "only": found[2]}))
            tmp.replace(cached)
        except OSError:
            pass  # a read-only home only costs the parse next time
    _memo[digest] = found
    return found


_memo: dict[str, tuple[dict[str, Variable], dict[str, str], dict[str, str]]] = {}


def content_digest(path: Path) -> str:
    """sha256 over relative paths and bytes of every file under `path` (or of the file itself),
    symlinks followed, git metadata left out: what a build can read there, and nothing else."""
    path = Path(path).resolve()
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and ".git" not in p.relative_to(path).parts)
    for file in files:
        digest.update(f"{file.relative_to(path) if file != path else file.name}\0".encode())
        digest.update(file.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


_CONTENT_INDEX = re.compile(r'var\.content_dirs\[\s*"([^"]+)"\s*\]')


def content_names(template_dir: Path) -> set[str]:
    """Content names the template requires (`var.content_dirs["name"]`); a `lookup` is optional."""
    return _once("content", template_dir, lambda: {m for path in template_files(Path(template_dir)) for m in _CONTENT_INDEX.findall(path.read_text())})



def var_file_variables(path: Path) -> set[str]:
    """The variables a var-file sets (JSON when its name ends in .json, else HCL: as packer reads it)."""
    path = Path(path)
    try:
        if path.name.endswith(".json"):
            doc = json.loads(path.read_text())
            if not isinstance(doc, dict):
                raise TemplateError(f"{path}: a JSON var-file holds one object (variable name -> value)")
            return set(doc)
        import hcl2

        with path.open() as handle:
            return {name for name in hcl2.load(handle) if not name.startswith("__")}
    except TemplateError:
        raise
    except (OSError, ValueError) as exc:
        raise TemplateError(f"{path}: {exc}") from None
    except Exception as exc:  # python-hcl2 raises lark errors of several kinds
        raise TemplateError(f"{_where(path, exc)}: cannot parse HCL: {_problem(exc)}") from None
