"""The package's layers: a core that knows nothing of Dagster, one integration package
(image_assets.orchestration) that is the only part of the product importing dagster, and the
development tools (image_assets.devtools) that nothing else imports."""

import ast
import subprocess
import sys
from pathlib import Path

from conftest import PROJECT

PACKAGE = PROJECT / "image_assets"
INTEGRATION = PACKAGE / "orchestration"
DEVTOOLS = PACKAGE / "devtools"
CLI = PACKAGE / "__main__.py"  # an entry point: records lifecycle changes through the integration layer


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _core_modules() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py"))
            if INTEGRATION not in p.parents and DEVTOOLS not in p.parents and p != CLI]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_only_the_integration_package_and_the_dev_tools_import_dagster():
    importers = sorted(str(p.relative_to(PROJECT)) for p in PACKAGE.rglob("*.py")
                       if any(m == "dagster" or m.startswith(("dagster.", "dagster_")) for m in _imports(p)))
    assert importers, "no module imports dagster: the walk is broken"
    outside = [p for p in importers if not p.startswith(("image_assets/orchestration/", "image_assets/devtools/"))
               and p != "image_assets/__main__.py"]
    assert outside == []
    assert len(_core_modules()) >= 25


def test_the_core_imports_neither_the_integration_package_nor_the_dev_tools():
    for path in _core_modules():
        wrong = sorted(m for m in _imports(path) if m.startswith(("image_assets.orchestration", "image_assets.devtools")))
        assert wrong == [], f"{path.relative_to(PROJECT)} imports {wrong}"
    for path in sorted(INTEGRATION.rglob("*.py")):
        wrong = sorted(m for m in _imports(path) if m.startswith("image_assets.devtools"))
        assert wrong == [], f"{path.relative_to(PROJECT)} imports {wrong}"


def test_importing_every_core_module_loads_no_dagster():
    # In a fresh interpreter: what the core pulls in at import, through any chain of imports.
    names = [_module_name(p) for p in _core_modules() if p.name != "__main__.py"]
    code = ("import importlib, sys\n"
            "for name in sys.stdin.read().split():\n"
            "    importlib.import_module(name)\n"
            "loaded = sorted(m for m in sys.modules if m == 'dagster' or m.startswith('dagster.'))\n"
            "print(len(loaded), loaded[:5])\n")
    out = subprocess.run([sys.executable, "-c", code], input="\n".join(names), cwd=PROJECT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0 []", out.stdout
    assert "image_assets.sandbox.server" in names and "image_assets.stores.ec2" in names
