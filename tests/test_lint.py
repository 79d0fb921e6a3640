"""The example CI (.github/workflows/image-repo.yml) passes on the content this project ships.

The lint steps are read out of the workflow and run as GitHub runs a `run:` block (bash -e), from
the project root, so the example and this test cannot drift: every step of the `validate` job but
the checkout and the tool install runs here. The tools come from bin/setup (packer, shellcheck
with apt-get; ansible-lint with the dev extra), which CI runs first, so a missing tool fails, it
never skips.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parent.parent
WORKFLOW = PROJECT / ".github" / "workflows" / "image-repo.yml"
VENV_BIN = Path(sys.executable).parent
INSTALL_STEP = "Install packer, ansible-lint, shellcheck"
INSTALL_HINT = {
    "packer": "bin/setup (apt-get install packer)",
    "shellcheck": "bin/setup (apt-get install shellcheck)",
    "ansible-lint": "bin/setup (pip install -e '.[dev]': ansible-lint is in the dev extra)",
}


def validate_steps() -> list[dict]:
    return yaml.safe_load(WORKFLOW.read_text())["jobs"]["validate"]["steps"]


def lint_steps() -> dict[str, str]:
    """name -> run script of every step of the validate job that is not the checkout or the install."""
    steps = {s["name"]: s["run"] for s in validate_steps() if "run" in s and s.get("name") != INSTALL_STEP}
    assert steps, f"no lint steps found in {WORKFLOW}"
    return steps


def lint_env() -> dict[str, str]:
    # The venv's tools first, as if it were activated (ansible-lint then keeps its cache in the venv).
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               VIRTUAL_ENV=str(VENV_BIN.parent), NO_COLOR="1", ANSIBLE_FORCE_COLOR="0")
    env.pop("PY_COLORS", None)
    return env


def test_lint_tools_installed():
    path = lint_env()["PATH"]
    missing = [tool for tool in INSTALL_HINT if shutil.which(tool, path=path) is None]
    assert not missing, "missing lint tools: " + "; ".join(f"{t}: install with {INSTALL_HINT[t]}" for t in missing)


@pytest.mark.parametrize("name", list(lint_steps()))
def test_workflow_lint_step_passes(name):
    script = lint_steps()[name]
    path = lint_env()["PATH"]
    for tool in INSTALL_HINT:
        if re.search(rf"(^|\s){re.escape(tool)}\s", script):
            assert shutil.which(tool, path=path), f"{tool} not found: install with {INSTALL_HINT[tool]}"
    # GitHub's default shell for `run:` on Linux: bash -e {0}.
    done = subprocess.run(["bash", "--noprofile", "--norc", "-e", "-c", script], cwd=PROJECT, env=lint_env(),
                          capture_output=True, text=True, timeout=600)
    output = f"{done.stdout}\n{done.stderr}".strip()
    if done.returncode != 0:
        pytest.fail(f"workflow step {name!r} failed (exit {done.returncode}) on this tree:\n{output}", pytrace=False)
    if "packer validate" in script:
        # The validate loop must have validated every template directory, not an empty list.
        templates = {p.parent for p in (PROJECT / "packer").glob("*/*/*.pkr.hcl")}
        assert output.count("Syntax-only check passed") == len(templates) > 0, output


def test_workflow_pins_the_dev_extra_lint_versions():
    """The example CI installs the ansible-lint and ansible-core this test runs (the dev extra's ranges)."""
    pins = {name: req for req, name in re.findall(r'"((ansible-lint|ansible-core)[<>=!~][^"]*)"',
                                                   (PROJECT / "pyproject.toml").read_text())}
    install = next(s["run"] for s in validate_steps() if s.get("name") == INSTALL_STEP)
    for package in ("ansible-lint", "ansible-core"):
        assert f"'{pins[package]}'" in install, f"{WORKFLOW.name} should install {pins[package]!r} like the dev extra"
