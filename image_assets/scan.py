"""OpenSCAP scan of an image: unpack its filesystem through its store, scan the tree offline, count
the results.

The tree is scanned as the machine it will become (the store leaves out `/.dockerenv`), and
APT_CONFIG points at a config without the host's apt.conf and parts (the host's docker-clean setting otherwise breaks oscap's dpkginfo probe: "dpkginfo_init has failed",
every "package installed" rule fails and temp files land in the scanned tree).
CLI: `python -m image_assets.scan IMAGE [--profile standard] [--tailoring FILE] [--report-dir DIR] [--json]`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

from image_assets import dockerd, stores
from image_assets.errors import StoreError
from image_assets.stores import Store

CONTENT = Path("/usr/share/xml/scap/ssg/content/ssg-debian11-ds.xml")  # Debian 11: the newest with content
PROFILE_PREFIX = "xccdf_org.ssgproject.content_profile_"
XCCDF = "{http://checklists.nist.gov/xccdf/1.2}"


@dataclass
class ScanResult:
    image: str
    profile: str
    content: str
    content_version: str
    passed: int
    failed: int
    notapplicable: int
    other: dict = field(default_factory=dict)  # notchecked, error, unknown, ... (notselected left out)
    rules: dict = field(default_factory=dict)  # rule id -> result
    report: str = ""
    seconds: float = 0.0

    @property
    def ratio(self) -> float:
        return self.passed / (self.passed + self.failed) if self.passed + self.failed else 0.0


def profile_id(profile: str, tailoring: Path | None = None) -> str:
    """The XCCDF id of a profile given by its short name: one the tailoring file defines
    (`xccdf_<namespace>_profile_<name>`), else the SCAP Security Guide's."""
    if profile.startswith("xccdf_"):
        return profile
    if tailoring:
        ids = [p.get("id", "") for p in ET.parse(tailoring).getroot().iter(f"{XCCDF}Profile")]
        found = [i for i in ids if i.endswith(f"_profile_{profile}")]
        if found:
            return found[0]
    return PROFILE_PREFIX + profile


def scan_tree(tree: Path, profile: str = "standard", report: Path | None = None,
              content: Path = CONTENT, image: str = "", tailoring: Path | None = None) -> ScanResult:
    xccdf_profile = profile_id(profile, tailoring)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="oscap-") as tmp:
        empty = Path(tmp) / "apt-parts"
        empty.mkdir()
        apt_config = Path(tmp) / "apt.conf"
        apt_config.write_text(f'Dir::Etc::main "/dev/null";\nDir::Etc::Parts "{empty}";\n')
        results = Path(tmp) / "results.xml"
        args = ["oscap", "xccdf", "eval", "--profile", xccdf_profile, "--results", str(results)]
        if tailoring:
            args += ["--tailoring-file", str(tailoring)]
        if report:
            report.parent.mkdir(parents=True, exist_ok=True)
            args += ["--report", str(report)]
        env = dict(os.environ, OSCAP_PROBE_ROOT=str(tree), APT_CONFIG=str(apt_config))
        try:
            done = subprocess.run([*args, str(content)], capture_output=True, text=True, env=env, timeout=600)
        except FileNotFoundError:
            raise RuntimeError("no oscap: apt-get install openscap-scanner ssg-debian (bin/setup does)") from None
        # oscap: 0 all passed, 2 some rule failed, anything else an error.
        if done.returncode not in (0, 2) or not results.exists():
            raise RuntimeError(f"oscap failed ({done.returncode}): {done.stderr.strip()[-1000:]}")
        root = ET.parse(results).getroot()
    version = root.findtext(f"{XCCDF}version") or "?"
    rules = {r.get("idref"): r.findtext(f"{XCCDF}result") for r in root.iter(f"{XCCDF}rule-result")}
    counts: dict[str, int] = {}
    for result in rules.values():
        counts[result] = counts.get(result, 0) + 1
    counts.pop("notselected", None)
    return ScanResult(image=image, profile=xccdf_profile, content=str(content), content_version=version,
                      passed=counts.pop("pass", 0), failed=counts.pop("fail", 0),
                      notapplicable=counts.pop("notapplicable", 0), other=counts,
                      rules={k: v for k, v in rules.items() if v != "notselected"},
                      report=str(report or ""), seconds=round(time.monotonic() - started, 2))


def scan_image(store: Store, image_id: str, profile: str = "standard", tailoring: Path | None = None,
               report_dir: Path | None = None) -> ScanResult:
    """Unpack the image through its store, scan it, keep the HTML report in report_dir (default:
    the state dir's scans/). An image id names fixed content, so a scan is kept beside its report
    and reused for the same image, profile, tailoring and SCAP content (a child's check compares
    with its parent's scan)."""
    report_dir = report_dir or dockerd.state_dir() / "scans"
    report_dir.mkdir(parents=True, exist_ok=True)
    inputs = hashlib.sha256(f"{profile}\0{CONTENT.stat().st_size}:{CONTENT.stat().st_mtime_ns}".encode())
    if tailoring:
        inputs.update(Path(tailoring).read_bytes())
    stem = f"{image_id.split(':')[-1][:12]}-{profile}-{inputs.hexdigest()[:8]}"
    saved = report_dir / f"{stem}.json"
    try:
        return ScanResult(**json.loads(saved.read_text()))
    except (OSError, ValueError, TypeError):
        pass
    with tempfile.TemporaryDirectory(dir=report_dir, prefix="export-") as tmp:
        tree = store.export_filesystem(image_id, Path(tmp) / "root")
        result = scan_tree(tree, profile, report_dir / f"{stem}.html", image=image_id, tailoring=tailoring)
    tmp_saved = saved.with_suffix(".tmp")
    tmp_saved.write_text(json.dumps(asdict(result)))
    tmp_saved.replace(saved)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m image_assets.scan")
    parser.add_argument("image")
    parser.add_argument("--profile", default="standard")
    parser.add_argument("--report-dir", type=Path, default=None)
    parser.add_argument("--tailoring", type=Path, default=None, help="an XCCDF tailoring file (its profile by short name)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        store = stores.connect("local", "local")
        image = store.get(args.image)
        if image is None:
            raise RuntimeError(f"no image {args.image} in {store.where}")
        result = scan_image(store, image.id, args.profile, args.tailoring, args.report_dir)
    except (RuntimeError, StoreError, subprocess.TimeoutExpired) as exc:
        print(f"scan: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({**asdict(result), "ratio": result.ratio}, indent=2))
    else:
        print(f"{args.image}: {result.passed} pass / {result.failed} fail / {result.notapplicable} notapplicable"
              f"{''.join(f' / {n} {k}' for k, n in result.other.items())} (ratio {result.ratio:.2f}; "
              f"{result.profile}, ssg {result.content_version}; {result.seconds:.1f} s); report {result.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
