"""Helpers for the fault suite: a catalog around the fault template, the CLI, sandbox counts."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import sandbox_inventory as inventory  # noqa: F401  (re-exported for the fault tests)

PROJECT = Path(__file__).resolve().parents[2]
TEMPLATE = Path(__file__).resolve().parent / "template"
DAGSTER = str(Path(sys.executable).parent / "dagster")
IMAGE = "fault-image"


def write_fault_catalog(dest: Path, variables: dict | None = None, secrets: dict | None = None) -> Path:
    """A two-image catalog: the sandbox's al2023 and one image built from the fault template."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(TEMPLATE, dest / "template", dirs_exist_ok=True)
    image = {"layer": "global", "parent": "al2023", "template": "template", "variables": variables or {}}
    if secrets:
        image["secrets"] = {var: {"env": env} for var, env in secrets.items()}
    doc = {
        "defaults": {"target": "sandbox", "region": "us-east-1"},
        "images": {
            "al2023": {"layer": "vendor", "vendor": {"owners": ["amazon"], "name": "al2023-ami-2023.*-kernel-6.1-x86_64"}},
            IMAGE: image,
        },
    }
    path = dest / "images.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def cli_env(home: Path, catalog: Path, **extra) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "DAGSTER_HOME": str(home), "IMAGE_ASSETS_CATALOG": str(catalog),
            "IMAGE_ASSETS_EXECUTOR": "in_process", **extra}


def cli_cmd(select: str) -> list[str]:
    return [DAGSTER, "asset", "materialize", "-m", "definitions", "--working-directory", str(PROJECT),
            "--select", select]


def _default_sigint():
    # A background shell starts children with SIGINT ignored; Dagster then ignores SIGTERM too.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_cli(select: str, env: dict, out: Path) -> subprocess.Popen:
    """The CLI in its own process group, output to a file (a pipe nobody reads would block it)."""
    handle = open(out, "wb")
    return subprocess.Popen(cli_cmd(select), env=env, stdin=subprocess.DEVNULL, stdout=handle,
                            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_default_sigint)


def run_cli(select: str, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cli_cmd(select), env=env, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=_default_sigint)


def pids_with_env(key: str, value: str) -> list[int]:
    """Processes (ours: started with this env marker) still alive: dagster, packer, its plugins, sleep."""
    wanted = f"{key}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if wanted in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found
