"""The tiers themselves: the fast tier's guard refuses packer, the sandbox, docker and PostgreSQL, in this
process and in its children; a missing docker skips outside CI and fails the run in CI."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PROJECT
from image_assets import stores
from unit.conftest import TierViolation


@pytest.mark.parametrize("program", ["packer", "docker", "dockerd", "initdb"])
def test_the_fast_tier_refuses_to_run_a_tool(program):
    with pytest.raises(TierViolation, match=f"{program}.*move this test to tests/"):
        subprocess.run([program, "version"], capture_output=True)
    with pytest.raises(TierViolation):
        subprocess.run([f"/usr/bin/{program}", "version"], capture_output=True)


def test_the_fast_tier_refuses_to_start_the_sandbox_or_dockerd():
    with pytest.raises(TierViolation, match="the sandbox started"):
        stores.connect("sandbox", "us-east-1")
    with pytest.raises(TierViolation, match="dockerd started"):
        from image_assets import dockerd
        dockerd.start()


def test_a_child_process_of_the_fast_tier_can_neither_run_packer_nor_start_a_sandbox():
    child = subprocess.run([sys.executable, "-c", "import subprocess; raise SystemExit(subprocess.run(['packer', 'version']).returncode)"],
                           capture_output=True, text=True)
    assert child.returncode == 97 and "packer started: the fast tier" in child.stderr, child
    child = subprocess.run([sys.executable, "-m", "image_assets.sandbox", "start"], capture_output=True, text=True,
                           cwd=PROJECT)
    assert child.returncode != 0 and "not the moto sandbox" in child.stdout + child.stderr, child


NEEDS_DOCKER = "def test_needs_docker(docker_daemon):\n    pass\n"


def run_with_docker_missing(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    """A pytest session with the suite's fixtures where no docker client or daemon exists."""
    (tmp_path / "test_needs_docker.py").write_text(NEEDS_DOCKER)
    env = {"PYTHONPATH": str(PROJECT / "tests"), "IMAGE_ASSETS_DOCKER": str(tmp_path / "no-docker"),
           "IMAGE_ASSETS_DOCKERD": str(tmp_path / "no-dockerd")}
    if ci is not None:
        env["CI"] = ci
    base = {k: v for k, v in os.environ.items() if k != "CI"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
                           "-rs", str(tmp_path / "test_needs_docker.py")],
                          capture_output=True, text=True, cwd=tmp_path, env={**base, **env}, timeout=300)


def test_a_missing_docker_skips_outside_ci(tmp_path):
    result = run_with_docker_missing(tmp_path, ci=None)
    assert result.returncode == 0 and "1 skipped" in result.stdout, result.stdout + result.stderr
    assert "docker cannot run on this machine" in result.stdout


def test_a_missing_docker_fails_the_run_in_ci(tmp_path):
    result = run_with_docker_missing(tmp_path, ci="true")
    assert result.returncode == 1 and "1 error" in result.stdout, result.stdout + result.stderr
    assert "docker cannot run on this machine" in result.stdout and "CI is set" in result.stdout
