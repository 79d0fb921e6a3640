"""The template contract: `python -m image_assets check-template`, the drop-in file, and the
packer 1.6.6 behaviour the checks encode (measured here with the null builder); the checks that need
no packer are in tests/unit/test_template_check.py."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import dagster as dg
import pytest
from conftest import latest, materialize, write_demo_catalog

from image_assets.catalog import load_catalog
from unit.test_template_check import byo_template, check_template, every_problem

needs_packer = pytest.mark.skipif(shutil.which("packer") is None, reason="packer is not installed")


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


# --- a third-party template with the drop-in, built ---------------------------------------------


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
