"""Helpers for the fault suite: a catalog around the fault template, the CLI, sandbox and docker counts."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import sandbox_inventory as inventory  # noqa: F401  (re-exported for the fault tests)

PROJECT = Path(__file__).resolve().parents[2]
# One amazon-ebs source with communicator ssh: on Debian 11 its instance is a container.
TEMPLATE = Path(__file__).resolve().parent / "template"
DAGSTER = str(Path(sys.executable).parent / "dagster")
IMAGE = "fault-image"


VENDORS = {
    "debian-11": {"owners": ["136693071363"], "name": "debian-11-amd64-*"},
}


def write_fault_catalog(dest: Path, variables: dict | None = None, secrets: dict | None = None) -> Path:
    """A two-image catalog: Debian 11 (its instances are containers on the sandbox) and one image built
    from the fault template, whose provisioner runs inside the instance over SSH."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(TEMPLATE, dest / "template", dirs_exist_ok=True)
    image = {"layer": "global", "parent": "debian-11", "template": "template", "variables": variables or {}}
    if secrets:
        image["secrets"] = {var: {"env": env} for var, env in secrets.items()}
    doc = {
        "defaults": {"target": "sandbox", "region": "us-east-1"},
        "images": {"debian-11": {"layer": "vendor", "vendor": VENDORS["debian-11"]}, IMAGE: image},
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


def docker_inventory(port: int | None = None) -> dict[str, set]:
    """What the sandbox on `port` holds in docker: its instances' containers (running or not, by name)
    and the images CreateImage committed (by AMI id)."""
    from image_assets import dockerd, sandbox
    from image_assets.sandbox.instances import COMMITTED_REPO, PORT_LABEL

    port = sandbox.port() if port is None else port
    containers = dockerd.docker("ps", "-a", "--filter", f"label={PORT_LABEL}={port}", "--format", "{{.Names}}",
                                timeout=30).stdout.split()
    committed = dockerd.docker("images", "--filter", f"reference={COMMITTED_REPO}-{port}", "--format", "{{.Tag}}",
                               timeout=30).stdout.split()
    return {"containers": set(containers), "committed": set(committed)}
