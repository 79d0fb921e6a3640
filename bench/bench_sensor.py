"""One git_tag_sensor tick over 200 local repositories, in seconds and as a share of the 60 s tick limit.

Run: python bench/bench_sensor.py   (makes everything in a temp dir, prints plain lines)
"""

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from image_assets.orchestration import sensors  # noqa: E402
from image_assets.catalog import load_catalog  # noqa: E402
from image_assets.orchestration.defs import build_defs  # noqa: E402

REPOS = 200
TAGGED = 10
TICK_LIMIT = 60.0  # Dagster's default sensor tick timeout (DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS)
GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid", "-c", "init.defaultBranch=main",
       "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"]
VARIABLES = "".join(f'variable "{v}" {{\n  type = string\n  default = ""\n}}\n'
                    for v in ("image_name", "image_version", "source_image_id", "region", "sandbox_endpoint"))
VARIABLES += 'variable "tags" {\n  type = map(string)\n  default = {}\n}\n'


def git(*args, cwd=None):
    subprocess.run([*GIT, *args], cwd=cwd, check=True, capture_output=True)


def make_repos(root: Path) -> list[Path]:
    """A source repo with three tagged releases, cloned bare 200 times (as CI would have pushed them)."""
    src = root / "src"
    git("init", "-q", str(src))
    for n, tag in enumerate(["v1.0.0", "v1.1.0", "v1.2.0"]):
        (src / "file").write_text(str(n))
        git("add", "file", cwd=src)
        git("commit", "-q", "-m", tag, cwd=src)
        git("tag", "-a", "-m", tag, tag, cwd=src)
    bares = [root / "remotes" / f"repo-{i:03d}.git" for i in range(REPOS)]
    for bare in bares:
        git("clone", "-q", "--bare", str(src), str(bare))
    return bares


def write_catalog(root: Path, bares: list[Path]) -> Path:
    """A vendor image, one global on repo-000, and one service per other repo."""
    (root / "templates" / "linux").mkdir(parents=True)
    (root / "templates" / "linux" / "variables.pkr.hcl").write_text(VARIABLES)
    images = {"base": {"layer": "vendor", "vendor": {"owners": ["amazon"], "name": "al2023-*"}},
              "global-linux": {"layer": "global", "parent": "base", "template": "templates/linux",
                               "repos": [bares[0].stem]}}
    for bare in bares[1:]:
        images[f"svc-{bare.stem}"] = {"layer": "service", "parent": "global-linux",
                                      "template": "templates/linux", "repos": [bare.stem]}
    doc = {"defaults": {"target": "sandbox"},
           "repos": {bare.stem: {"url": str(bare), "tags": "v*"} for bare in bares}, "images": images}
    path = root / "images.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def timed_tick(defs, instance, cursor):
    start = time.perf_counter()
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    result = defs.resolve_sensor_def("git_tag_sensor").evaluate_tick(ctx)
    return time.perf_counter() - start, result


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "home").mkdir()
        bares = make_repos(root)
        defs = build_defs(load_catalog(write_catalog(root, bares)))
        with dg.instance_for_test(temp_dir=str(root / "home")) as instance:
            print(f"repos: {REPOS} local bare repositories, 3 tags each; "
                  f"up to {sensors.MAX_WORKERS} git ls-remote in parallel")
            seconds, first = timed_tick(defs, instance, None)
            assert not first.run_requests
            print(f"tick 1 (baseline, nothing requested): {seconds:.2f} s = "
                  f"{seconds / TICK_LIMIT:.1%} of Dagster's {TICK_LIMIT:.0f} s tick limit")

            src = root / "src"
            (src / "file").write_text("next")
            git("commit", "-q", "-am", "next", cwd=src)
            git("tag", "-a", "-m", "v1.3.0", "v1.3.0", cwd=src)
            for bare in bares[1:TAGGED + 1]:
                git("push", "-q", str(bare), "refs/tags/v1.3.0", cwd=src)
            seconds, second = timed_tick(defs, instance, first.cursor)
            images = len(second.run_requests[0].asset_selection)
            print(f"tick 2 ({TAGGED} repos tagged -> {len(second.run_requests)} run of {images} images): "
                  f"{seconds:.2f} s = {seconds / TICK_LIMIT:.1%} of Dagster's {TICK_LIMIT:.0f} s tick limit")


if __name__ == "__main__":
    main()
