"""How long a build takes to fail when the sandbox is down, measured in one run.

Two cases, each on a sandbox of its own (free port, temp state dir), building the fault suite's
SSH template on Debian 11 (the instance is a container) through build.build_image:
  before: the sandbox stopped before the build starts (the parent was built on it); the build starts
          it again (stores.connect) and, since it keeps its images (sandbox_state), builds on the parent;
  during: the sandbox stopped while packer's provisioner runs inside the instance (sleeping 120 s).
Prints the seconds from the stop (during) or the build's start (before) to the build's end, and the
error (or that it succeeded).

    python bench/bench_sandbox_down.py [before|during ...]
"""

import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))
sys.path.insert(0, str(PROJECT / "tests"))
sys.path.insert(0, str(PROJECT / "tests" / "faults"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def case(kind: str, root: Path) -> tuple[float, str]:
    os.environ["IMAGE_ASSETS_SANDBOX_PORT"] = str(free_port())
    os.environ["IMAGE_ASSETS_STATE_DIR"] = str(root / f"state-{kind}")
    os.environ["IMAGE_ASSETS_WORK_DIR"] = str(root / f"work-{kind}")
    from faultkit import IMAGE, VENDORS, write_fault_catalog

    from image_assets import build, sandbox, stores
    from image_assets.catalog import VendorQuery, load_catalog
    from image_assets.packer import PackerCli

    stores.ec2._cached.cache_clear()
    sandbox.start()
    try:
        store = stores.connect("sandbox", "us-east-1")
        vendor = store.newest_vendor_image(VendorQuery(**VENDORS["debian-11"])).id
        parent = build.Parent(vendor, vendor)
        out, stopped = _Tee(), []
        if kind == "before":
            quick = load_catalog(write_fault_catalog(root / "quick", {"sleep_seconds": 0}))
            first = build.build_image(quick, IMAGE, parent, str(uuid.uuid4()), PackerCli(), log=lambda *_: None)
            parent = build.Parent(first.image_id, vendor)
            catalog = load_catalog(write_fault_catalog(root / "child", {"payload": "child"}))
            sandbox.stop()
        else:
            catalog = load_catalog(write_fault_catalog(root / kind, {"sleep_seconds": 120}))

            def stop_mid_build():
                while b"building-now" not in out.getvalue():
                    time.sleep(0.1)
                stopped.append(time.monotonic())
                sandbox.stop()
            threading.Thread(target=stop_mid_build, daemon=True).start()
        started = time.monotonic()
        try:
            with out:
                build.build_image(catalog, IMAGE, parent, str(uuid.uuid4()), PackerCli(), log=lambda *_: None)
        except Exception as exc:  # the failure being measured
            return time.monotonic() - (stopped[0] if stopped else started), f"{type(exc).__name__}: {exc}"
        return time.monotonic() - started, "no failure: the build succeeded"
    finally:
        sandbox.stop(forget=True)  # and the images it kept: nothing of the bench stays in docker


class _Tee:
    """stdout also kept in memory, to see packer's provisioner output as it comes."""

    def __init__(self):
        import io
        self.buf, self.real = io.StringIO(), sys.stdout

    def write(self, text):
        self.buf.write(text)
        return self.real.write(text)

    def flush(self):
        self.real.flush()

    def getvalue(self) -> bytes:
        return self.buf.getvalue().encode()

    def __enter__(self):
        sys.stdout = self
        return self

    def __exit__(self, *exc):
        sys.stdout = self.real


def main() -> None:
    kinds = sys.argv[1:] or ["before", "during"]
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            seconds, message = case(kind, Path(tmp))
            print(f"\nsandbox down {kind} the build: the build ended after {seconds:.1f} s\n  {message[:600]}", flush=True)


if __name__ == "__main__":
    main()
