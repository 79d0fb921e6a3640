"""Key paths of a Helm values file, and the check of deploy/helm/values.yaml against a chart's.

A key path names a key from the top: `runLauncher.type`; a list of maps adds `[]`:
`dagster-user-deployments.deployments[].image.repository`. Lists of scalars and empty maps are leaves.

Refresh the chart's key set (the fixture tests/unit/test_helm_values.py reads) from a chart's values.yaml,
e.g. `helm show values dagster/dagster --version V > /tmp/values.yaml`, then:
  python tests/helm_keys.py /tmp/values.yaml "dagster/dagster chart V: helm/dagster/values.yaml of ..." \
    > tests/fixtures/helm/dagster-chart-V-keys.txt
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml


def key_paths(node, prefix: str = "") -> list[str]:
    out: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            out.add(path)
            out.update(key_paths(value, path))
    elif isinstance(node, list):
        for item in node:  # the keys of every item: the chart's example item shows the shape
            if isinstance(item, dict):
                out.update(key_paths(item, prefix + "[]"))
    return sorted(out)


def read_keys(path: Path) -> set[str]:
    return {line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")}


def unknown_paths(values: dict, chart_keys: set[str], open_maps: set[str]) -> list[str]:
    """Paths of `values` the chart does not define, outermost only (a typo's children are not listed).
    Anything under a chart key whose last name is in `open_maps` is allowed."""
    bad: list[str] = []
    for path in key_paths(values):
        if path in chart_keys or any(path.startswith(b + ".") or path.startswith(b + "[]") for b in bad):
            continue
        parts = path.split(".")
        parents = (".".join(parts[:i]).removesuffix("[]") for i in range(1, len(parts)))
        if any(p in chart_keys and p.rsplit(".", 1)[-1] in open_maps for p in parents):
            continue
        bad.append(path)
    return bad


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python tests/helm_keys.py CHART_VALUES_YAML 'CHART VERSION AND SOURCE'", file=sys.stderr)
        return 2
    doc = yaml.safe_load(Path(argv[0]).read_text())
    print(f"# {argv[1]}")
    print("\n".join(key_paths(doc)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
