"""template_valid remembers a validation by a digest of its inputs: equal inputs run no packer
again (another process, another image on the same template), and any change to them does."""

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import write_demo_catalog
from image_assets import checks
from image_assets.catalog import load_catalog
from image_assets.packer import PackerCli

PROJECT = Path(checks.__file__).resolve().parents[1]
COUNTING = '#!/bin/sh\necho "$1" >> "{log}"\nexec {packer} "$@"\n'


def counting_packer(tmp_path):
    log = tmp_path / "packer-calls.log"
    wrapper = tmp_path / "packer"
    wrapper.write_text(COUNTING.format(log=log, packer=shutil.which("packer")))
    wrapper.chmod(0o755)
    return PackerCli(binary=str(wrapper)), lambda: len(log.read_text().split()) if log.exists() else 0


def test_equal_inputs_validate_once_and_a_changed_template_again(tmp_path, work_dir):
    cli, calls = counting_packer(tmp_path)
    path = write_demo_catalog(tmp_path / "project")
    catalog = load_catalog(path)
    first = checks.template_valid(cli, catalog, "global-linux")
    assert first.passed, first.description
    after_first = calls()
    assert after_first == 5  # `packer version` once, validate -syntax-only, fmt -check, validate as on the sandbox and AWS

    assert checks.template_valid(cli, catalog, "global-linux").passed
    assert calls() == after_first, "equal inputs ran packer again"

    # Another process (each image step is one) finds the same result on disk.
    probe = (f"import sys; sys.path.insert(0, {str(PROJECT)!r});"
             "from image_assets import checks; from image_assets.catalog import load_catalog;"
             "from image_assets.packer import PackerCli;"
             f"r = checks.template_valid(PackerCli(binary={cli.binary!r}), load_catalog({str(path)!r}), 'global-linux');"
             "print(r.passed)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
    assert calls() == after_first + 1, "another process ran more than `packer version`"

    template = tmp_path / "project/packer/aws/linux/variables.pkr.hcl"
    original = template.read_text()
    template.write_text(original + 'variable "unformatted"   {\n  default = "x"\n}\n')
    unformatted = checks.template_valid(cli, load_catalog(path), "global-linux")
    assert unformatted.passed, unformatted.description  # layout alone is a warning
    assert "packer fmt would change the layout of variables.pkr.hcl" in unformatted.description
    assert calls() > after_first + 1, "a changed template was not validated again"

    template.write_text(original)
    counted = calls()
    assert checks.template_valid(cli, load_catalog(path), "global-linux").passed
    assert calls() == counted, "the original template's result was not remembered"


def test_a_changed_catalog_variable_validates_again(tmp_path, work_dir):
    cli, calls = counting_packer(tmp_path)
    path = write_demo_catalog(tmp_path / "project")
    assert checks.template_valid(cli, load_catalog(path), "python310").passed
    counted = calls()

    def edit(doc):
        doc["images"]["python310"]["variables"]["playbook"] = "roles/python310.yml"  # the template forbids dirs
    changed = load_catalog(write_demo_catalog(tmp_path / "project", edit))
    result = checks.template_valid(cli, changed, "python310")
    assert not result.passed and "playbook must be a file name" in result.description
    assert calls() > counted
