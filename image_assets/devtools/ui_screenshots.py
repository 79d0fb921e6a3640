"""The Dagster UI checked as a person sees it: headless Chromium screenshots of the demo tree.

`bin/ui-screenshots [OUT_DIR]` (or `python -m image_assets.devtools.ui_screenshots`): builds the demo tree on
the sandbox unless DAGSTER_HOME's instance has it, starts `dagster dev` on a free port, takes a
screenshot of each page below into OUT_DIR (docs/screenshots) and fails when a page's text lacks
what it must show (read from Chromium's --dump-dom). Every process it started is stopped.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from image_assets import checks, sandbox
from image_assets.devtools import demo
from image_assets.catalog import Catalog, load_catalog
from image_assets.orchestration.records import latest_metadata

PROJECT = demo.PROJECT
DAGSTER = str(Path(sys.executable).parent / "dagster")
SERVICE = "service-urllib3"  # the service image whose page and checks are shown
GROUPS = ("vendor", "global", "product", "service")
# Lineage (/asset-groups) opens with the layer groups collapsed; ?expanded= opens them. A group's id
# is "global@global:<group>" while Dagster's per-code-location groups flag is off (its default).
LINEAGE = "/asset-groups?expanded=" + ",".join(f"global@global:{g}" for g in GROUPS)
WINDOW = (1600, 1000)
BUDGET_MS = 15000  # virtual time for the page's GraphQL queries and the graph layout to settle


@dataclass
class Page:
    name: str  # the screenshot's file stem
    path: str
    expected: list[str]  # texts the page must show
    window: tuple[int, int] = WINDOW


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(home: Path, catalog_path: Path) -> dict[str, str]:
    return {**os.environ, "DAGSTER_HOME": str(home), "IMAGE_ASSETS_CATALOG": str(catalog_path)}


def ensure_built(home: Path, catalog_path: Path) -> bool:
    """Build the catalog's tree as bin/demo does (`dagster asset materialize --select '*'`) unless
    every image has a materialization in the instance; True if it built."""
    catalog = load_catalog(catalog_path)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        if all(latest_metadata(instance, name) for name in catalog.images):
            return False
    cmd = [DAGSTER, "asset", "materialize", "-m", "definitions", "--working-directory", str(PROJECT),
           "--select", "*"]
    done = subprocess.run(cmd, env=_env(home, catalog_path), capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"building the demo tree failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return True


def graphql(base: str, query: str, timeout: float = 10) -> dict:
    request = urllib.request.Request(f"{base}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group (dagster dev's webserver, daemon and code servers), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)  # start_new_session: pgid == pid
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        try:  # the leader is gone; children of the group may still be exiting
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                os.killpg(proc.pid, 0)
                time.sleep(0.2)
        except ProcessLookupError:
            return


@contextmanager
def dagster_dev(home: Path, catalog_path: Path, log: Path, port: int | None = None, timeout: float = 180):
    """`dagster dev` (webserver, daemon, code server) on the instance; yields (the UI's base URL, its
    process group) once the code location has loaded its assets. The whole group is stopped at the end."""
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen([DAGSTER, "dev", "-m", "definitions", "--working-directory", str(PROJECT),
                                 "-h", "127.0.0.1", "-p", str(port)], cwd=PROJECT, env=_env(home, catalog_path),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"dagster dev exited ({proc.returncode}); log {log}")
            try:
                if graphql(base, "{ assetNodes { id } }").get("data", {}).get("assetNodes"):
                    break
            except OSError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise RuntimeError(f"dagster dev did not answer on {base} within {timeout:.0f} s; log {log}")
            time.sleep(1)
        yield base, proc.pid
    finally:
        _stop_group(proc)


def _chromium(*args: str, window: tuple[int, int], timeout: float = 120) -> str:
    """One headless Chromium run with a profile of its own (so no view state persists between pages)."""
    with tempfile.TemporaryDirectory(prefix="ui-chromium-") as profile:
        cmd = [chromium() or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--window-size={window[0]},{window[1]}", f"--virtual-time-budget={BUDGET_MS}",
               f"--user-data-dir={profile}", *args]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc.returncode != 0:
            raise RuntimeError(f"chromium {' '.join(args)} exited {proc.returncode}")
        return out


def page_text(dom: str) -> str:
    """The visible text of a dumped DOM: no scripts or styles, tags dropped, whitespace collapsed."""
    dom = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", dom)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", dom)).split())


def text_of(url: str, window: tuple[int, int] = WINDOW) -> str:
    """The page's visible text once its queries and layout have settled (Chromium's --dump-dom)."""
    return page_text(_chromium("--dump-dom", url, window=window))


def capture(url: str, png: Path, window: tuple[int, int] = WINDOW) -> str:
    """A screenshot of the page into `png`, and the page's text."""
    _chromium(f"--screenshot={png}", url, window=window)
    if not png.is_file():
        raise RuntimeError(f"chromium wrote no screenshot of {url}")
    return text_of(url, window)


def shown(expected: str, text: str) -> bool:
    """The graph truncates long names in the middle ("service-ss…-banner")."""
    return expected in text or (len(expected) > 16 and f"{expected[:10]}…" in text and expected[-6:] in text)


def pages(catalog: Catalog, meta: dict) -> list[Page]:
    """What a platform engineer looks for on each page, from the catalog and the image's metadata."""
    image, chain = catalog.images[SERVICE], catalog.chain(SERVICE)
    names = list(checks.image_checks(catalog, SERVICE))
    refs = [*meta["git_refs"], *(ref.split("@")[0] for ref in meta["git_refs"].values())]  # repos, tags
    return [
        # Taller: the expanded groups fit the width, and the whole tree then needs 1200 px.
        Page("lineage", LINEAGE, [*GROUPS, *catalog.images], (1600, 1200)),
        # Taller, so the whole metadata table and the parent's link (Upstream assets) are on it.
        Page("asset", f"/assets/{SERVICE}", [meta["image_id"], meta["parent_image_id"], meta["root_image_id"],
                                             image.parent, "git_refs", "lineage", *refs], (1600, 1560)),
        # The image's chain down from its vendor image, each in its layer, with kinds and checks.
        Page("asset-lineage", f"/assets/{SERVICE}?view=lineage&lineageScope=upstream&lineageDepth={len(chain) - 1}",
             [*chain, f"{len(names)} / {len(names)} Passed"]),
        Page("checks", f"/assets/{SERVICE}?view=checks", names),
        Page("sensors", "/automation", ["git_tag_sensor", "vendor_image_sensor"]),
        # Its description, latest tick and cursor: the tags the sensor saw in each repo.
        Page("git-tag-sensor", "/locations/definitions/sensors/git_tag_sensor",
             ["records a baseline", "Latest tick", "Cursor", *catalog.repos]),
    ]


def wait_for_tick(base: str, sensor: str, timeout: float = 120) -> None:
    """Until the daemon has evaluated the sensor once, so its page shows a tick and its cursor."""
    query = ('{ sensorOrError(sensorSelector: {repositoryLocationName: "definitions", repositoryName: '
             f'"__repository__", sensorName: "{sensor}"}}) {{ ... on Sensor {{ sensorState {{ ticks(limit: 1) '
             '{ status } } } } }')
    deadline = time.monotonic() + timeout
    while not (graphql(base, query)["data"]["sensorOrError"].get("sensorState") or {}).get("ticks"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the daemon did not evaluate {sensor} within {timeout:.0f} s")
        time.sleep(2)


def take(base: str, out_dir: Path, catalog: Catalog, meta: dict) -> dict[str, tuple[Path, str, list[str]]]:
    """Screenshot every page into out_dir; name -> (png, page text, expected texts it lacks)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    wait_for_tick(base, "git_tag_sensor")
    result = {}
    for page in pages(catalog, meta):
        png = out_dir / f"{page.name}.png"
        text = capture(base + page.path, png, page.window)
        result[page.name] = (png, text, [e for e in page.expected if not shown(e, text)])
    return result


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out_dir = Path(args[0]) if args else PROJECT / "docs" / "screenshots"
    if not chromium():
        print("ui-screenshots: chromium not found (apt-get install -y chromium)", file=sys.stderr)
        return 2
    # As bin/demo: the demo repos, DAGSTER_HOME with the shipped dagster.yaml, the sandbox.
    home = Path(os.environ.get("DAGSTER_HOME") or PROJECT / ".dagster_home")
    catalog_path = Path(os.environ.get("IMAGE_ASSETS_CATALOG") or PROJECT / "images.yaml")
    demo.create_demo_repos()
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copy(PROJECT / "dagster.yaml", home / "dagster.yaml")
    started_sandbox = not sandbox.is_running()
    try:
        sandbox.start()
        if ensure_built(home, catalog_path):
            print(f"ui-screenshots: built the demo tree in {home}")
        catalog = load_catalog(catalog_path)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            meta = latest_metadata(instance, SERVICE)
        log = PROJECT / ".work" / "ui-screenshots-dagster-dev.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with dagster_dev(home, catalog_path, log) as (base, _):
            shots = take(base, out_dir, catalog, meta)
    finally:
        if started_sandbox:
            sandbox.stop()
    failed = False
    for name, (png, _, missing) in shots.items():
        print(f"{png} ({png.stat().st_size // 1024} KiB)" + (f": MISSING {missing}" if missing else ""))
        failed = failed or bool(missing)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
