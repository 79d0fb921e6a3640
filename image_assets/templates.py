"""Reading packer templates: declared variables and the content digest that feeds the fingerprint."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import hcl2

# Provisioning content shared by all templates lives beside the cloud dirs (packer/ansible,
# packer/scripts); a change there must rebuild the images that use it, so it is digested too.
CONTENT_DIRS = ("ansible", "scripts")


class TemplateError(ValueError):
    pass


@dataclass(frozen=True)
class Variable:
    name: str
    sensitive: bool
    has_default: bool


def template_files(template_dir: Path) -> list[Path]:
    files = sorted(template_dir.glob("*.pkr.hcl"))
    if not files:
        raise TemplateError(f"{template_dir}: no *.pkr.hcl files")
    return files


@functools.lru_cache(maxsize=256)
def _declared(template_dir: Path, stamp: tuple) -> dict[str, Variable]:
    found: dict[str, Variable] = {}
    for path in template_files(template_dir):
        try:
            with path.open() as handle:
                doc = hcl2.load(handle)
        except Exception as exc:  # python-hcl2 raises lark errors of several kinds
            raise TemplateError(f"{path}: cannot parse HCL: {exc}") from None
        for block in doc.get("variable", []):
            for raw_name, body in block.items():
                name = raw_name.strip('"')
                found[name] = Variable(name, bool(body.get("sensitive")), "default" in body)
    return found


def declared_variables(template_dir: Path) -> dict[str, Variable]:
    """Variables the template declares; cached per directory until a file changes."""
    template_dir = Path(template_dir).resolve()
    stamp = tuple((p.name, p.stat().st_mtime_ns) for p in template_files(template_dir))
    return _declared(template_dir, stamp)


def content_dirs(template_dir: Path) -> list[Path]:
    """The template directory plus the shared provisioning content it can reach."""
    root = Path(template_dir).resolve().parent.parent
    return [Path(template_dir).resolve()] + [root / d for d in CONTENT_DIRS if (root / d).is_dir()]


def content_digest(template_dir: Path) -> str:
    """sha256 over relative paths and bytes of every file the template can use."""
    digest = hashlib.sha256()
    for base in content_dirs(template_dir):
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            digest.update(f"{base.name}/{path.relative_to(base)}\0".encode())
            digest.update(path.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()
