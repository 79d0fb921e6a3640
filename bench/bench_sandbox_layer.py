"""One Linux layer built for real on the sandbox against the same layer on the local target.

Each round builds the layer once on each target, alternating (sandbox, local, sandbox, ...), each
from fresh content (a script carrying a nonce, so nothing is reused) with a small fixed workload.
For each build: packer's total time, its provisioning time (from the first "Provisioning with"
line to the line after the last provisioner: "Stopping the source instance" on amazon-ebs,
"Committing the container" on docker; each line timed as it arrives, since packer's own
machine-readable timestamps are whole seconds), and the overhead = total - provisioning. Also the
addresses packer's SSH communicator connected to on the sandbox, from packer's log.

The sandbox is one of its own (a free port; state in a temp dir unless IMAGE_ASSETS_STATE_DIR is set), stopped and forgotten at the end.

    python bench/bench_sandbox_layer.py [--rounds N] [--files N] [--port N] [--timeline]
"""

import argparse
import io
import ipaddress
import os
import re
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from image_assets import build as buildmod  # noqa: E402
from image_assets import dockerd, sandbox, stores  # noqa: E402
from image_assets.catalog import VendorQuery, load_catalog  # noqa: E402
from image_assets.packer import PackerCli  # noqa: E402

GOAL_SECONDS = 2.0
VENDORS = {
    "sandbox": ("debian-11", {"owners": ["136693071363"], "name": "debian-11-amd64-*"}),
    "local": ("debian11", {"image": "image-assets/debian11-base"}),
}
# After the last provisioner: the first step that is not provisioning, per source kind.
AFTER_PROVISIONING = ("Stopping the source instance", "Committing the container")
# Where a build's time goes: each phase ends at the first line after the previous one holding its
# marker ("packer " is the line build_image prints when packer has exited). The first phase starts
# when build_image is called, so it holds the step's own start and packer's.
PHASES = {
    "sandbox": [("start, key pair, security group", "Launching a source AWS instance"),
                ("RunInstances (container, sshd)", "Waiting for instance"),
                ("instance ready, ssh connect", "Provisioning with"),
                ("provisioning", "Stopping the source instance"),
                ("stop, CreateImage (commit), tags", "Terminating the source AWS instance"),
                ("terminate, clean up, exit", "packer ")],
    "local": [("start", "Starting docker container"),
              ("docker run", "Using docker communicator"),
              ("connect", "Provisioning with"),
              ("provisioning", "Committing the container"),
              ("commit", "Killing the container"),
              ("kill, clean up, exit", "packer ")],
}
SSH_ADDRESS = re.compile(r"Using ssh communicator to connect: (\S+)")

# The layer's one script: a fixed workload (files written and read back), with the round's nonce.
WORKLOAD = """#!/bin/sh
set -eu
# nonce {nonce}
mkdir -p /opt/bench
i=0
while [ $i -lt {files} ]; do
  head -c 4096 /dev/urandom > /opt/bench/f$i
  i=$((i + 1))
done
cat /opt/bench/f* | md5sum > /opt/bench/sum
echo {nonce} > /opt/bench/nonce
"""


class Lines(io.TextIOBase):
    """stdout that keeps each line with the time it arrived (packer's echo prints here)."""

    def __init__(self):
        self.lines: list[tuple[float, str]] = []
        self._part = ""

    def write(self, text: str) -> int:
        now = time.monotonic()
        self._part += text
        *done, self._part = self._part.split("\n")
        self.lines.extend((now, line) for line in done)
        return len(text)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_catalog(dest: Path, target: str, nonce: str, files: int) -> tuple[Path, str]:
    scripts = dest / f"scripts-{nonce}"
    scripts.mkdir()
    shutil.copy(PROJECT / "packer/scripts/linux/finalize.sh", scripts)
    (scripts / "workload.sh").write_text(WORKLOAD.format(nonce=nonce, files=files))
    vendor, query = VENDORS[target]
    name = f"bench-layer-{nonce}"
    images = {
        vendor: {"layer": "vendor", "vendor": query},
        name: {"layer": "global", "parent": vendor, "template": str(PROJECT / "packer/aws/linux"),
               "content": {"scripts": str(scripts)}, "variables": {"scripts": ["workload.sh"]}},
    }
    path = dest / f"{target}-{nonce}.yaml"
    path.write_text(yaml.safe_dump({"defaults": {"target": target, "deployment": "bench"}, "images": images}))
    return path, name


def build_once(dest: Path, target: str, files: int) -> dict:
    nonce = uuid.uuid4().hex[:10]
    path, name = write_catalog(dest, target, nonce, files)
    catalog = load_catalog(path)
    query = VENDORS[target][1]
    store = stores.connect(target, catalog.defaults.region)
    vendor = store.newest_vendor_image(VendorQuery(**query)).id
    log_path = dest / f"packer-{target}-{nonce}.log"
    os.environ["PACKER_LOG"], os.environ["PACKER_LOG_PATH"] = "1", str(log_path)
    captured, real_stdout = Lines(), sys.stdout
    sys.stdout = captured
    try:
        started = time.monotonic()
        built = buildmod.build_image(catalog, name, buildmod.Parent(vendor, vendor), str(uuid.uuid4()),
                                     PackerCli(), log=lambda *_: None)
        step = time.monotonic() - started
    finally:
        sys.stdout = real_stdout
    assert not built.reused, f"{target}: {name} was reused"
    lines = captured.lines
    start = next(t for t, text in lines if "Provisioning with" in text)
    end = next(t for t, text in lines if t >= start and any(m in text for m in AFTER_PROVISIONING))
    packer_done = next(float(m.group(1)) for _, text in lines
                       if (m := re.search(r"^packer \S+ built \S+ in ([0-9.]+)s", text)))
    phases, at = {}, started
    for label, marker in PHASES[target]:
        done = next(t for t, text in lines if t >= at and (text.startswith(marker) if marker == "packer " else marker in text))
        phases[label], at = done - at, done
    text = log_path.read_text(errors="replace")
    return {"target": target, "image": built.image_id, "step": step, "total": packer_done,
            "provisioning": end - start, "overhead": packer_done - (end - start), "phases": phases,
            "addresses": SSH_ADDRESS.findall(text), "lines": lines, "t0": started}


def summary(values: list[float]) -> str:
    return f"min {min(values):6.2f}  median {statistics.median(values):6.2f}  max {max(values):6.2f} s"


def timeline(result: dict) -> None:
    """Each packer step line of one build with its time since build_image started."""
    print(f"  {result['target']} build of {result['image']}, packer's steps:")
    for t, text in result["lines"]:
        if text.startswith("==> ") or text.startswith("packer "):
            print(f"    {t - result['t0']:6.2f}  {text[:110]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--files", type=int, default=200, help="4 KiB files the layer's script writes")
    parser.add_argument("--port", type=int, help="the sandbox's port (default: a free one)")
    parser.add_argument("--timeline", action="store_true", help="print each step of the last build per target")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-layer-"))
    port = args.port or free_port()
    os.environ.update({"IMAGE_ASSETS_SANDBOX_PORT": str(port), "IMAGE_ASSETS_WORK_DIR": str(tmp / "work")})
    os.environ.setdefault("IMAGE_ASSETS_STATE_DIR", str(tmp / "state"))
    os.environ.pop("IMAGE_ASSETS_TARGET", None)
    sandbox.ensure_running(port)
    PackerCli().version()  # cached: a `packer version` run later would overwrite a build's PACKER_LOG_PATH
    results: dict[str, list[dict]] = {"sandbox": [], "local": []}
    try:
        for _ in range(args.rounds):  # alternating, so the machine's drift hits both alike
            for target in results:
                results[target].append(build_once(tmp, target, args.files))
    finally:
        sandbox.stop(port, forget=True)
        local = [r["image"] for r in results["local"]]
        if local:
            dockerd.docker("rmi", "-f", *local, check=False, timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"One Linux layer ({args.files} files of 4 KiB written by one script, then finalize.sh), "
          f"{args.rounds} rounds alternating, packer's own times:")
    medians = {}
    for target, runs in results.items():
        for key in ("total", "provisioning", "overhead"):
            values = [r[key] for r in runs]
            medians[target, key] = statistics.median(values)
            print(f"  {target:8s} {key:13s} {summary(values)}")
        print(f"  {target:8s} {'build_image':13s} {summary([r['step'] for r in runs])}")
    for key in ("total", "provisioning", "overhead"):
        print(f"sandbox/local {key:13s} (medians): {medians['sandbox', key] / medians['local', key]:.2f}x")
    overhead = medians["sandbox", "overhead"]
    print(f"sandbox overhead over provisioning: {overhead:.2f} s (median); goal under {GOAL_SECONDS:.0f} s: "
          f"{'met' if overhead < GOAL_SECONDS else 'not met'}")

    for target, runs in results.items():
        print(f"where a {target} build's time goes (medians):")
        for label in runs[0]["phases"]:
            print(f"    {label:34s} {statistics.median(r['phases'][label] for r in runs):5.2f} s")

    addresses = [a for r in results["sandbox"] for a in r["addresses"]]
    print(f"packer's ssh communicator connected to: {', '.join(addresses) or '(none found in its log)'}")
    assert len(addresses) == args.rounds, f"expected one ssh address per sandbox build, found {addresses}"
    for a in addresses:
        assert ipaddress.ip_address(a.rpartition(":")[0] or a) in ipaddress.ip_network("127.0.0.0/8"), \
            f"packer connected to {a}, which is not a loopback address"
    print("every address is in 127.0.0.0/8")
    if args.timeline:
        for runs in results.values():
            timeline(runs[-1])


if __name__ == "__main__":
    main()
