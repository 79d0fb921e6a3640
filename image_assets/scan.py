"""OpenSCAP scan of a docker image: export its filesystem, scan the tree offline, count the results.

The tree is scanned as the machine it will become: `/.dockerenv` is removed (with it most rules
report "not applicable"), and APT_CONFIG points at a config without the host's apt.conf and parts
(the host's docker-clean setting otherwise breaks oscap's dpkginfo probe: "dpkginfo_init has failed",
every "package installed" rule fails and temp files land in the scanned tree).
CLI: `python -m image_assets.scan IMAGE [--profile standard] [--report-dir DIR] [--json]`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

from image_assets import dockerd

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


def export_tree(image: str, dest: Path) -> Path:
    """Unpack the image's filesystem into dest (through a created, never started, container)."""
    cid = dockerd.docker("create", image, "true", timeout=60).stdout.strip()
    try:
        dest.mkdir(parents=True, exist_ok=True)
        export = subprocess.Popen([dockerd.docker_bin(), "export", cid], stdout=subprocess.PIPE)
        untar = subprocess.run(["tar", "-x", "-C", str(dest), "--numeric-owner"], stdin=export.stdout,
                               capture_output=True, text=True, timeout=600)
        export.stdout.close()
        if export.wait(timeout=600) != 0 or untar.returncode != 0:
            raise RuntimeError(f"docker export {image} failed: {untar.stderr.strip()[-500:]}")
    finally:
        dockerd.docker("rm", "-f", cid, check=False, timeout=60)
    (dest / ".dockerenv").unlink(missing_ok=True)
    return dest


def scan_tree(tree: Path, profile: str = "standard", report: Path | None = None,
              content: Path = CONTENT, image: str = "") -> ScanResult:
    profile_id = profile if profile.startswith("xccdf_") else PROFILE_PREFIX + profile
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="oscap-") as tmp:
        empty = Path(tmp) / "apt-parts"
        empty.mkdir()
        apt_config = Path(tmp) / "apt.conf"
        apt_config.write_text(f'Dir::Etc::main "/dev/null";\nDir::Etc::Parts "{empty}";\n')
        results = Path(tmp) / "results.xml"
        args = ["oscap", "xccdf", "eval", "--profile", profile_id, "--results", str(results)]
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
    return ScanResult(image=image, profile=profile_id, content=str(content), content_version=version,
                      passed=counts.pop("pass", 0), failed=counts.pop("fail", 0),
                      notapplicable=counts.pop("notapplicable", 0), other=counts,
                      rules={k: v for k, v in rules.items() if v != "notselected"},
                      report=str(report or ""), seconds=round(time.monotonic() - started, 2))


def scan_image(image: str, profile: str = "standard", report_dir: Path | None = None) -> ScanResult:
    """Export the image, scan it, keep the HTML report in report_dir (default: the state dir's scans/)."""
    ref = dockerd.image_id(image)
    if ref is None:
        raise RuntimeError(f"no image {image} in the local docker daemon")
    report_dir = report_dir or dockerd.state_dir() / "scans"
    report = report_dir / f"{ref.split(':')[-1][:12]}-{profile}.html"
    with tempfile.TemporaryDirectory(dir=dockerd.state_dir(), prefix="export-") as tmp:
        tree = export_tree(ref, Path(tmp) / "root")
        return scan_tree(tree, profile, report, image=ref)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m image_assets.scan")
    parser.add_argument("image")
    parser.add_argument("--profile", default="standard")
    parser.add_argument("--report-dir", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        result = scan_image(args.image, args.profile, args.report_dir)
    except (RuntimeError, dockerd.DockerUnavailable, subprocess.TimeoutExpired) as exc:
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
