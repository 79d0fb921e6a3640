"""The terminal examples of docs/ (a ```text block that starts with `$ command`), run as written from
the project's root: every line the doc shows, other than `...`, is a line of the command's output.
They run the installed packer, so they are not in the fast tier (tests/unit/test_docs.py)."""

import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import PROJECT

EXAMPLES = [(page, block) for page in sorted((PROJECT / "docs").glob("*.md"))
            for block in re.findall(r"```text\n(\$ .*?)```", page.read_text(), re.S)]


def test_the_docs_have_terminal_examples():
    assert any(page.name == "templates.md" for page, _ in EXAMPLES)


@pytest.mark.parametrize("page, block", EXAMPLES, ids=[f"{p.name}:{b.split(chr(10))[0][2:60]}" for p, b in EXAMPLES])
def test_terminal_example_prints_what_the_doc_shows(page, block):
    command, *shown = block.rstrip("\n").split("\n")
    argv = shlex.split(command[2:])
    assert argv[0] == "python", f"{page.name}: run examples as `python -m ...`: {command}"
    env = {**os.environ, "IMAGE_ASSETS_CATALOG": str(PROJECT / "images.yaml")}
    env.pop("IMAGE_ASSETS_TARGET", None)
    done = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True, env=env, cwd=PROJECT,
                          timeout=300)
    printed = set(done.stdout.splitlines())
    missing = [line for line in shown if line != "..." and line not in printed]
    assert missing == [], f"{page.name}: `{command[2:]}` did not print these lines; it printed:\n{done.stdout}{done.stderr}"
