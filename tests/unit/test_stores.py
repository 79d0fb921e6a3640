"""The store interface: nothing above image_assets/stores imports boto3, botocore or docker (the EC2
store on the sandbox: tests/test_stores.py)."""

import ast
from pathlib import Path

from image_assets import stores

PACKAGE = Path(stores.__file__).resolve().parent.parent
STORE_LIBRARIES = {"boto3", "botocore", "docker"}


def imported_modules(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
    return out


def test_nothing_above_the_store_imports_boto3_or_botocore():
    above = sorted(PACKAGE.glob("*.py")) + [PACKAGE / "stores" / "__init__.py"]
    assert len(above) > 10
    offenders = {path.name: sorted(m for m in imported_modules(path) if m.split(".")[0] in STORE_LIBRARIES)
                 for path in above}
    assert {name: mods for name, mods in offenders.items() if mods} == {}
    # Only the forkserver warm-up names a kind of store: it preloads the EC2 API model.
    kinds = {f"image_assets.stores.{kind}" for kind in stores.KINDS.values()}
    naming = {path.name for path in PACKAGE.glob("*.py")
              if any(m.startswith(tuple(kinds)) for m in imported_modules(path))}
    assert naming <= {"forkserver_warmup.py"}
