"""OpenSCAP scan of an image: unpack its filesystem through its store, scan the tree offline, count
the results.

The tree is scanned as the machine it will become (the store leaves out `/.dockerenv`), and
APT_CONFIG points at a config without the host's apt.conf and parts (the host's docker-clean setting otherwise breaks oscap's dpkginfo probe: "dpkginfo_init has failed",
every "package installed" rule fails and temp files land in the scanned tree).
Reports are kept in the directory of the Dagster instance whose check ran the scan (see
instance_report_dir). CLI: `python -m image_assets.scan IMAGE [--profile standard] [--tailoring FILE]
[--report-dir DIR] [--json]`.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

from image_assets import stores
from image_assets.errors import StoreError
from image_assets.stores import Store

CONTENT = Path("/usr/share/xml/scap/ssg/content/ssg-debian11-ds.xml")  # Debian 11: the newest with content
PROFILE_PREFIX = "xccdf_org.ssgproject.content_profile_"
XCCDF = "{http://checklists.nist.gov/xccdf/1.2}"
OVAL = "{http://oval.mitre.org/XMLSchema/oval-definitions-5}"
OVAL_IND = "{http://oval.mitre.org/XMLSchema/oval-definitions-5#independent}"
SSHD_CONFIG = "/etc/ssh/sshd_config"
SCAN_FORMAT = "2"  # part of a kept scan's name: a scan kept by older code lacks fields


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
    # sshd keyword (lower case) -> the drop-ins under sshd_config.d that set it, which the scanner does not read
    sshd_drop_ins: dict = field(default_factory=dict)
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


def instance_report_dir(instance_root: str | Path) -> Path:
    """Where a Dagster instance keeps its scans: in its own directory (DAGSTER_HOME for a kept
    instance), beside the records whose check metadata names the reports. Two instances then never
    share, reuse or overwrite each other's scans, and an instance's scans go with it."""
    return Path(instance_root) / "image-assets" / "scans"


def sshd_drop_ins(tree: Path) -> dict[str, list[str]]:
    """sshd keyword (lower case) -> the drop-ins (`/etc/ssh/sshd_config.d/*.conf`, in sshd's order)
    with an active line setting it. Links leading out of the tree are not followed."""
    root = tree.resolve()
    found: dict[str, list[str]] = {}
    for path in sorted((tree / "etc/ssh/sshd_config.d").glob("*.conf")):
        real = path.resolve()
        if root not in real.parents or not real.is_file():
            continue
        for line in real.read_text(errors="replace").splitlines():
            words = line.split()
            if words and not words[0].startswith("#"):
                files = found.setdefault(words[0].lower(), [])
                if f"/{path.relative_to(tree)}" not in files:
                    files.append(f"/{path.relative_to(tree)}")
    return found


@functools.lru_cache(maxsize=4)
def sshd_config_keywords(content: Path) -> dict[str, str]:
    """Rule id -> the sshd keyword the rule reads, for the content's rules whose OVAL check reads
    /etc/ssh/sshd_config (a textfilecontent54 object on that file; the keyword is the first
    capitalised word of its pattern, e.g. `^[ \\t]*(?i)PermitRootLogin(?-i)[ \\t]+...`)."""
    root = ET.parse(content).getroot()
    by_object = {}
    for obj in root.iter(f"{OVAL_IND}textfilecontent54_object"):
        word = re.search(r"[A-Z][A-Za-z0-9]+", obj.findtext(f"{OVAL_IND}pattern") or "")
        if obj.findtext(f"{OVAL_IND}filepath") == SSHD_CONFIG and word:
            by_object[obj.get("id")] = word.group()
    by_test = {test.get("id"): by_object[ref.get("object_ref")]
               for test in root.iter(f"{OVAL_IND}textfilecontent54_test")
               for ref in test.iter(f"{OVAL_IND}object") if ref.get("object_ref") in by_object}
    by_definition = {}
    for definition in root.iter(f"{OVAL}definition"):
        words = [by_test[c.get("test_ref")] for c in definition.iter(f"{OVAL}criterion") if c.get("test_ref") in by_test]
        if words:
            by_definition[definition.get("id")] = words[0]
    return {rule.get("id"): by_definition[ref.get("name")] for rule in root.iter(f"{XCCDF}Rule")
            for ref in rule.iter(f"{XCCDF}check-content-ref") if ref.get("name") in by_definition}


def drop_in_notes(result: ScanResult, rules: list[str]) -> list[str]:
    """For each rule (full id) that reads sshd_config only while a drop-in sets the same keyword:
    the scanner's verdict is not sshd's, whose effective setting `sshd -T` reports."""
    keywords = sshd_config_keywords(Path(result.content)) if result.sshd_drop_ins else {}
    notes = []
    for rule in rules:
        keyword = keywords.get(rule)
        files = result.sshd_drop_ins.get(keyword.lower(), []) if keyword else []
        if files:
            notes.append(f"{rule.split('_rule_')[-1]} reads {SSHD_CONFIG} only; {', '.join(files)} "
                         f"{'sets' if len(files) == 1 else 'set'} {keyword} too, and sshd takes the first value it "
                         f"reads: the effective setting is what `sshd -T` reports (check it with an image test)")
    return notes


def scan_image(store: Store, image_id: str, profile: str = "standard", tailoring: Path | None = None, *,
               report_dir: Path) -> ScanResult:
    """Unpack the image through its store, scan it, keep the HTML report in report_dir (a check's:
    its instance's, instance_report_dir). An image id names fixed content, so a scan is kept beside
    its report and reused for the same image, profile, tailoring and SCAP content (a child's check
    compares with its parent's scan)."""
    report_dir.mkdir(parents=True, exist_ok=True)
    inputs = hashlib.sha256(f"{SCAN_FORMAT}\0{profile}\0{CONTENT.stat().st_size}:{CONTENT.stat().st_mtime_ns}".encode())
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
        # Written aside, then moved: two steps may scan one parent at once.
        result = scan_tree(tree, profile, Path(tmp) / "report.html", image=image_id, tailoring=tailoring)
        result.sshd_drop_ins = sshd_drop_ins(tree)
        result.report = str(report_dir / f"{stem}.html")
        Path(tmp, "report.html").replace(result.report)
        Path(tmp, "scan.json").write_text(json.dumps(asdict(result)))
        Path(tmp, "scan.json").replace(saved)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m image_assets.scan")
    parser.add_argument("image")
    parser.add_argument("--profile", default="standard")
    parser.add_argument("--report-dir", type=Path, default=None,
                        help="default: DAGSTER_HOME's scans (as its checks keep them), else IMAGE_ASSETS_STATE_DIR's")
    parser.add_argument("--tailoring", type=Path, default=None, help="an XCCDF tailoring file (its profile by short name)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    home, state = os.environ.get("DAGSTER_HOME"), os.environ.get("IMAGE_ASSETS_STATE_DIR")
    report_dir = args.report_dir or (instance_report_dir(home) if home else Path(state) / "scans" if state else None)
    if report_dir is None:
        print("scan: where to keep the report? pass --report-dir DIR, or set DAGSTER_HOME (the instance's "
              "directory) or IMAGE_ASSETS_STATE_DIR", file=sys.stderr)
        return 2
    try:
        store = stores.connect("local", "local")
        image = store.get(args.image)
        if image is None:
            raise RuntimeError(f"no image {args.image} in {store.where}")
        result = scan_image(store, image.id, args.profile, args.tailoring, report_dir=report_dir)
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
