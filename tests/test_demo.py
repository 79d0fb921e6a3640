"""bin/demo's terminal lines: a real `dagster asset materialize` of the demo tree on the sandbox,
piped as bin/demo pipes it, through `python -m image_assets.demo progress`."""

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import PROJECT, write_demo_catalog
from image_assets.catalog import load_catalog
from image_assets.demo import EVENT_LINE

BIN = Path(sys.executable).parent


def progress(text: str, env: dict) -> list[str]:
    done = subprocess.run([sys.executable, "-m", "image_assets.demo", "progress"], input=text, capture_output=True,
                          text=True, env=env, cwd=PROJECT, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def done_lines(lines: list[str]) -> dict[str, int]:
    """Image name -> how many "done" lines it got."""
    counts: dict[str, int] = {}
    for line in lines:
        match = re.fullmatch(r"  (\S+) +done in [0-9.]+m?s", line)
        assert match, f"not a progress line: {line!r}"
        counts[match[1]] = counts.get(match[1], 0) + 1
    return counts


def test_every_built_image_gets_its_line(tmp_path, work_dir):
    catalog_path = write_demo_catalog(tmp_path / "project")
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "IMAGE_ASSETS_CATALOG": str(catalog_path)}
    log = tmp_path / "sandbox.log"
    # bin/demo's pipeline, word for word but for the paths.
    piped = subprocess.run(["bash", "-o", "pipefail", "-c",
                            f"{BIN}/dagster asset materialize -m definitions --select '*' 2>&1 | tee {log} "
                            f"| {sys.executable} -m image_assets.demo progress"],
                           capture_output=True, text=True, env=env, cwd=PROJECT, timeout=600)
    assert piped.returncode == 0, piped.stdout + piped.stderr
    raw = log.read_text()
    assert "amazon-ebs.sandbox:" in raw  # packer's own output, between Dagster's lines
    names = list(load_catalog(catalog_path).images)
    assert done_lines(piped.stdout.splitlines()) == {name: 1 for name in names}, piped.stdout

    # Dagster mirrors a step's own lines to the output through a `tail -F` it stops when the step
    # ends, so a loaded machine loses a step's last lines (STEP_SUCCESS among them). The worst case
    # of that: only the run's parent process's lines reach the output, none of a step's.
    start = next(m for m in map(EVENT_LINE.search, raw.splitlines()) if m and m["event"] == "RUN_START")
    parent = f" - {start['run']} - {start['pid']} - "
    parents_only = "".join(line for line in raw.splitlines(keepends=True) if parent in line)
    assert "STEP_SUCCESS" not in parents_only and "RUN_SUCCESS" in parents_only
    assert done_lines(progress(parents_only, env)) == {name: 1 for name in names}
