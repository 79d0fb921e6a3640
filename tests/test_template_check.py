"""The template contract: `python -m image_assets check-template`, the drop-in file, and the
packer 1.6.6 behaviour the checks encode (measured here with the null builder)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest
from conftest import PROJECT, latest, materialize, write_demo_catalog

from image_assets import template_check, templates
from image_assets.catalog import load_catalog

FIXTURES = Path(__file__).resolve().parent / "fixtures"
DROP_IN = PROJECT / "packer" / "contrib" / "image-assets.pkr.hcl"
needs_packer = pytest.mark.skipif(shutil.which("packer") is None, reason="packer is not installed")


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


# --- every problem at once --------------------------------------------------------------------

EVERY_PROBLEM = {  # a phrase of each finding the fixture must produce
    "dangling symlink": "injected.pkr.hcl",
    "`data` needs packer >= 1.7.0": "plugins.pkr.hcl",
    "`required_plugins` needs packer >= 1.7.0": "plugins.pkr.hcl",
    "`hcp_packer_registry` needs packer >= 1.7.7": "build.pkr.hcl",
    "variable 'region' is also declared": "variables.pkr.hcl",
    "injected variables not declared: image_version, sandbox_endpoint": "every-problem",
    "var.source_image_id is declared but never used": "variables.pkr.hcl",
    "var.tags is declared but never used": "variables.pkr.hcl",
    "variable 'vpc_id' has no default and is not injected": "variables.pkr.hcl",
    "source amazon-ebs.sandbox is only in build 'x', 'y'": "build.pkr.hcl",
    "2 build blocks use amazon-ebs.sandbox": "build.pkr.hcl",
    "post-processor 'checksum' adds an artifact": "build.pkr.hcl",
    "does not set tags, run_tags, run_volume_tags, snapshot_tags": "sources.pkr.hcl",
    "path 'scripts/setup.sh' is relative": "build.pkr.hcl",
    "path 'files/user-data.txt' is relative": "sources.pkr.hcl",
}


def every_problem(tmp_path) -> Path:
    template = tmp_path / "every-problem"
    shutil.copytree(FIXTURES / "every-problem", template)
    (template / "injected.pkr.hcl").symlink_to("../common/injected.pkr.hcl")  # as `cp -r packer/aws/linux` leaves it
    return template


def test_check_template_lists_every_problem_in_one_run(tmp_path):
    template = every_problem(tmp_path)
    done = check_template(template, "--target", "sandbox", "--json")
    assert done.returncode == 1, done.stderr
    findings = json.loads(done.stdout)["findings"]
    for phrase, file in EVERY_PROBLEM.items():
        hits = [f for f in findings if phrase in f["problem"]]
        assert len(hits) == 1, (phrase, findings)
        assert Path(hits[0]["file"]).name == file and hits[0]["fix"]
    assert len(findings) == len(EVERY_PROBLEM)
    lines = {f["problem"]: f["line"] for f in findings}
    assert lines["`required_plugins` needs packer >= 1.7.0; the installed packer is 1.6.6"] == 3
    assert next(line for p, line in lines.items() if "'checksum'" in p) == 12

    human = check_template(template, "--target", "sandbox")
    assert human.returncode == 1
    assert f"{len(EVERY_PROBLEM)} problem(s) in {template}" in human.stdout
    assert human.stdout.count("    fix: ") == len(EVERY_PROBLEM)


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
    """aws templates: nothing for any target they have a source for. azure and gcp templates have
    no source for the project's targets (sandbox, aws and local are EC2 and docker), so they report
    exactly that and nothing else: building one through this project's targets would build nothing."""
    for template_dir in sorted({p.parent for p in (PROJECT / "packer").glob("*/*/*.pkr.hcl")}):
        cloud, family = template_dir.parent.name, template_dir.name
        for target, source in template_check.SOURCES.items():
            problems = [f.problem for f in template_check.check(template_dir, target)]
            if cloud == "aws" and (target != "local" or family == "linux"):
                assert problems == [], (template_dir, target)
            else:
                assert problems == [f"no source {source} (the build runs `packer build -only={source}`)"], \
                    (template_dir, target, problems)
    assert check_template(PROJECT / "packer" / "aws" / "linux", "--image", "global-linux").returncode == 0


def test_the_sources_are_the_builds():
    from image_assets import build
    assert template_check.SOURCES == build.SOURCES


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


@needs_packer
def test_a_third_party_template_with_the_drop_in_builds_on_the_sandbox(tmp_path, work_dir, cloud, instance):
    template = byo_template(tmp_path / "byo")
    assert check_template(template, "--target", "sandbox").returncode == 0
    assert check_template(template, "--target", "aws").returncode == 0

    def edit(doc):
        doc["images"]["team-base"] = {"layer": "global", "parent": "al2023", "template": "team/byo",
                                      "variables": {"motd": "hello from the team"}}
    path = write_demo_catalog(tmp_path / "project", edit)
    shutil.copytree(template, path.parent / "team" / "byo")
    catalog = load_catalog(path)
    result = materialize(catalog, instance, selection=["al2023", "team-base"])
    checks = {e.check_name: e for e in result.get_asset_check_evaluations() if e.asset_key == dg.AssetKey(["team-base"])}
    assert checks["template_valid"].passed, checks["template_valid"].description
    meta = latest(instance, "team-base")
    image = cloud.get(meta["image_id"])
    assert image.available and image.name.startswith("team-base-")
    tags = image.tags
    assert tags["ImageName"] == "team-base" and tags["ParentImageId"] == latest(instance, "al2023")["image_id"]


# --- packer 1.6.6 as measured: what the checks encode ------------------------------------------

NULL_SOURCE = 'source "null" "sandbox" {\n  communicator = "none"\n}\n'


def null_build(tmp_path, builds: str, only="null.sandbox") -> list[str]:
    template = tmp_path / "t"
    template.mkdir()
    (template / "t.pkr.hcl").write_text(NULL_SOURCE + builds)
    done = subprocess.run(["packer", "build", "-machine-readable", f"-only={only}", str(template)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "CHECKPOINT_DISABLE": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    return [line for line in done.stdout.splitlines() if ",artifact," in line and ",id," in line] + \
        [f"builds={done.stdout.count('Running local shell script')}"]


@needs_packer
def test_packer_only_does_not_match_a_source_in_a_named_build(tmp_path):
    build = 'build {\n  name    = "x"\n  sources = ["source.null.sandbox"]\n}\n'
    assert null_build(tmp_path, build) == ["builds=0"]  # nothing built, exit 0


@needs_packer
def test_packer_runs_two_unnamed_builds_of_one_source_but_reports_one_artifact(tmp_path):
    build = ('build {\n  sources = ["source.null.sandbox"]\n  provisioner "shell-local" {\n    inline = ["true"]\n  }\n}\n')
    found = null_build(tmp_path, build * 2)
    assert len(found) == 2 and found[-1] == "builds=2"


@needs_packer
def test_packer_checksum_post_processor_adds_an_artifact_manifest_repeats_it(tmp_path):
    build = ('build {\n  sources = ["source.null.sandbox"]\n'
             '  post-processor "manifest" {\n    output = "m.json"\n  }\n'
             '  post-processor "checksum" {\n    output = "c.txt"\n  }\n}\n')
    ids = [line.rsplit(",", 1)[1] for line in null_build(tmp_path, build)[:-1]]
    assert ids == ["Null", "Null", ""]  # the builder's, the manifest's copy, checksum's own
