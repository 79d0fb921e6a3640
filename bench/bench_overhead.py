"""Orchestration overhead per layer, measured in one run.

A 4-layer chain (global -> product -> service -> service) built through `dagster asset
materialize`, minus the same 4 builds run directly (build.build_image, the same packer calls),
divided by 4. Each round uses fresh image names so every build runs packer for real. Both
executors are measured: the default multiprocess (forkserver) one and in_process.

    python bench/bench_overhead.py [--rounds N]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from image_assets import build as buildmod  # noqa: E402
from image_assets import sandbox  # noqa: E402
from image_assets.catalog import VendorQuery, load_catalog  # noqa: E402
from image_assets.packer import PackerCli  # noqa: E402
from image_assets.stores.ec2 import Ec2Store  # noqa: E402

LAYERS = ["global", "product", "service", "service"]


def write_chain(dest: Path, prefix: str) -> tuple[Path, list[str]]:
    names = [f"{prefix}-{i}-{layer}" for i, layer in enumerate(LAYERS)]
    images = {"al2023": {"layer": "vendor", "vendor": {"owners": ["amazon"], "name": "al2023-ami-2023.*-kernel-6.1-x86_64"}}}
    parent = "al2023"
    for name, layer in zip(names, LAYERS):
        images[name] = {"layer": layer, "parent": parent, "template": str(PROJECT / "packer/aws/linux")}
        parent = name
    path = dest / f"{prefix}.yaml"
    path.write_text(yaml.safe_dump({"defaults": {"target": "sandbox"}, "images": images}))
    return path, names


def direct(dest: Path) -> float:
    path, names = write_chain(dest, "d" + uuid.uuid4().hex[:6])
    catalog = load_catalog(path)
    store = Ec2Store("sandbox", catalog.defaults.region)
    vendor = store.newest_vendor_image(VendorQuery(owners=["amazon"], name="al2023-ami-2023.*-kernel-6.1-x86_64")).id
    parent = buildmod.Parent(vendor, vendor)
    run_id = str(uuid.uuid4())
    start = time.monotonic()
    for name in names:
        built = buildmod.build_image(catalog, name, parent, run_id, PackerCli(), log=lambda *_: None)
        assert not built.reused
        parent = buildmod.Parent(built.image_id, vendor)
    return time.monotonic() - start


def through_dagster(dest: Path, home: Path, executor: str) -> float:
    path, names = write_chain(dest, "g" + uuid.uuid4().hex[:6])
    env = {**os.environ, "DAGSTER_HOME": str(home), "IMAGE_ASSETS_CATALOG": str(path), "IMAGE_ASSETS_EXECUTOR": executor}
    cmd = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "definitions",
           "--working-directory", str(PROJECT), "--select", "al2023," + ",".join(names)]
    # The vendor lookup is one step too; pin it first so the timed run is the 4 built layers.
    subprocess.run(cmd[:-1] + ["al2023"], env=env, capture_output=True, check=True)
    start = time.monotonic()
    done = subprocess.run(cmd[:-1] + [",".join(names)], env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - start
    if done.returncode != 0:
        sys.exit(f"dagster run failed:\n{done.stderr[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    sandbox.ensure_running()
    tmp = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    os.environ["IMAGE_ASSETS_WORK_DIR"] = str(tmp / "work")
    home = tmp / "home"
    home.mkdir()
    results = {"direct": [], "multiprocess": [], "in_process": []}
    try:
        for _ in range(args.rounds):  # interleaved so machine noise hits every variant alike
            results["direct"].append(direct(tmp))
            for executor in ("multiprocess", "in_process"):
                results[executor].append(through_dagster(tmp, home, executor))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = statistics.median(results["direct"])
    print(f"4 packer builds run directly: {base:.2f} s (median of {args.rounds})")
    for executor in ("multiprocess", "in_process"):
        total = statistics.median(results[executor])
        print(f"dagster asset materialize, {executor:12s}: {total:.2f} s; overhead per layer "
              f"{(total - base) / len(LAYERS):.2f} s; ratio to direct {total / base:.2f}x")


if __name__ == "__main__":
    main()
