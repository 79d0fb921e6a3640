"""The template contract without packer: `python -m image_assets check-template`'s checks and usage, the
shipped templates and the drop-in file. The checks that read packer's version and packer 1.6.6's
measured behaviour are in tests/test_template_check.py."""

import os
import re
import shutil
import subprocess
import sys

import pytest
from pathlib import Path
from types import SimpleNamespace

from conftest import PROJECT

from image_assets import template_check, templates

FIXTURES = PROJECT / "tests" / "fixtures"
DROP_IN = PROJECT / "packer" / "contrib" / "image-assets.pkr.hcl"

NO_MACHINE = PROJECT / "packer" / "sandbox" / "no-machine"


def check_template(*args, catalog=None):
    env = {**os.environ, "IMAGE_ASSETS_CATALOG": str(catalog or PROJECT / "images.yaml")}
    env.pop("IMAGE_ASSETS_TARGET", None)
    return subprocess.run([sys.executable, "-m", "image_assets", "check-template", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=PROJECT, timeout=120)


def byo_template(dest: Path) -> Path:
    """A team's own template (its amazon-ebs.aws source and build) plus the drop-in, copied."""
    shutil.copytree(FIXTURES / "byo-template", dest)
    shutil.copy(DROP_IN, dest)
    return dest


def every_problem(tmp_path) -> Path:
    template = tmp_path / "every-problem"
    shutil.copytree(FIXTURES / "every-problem", template)
    (template / "injected.pkr.hcl").symlink_to("../common/injected.pkr.hcl")  # as `cp -r packer/aws/linux` leaves it
    return template


def test_newer_packer_has_the_newer_blocks(tmp_path):
    found = {f.problem.split("`")[1] for f in template_check.check(every_problem(tmp_path), "sandbox",
                                                                     packer_version="1.7.2") if "needs packer" in f.problem}
    assert found == {"hcp_packer_registry"}


def test_usage_errors_exit_2(tmp_path):
    assert check_template(tmp_path / "missing").returncode == 2
    done = check_template(PROJECT / "packer" / "aws" / "linux", "--image", "no-such-image")
    assert done.returncode == 2 and "no-such-image" in done.stderr


def test_required_variables_count_as_set_by_the_catalog_image(tmp_path):
    template = byo_template(tmp_path / "byo")
    (template / "network.pkr.hcl").write_text('variable "vpc_id" {\n  type = string\n}\n\n'
                                              'variable "api_token" {\n  type      = string\n  sensitive = true\n}\n')
    without = [f.problem for f in template_check.check(template, "sandbox")]
    assert without == ["variable 'vpc_id' has no default and is not injected",
                       "variable 'api_token' has no default and is not injected"]
    image = SimpleNamespace(variables={"vpc_id": "vpc-1"}, secrets={})
    assert [f.problem for f in template_check.check(template, "sandbox", image)] == \
        ["variable 'api_token' has no default and the catalog image does not set it"]
    image = SimpleNamespace(variables={"vpc_id": "vpc-1"}, secrets={"api_token": {"env": "TOKEN"}})
    assert template_check.check(template, "sandbox", image) == []


def test_paths_rooted_in_locals_variables_and_path_root_pass(tmp_path):
    template = byo_template(tmp_path / "byo")
    (template / "more.pkr.hcl").write_text('''
locals {
  here     = abspath("${path.root}/files")
  relative = "files"
}

build {
  sources = ["source.amazon-ebs.aws"]
  name    = "extra"
  provisioner "shell" {
    scripts = ["${local.here}/a.sh", "/opt/b.sh", "${var.motd}/c.sh", "${local.relative}/d.sh", "${path.cwd}/e.sh"]
  }
  provisioner "file" {
    source      = "./f.txt"
    destination = "relative/on/the/instance"
  }
}
''')
    relative = [f.problem.split("'")[3] for f in template_check.check(template, "sandbox") if "is relative" in f.problem]
    assert relative == ["${local.relative}/d.sh", "${path.cwd}/e.sh", "./f.txt"]


# --- shipped templates and the drop-in ---------------------------------------------------------


def test_shipped_templates_meet_the_contract_for_the_targets_they_serve():
    """aws templates: nothing for any target they have a source for (one amazon-ebs source serves the
    sandbox and aws alike). azure and gcp templates have no source for the project's targets
    (sandbox, aws and local are EC2 and docker), so they report exactly that and nothing else."""
    for template_dir in sorted({p.parent for p in (PROJECT / "packer").glob("*/*/*.pkr.hcl")} - {NO_MACHINE}):
        cloud, family = template_dir.parent.name, template_dir.name
        for target, kind in templates.SOURCE_KINDS.items():
            problems = [f.problem for f in template_check.check(template_dir, target)]
            if cloud == "aws" and (target != "local" or family == "linux"):
                assert problems == [], (template_dir, target)
            else:
                assert problems == [f"no {kind} source (target {target} builds the template's one {kind} source)"], \
                    (template_dir, target, problems)
    assert check_template(PROJECT / "packer" / "aws" / "linux", "--image", "global-linux").returncode == 0


def test_a_target_builds_the_one_source_of_its_kind_whatever_its_name(tmp_path):
    assert templates.target_source(PROJECT / "packer" / "aws" / "linux", "sandbox") == "amazon-ebs.aws"
    assert templates.target_source(PROJECT / "packer" / "aws" / "linux", "local") == "docker.local"
    two = tmp_path / "two"
    two.mkdir()
    (two / "s.pkr.hcl").write_text('source "amazon-ebs" "a" {}\nsource "amazon-ebs" "b" {}\n')
    with pytest.raises(templates.TemplateError, match=r"it has 2 'amazon-ebs' sources \(sources: amazon-ebs.a, amazon-ebs.b\)"):
        templates.target_source(two, "aws")
    assert [f.problem for f in template_check.check(two, "sandbox") if "sources" in f.problem] == \
        ["2 amazon-ebs sources (amazon-ebs.a, amazon-ebs.b): target sandbox builds one"]


def test_the_drop_in_is_the_shared_injected_declarations():
    """One set of injected declarations: the drop-in users copy is packer/common/injected.pkr.hcl
    after its own header, word for word."""
    shared = (PROJECT / "packer" / "common" / "injected.pkr.hcl").read_text()
    drop_in = DROP_IN.read_text()
    first = 'variable "image_name"'
    assert drop_in[drop_in.index(first):] == shared[shared.index(first):]
    assert not re.search(r"^\s*(source|build)\b", drop_in, re.MULTILINE)  # variables only


def test_the_drop_in_declares_the_injected_variables_as_the_shipped_templates_do():
    drop_in = templates.declared_variables(DROP_IN.parent)
    shipped = templates.declared_variables(PROJECT / "packer" / "aws" / "linux")
    assert set(templates.INJECTED) <= set(drop_in)
    for name in templates.INJECTED:
        if name in shipped:
            assert (drop_in[name].type, drop_in[name].has_default) == (shipped[name].type, shipped[name].has_default), name
    assert drop_in["content_dirs"].type == "map(string)" and drop_in["content_dirs"].has_default
    shipped_dirs = {p.parent for p in (PROJECT / "packer").glob("*/*/*.pkr.hcl")}
    assert DROP_IN.parent not in shipped_dirs  # a template dir globs it: never inside one
