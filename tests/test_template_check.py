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
from conftest import PROJECT, latest, materialize, write_demo_catalog

from image_assets import dockerd
from image_assets.sandbox import instances as sandbox_instances
from image_assets.catalog import load_catalog
from test_sandbox_instances import backed_sandbox  # noqa: F401 - a fixture: the sandbox with Debian's AMIs backed
from unit.test_template_check import PUBLIC, byo_template, check_template, every_problem, public_template

needs_packer = pytest.mark.skipif(shutil.which("packer") is None, reason="packer is not installed")


# --- every problem at once --------------------------------------------------------------------

EVERY_PROBLEM = {  # a phrase of each finding the fixture must produce
    "dangling symlink": "injected.pkr.hcl",
    "`data` needs packer >= 1.7.0": "plugins.pkr.hcl",
    "`required_plugins` needs packer >= 1.7.0": "plugins.pkr.hcl",
    "`hcp_packer_registry` needs packer >= 1.7.7": "build.pkr.hcl",
    "variable 'region' is also declared": "variables.pkr.hcl",
    "injected variables not declared: image_version, sandbox_endpoint": "every-problem",
    "variable 'vpc_id' has no default and is not injected": "variables.pkr.hcl",
    "source amazon-ebs.sandbox is only in build 'x', 'y'": "build.pkr.hcl",
    "2 build blocks use amazon-ebs.sandbox": "build.pkr.hcl",
    "post-processor 'checksum' adds an artifact": "build.pkr.hcl",
    # (var.source_image_id and var.tags are declared but unused: these two say where they belong)
    "source_ami is ${data.amazon-ami.base.id}, not var.source_image_id": "sources.pkr.hcl",
    "does not set tags, run_tags, run_volume_tags, snapshot_tags": "sources.pkr.hcl",
    "does not reach the sandbox's EC2 API": "sources.pkr.hcl",
    "2 paths are relative to packer's working directory": "build.pkr.hcl",  # one finding for both
    # packer's own syntax check stops at what the contract reports above: a note that validate did not run
    "packer validate of the template's sources did not run": "every-problem",
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
    assert f"{len(EVERY_PROBLEM) - 1} problem(s), 1 warning(s) in {template}" in human.stdout
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


# --- a public template: packer's word on it, and a real build on the sandbox ------------------

NEWER_ARGUMENTS = '''  temporary_security_group_source_public_ip = true

  metadata_options {
    http_tokens = "required"
  }
'''


def findings_of(done) -> list[dict]:
    return json.loads(done.stdout)["findings"]


@needs_packer
def test_check_template_validates_the_source_that_runs_on_aws(tmp_path):
    """packer 1.6.6 refuses arguments of newer amazon plugins only when it validates the source
    that will run; check-template does, before any build, with the template's var-file."""
    template = public_template(tmp_path / "team")
    debian = template / "debian.pkr.hcl"
    debian.write_text(debian.read_text().replace('  ssh_username = "admin"\n', '  ssh_username = "admin"\n\n' + NEWER_ARGUMENTS))
    done = check_template(template, "--target", "sandbox", "--var-file", "debian-11.pkrvars.hcl", "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    found = [(Path(f["file"]).name, f["problem"], f["severity"]) for f in findings_of(done)]
    assert found == [
        ("debian.pkr.hcl", 'packer 1.6.6 validate of debian-base.amazon-ebs.debian: Unsupported argument: An argument named '
                           '"temporary_security_group_source_public_ip" is not expected here.', "error"),
        ("debian.pkr.hcl", 'packer 1.6.6 validate of debian-base.amazon-ebs.debian: Unsupported block type: Blocks of type '
                           '"metadata_options" are not expected here.', "error"),
    ], found
    assert findings_of(check_template(template, "--target", "aws", "--var-file", "debian-11.pkrvars.hcl", "--json")) \
        == findings_of(done)
    human = check_template(template, "--var-file", "debian-11.pkrvars.hcl")
    assert "fix: remove `temporary_security_group_source_public_ip`: packer 1.6.6's amazon-ebs builder does not know it" \
        in human.stdout, human.stdout


@needs_packer
def test_packer_fmt_differences_are_a_warning(tmp_path):
    template = public_template(tmp_path / "team")
    debian = template / "debian.pkr.hcl"
    debian.write_text(debian.read_text().replace("  communicator = \"ssh\"", "  communicator    =    \"ssh\""))
    done = check_template(template, "--var-file", "debian-11.pkrvars.hcl")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{template}: warning: packer fmt would change the layout of debian.pkr.hcl" in done.stdout
    assert f"{template}: no problems, 1 warning(s) for target sandbox (packer 1.6.6)" in done.stdout


@needs_packer
def test_a_public_template_builds_on_the_sandbox_with_its_provisioners_run(tmp_path, work_dir, instance, backed_sandbox):
    """The public template, after the documented edits only, built by Dagster on the sandbox from
    Debian 11: the instance is a container reached over SSH, and the file, shell and ansible
    provisioners ran in it, with the values of the template's own var-file."""
    project = tmp_path / "project"
    published = public_template(tmp_path / "published", edited=False)
    before = check_template(published, "--var-file", "debian-11.pkrvars.hcl")
    assert before.returncode == 1 and "problem(s)" in before.stdout

    def edit(doc):
        doc["images"]["debian-11"] = {"layer": "vendor", "vendor": {"owners": ["136693071363"], "name": "debian-11-amd64-*"}}
        doc["images"]["team-debian"] = {"layer": "global", "parent": "debian-11", "template": "team/packer",
                                        "var_files": ["debian-11.pkrvars.hcl"], "content": {"ansible": "team/ansible"}}
    path = write_demo_catalog(project, edit)
    template = public_template(project / "team")
    assert check_template(template, "--image", "team-debian", catalog=path).returncode == 0
    catalog = load_catalog(path)

    result = materialize(catalog, instance, selection=["debian-11", "team-debian"])
    checks = {e.check_name: e for e in result.get_asset_check_evaluations() if e.asset_key == dg.AssetKey(["team-debian"])}
    assert checks["template_valid"].passed, checks["template_valid"].description
    meta = latest(instance, "team-debian")
    assert meta["reused"] is False and meta["parent_image_id"] == latest(instance, "debian-11")["image_id"]
    image = sandbox_instances.read_backing(backed_sandbox)[meta["image_id"]]

    def read(*files) -> str:
        return dockerd.docker("run", "--rm", "--entrypoint", "/bin/cat", image, *files).stdout

    assert read("/etc/debian-base/shell") == "shell provisioner ran for app\n"  # the var-file's app_user
    assert read("/etc/motd") == (PUBLIC / "packer" / "files" / "motd").read_text()  # the file provisioner
    assert read("/etc/timezone") == "Europe/Stockholm\n"
    assert read("/etc/debian-base/ansible") == "ansible provisioner ran on Debian 11\n"
    assert "app:x:" in read("/etc/passwd") and "\nPermitRootLogin no\n" in read("/etc/ssh/sshd_config")

    # The playbook is the image's content: a change to it builds a new image (never reuses the old one).
    playbook = project / "team" / "ansible" / "playbook.yml"
    playbook.write_text(playbook.read_text().replace("ansible provisioner ran on", "ansible provisioner (v2) ran on"))
    materialize(load_catalog(path), instance, selection=["team-debian"])
    again = latest(instance, "team-debian")
    assert again["reused"] is False and again["image_id"] != meta["image_id"]
    assert dockerd.docker("run", "--rm", "--entrypoint", "/bin/cat", sandbox_instances.read_backing(backed_sandbox)[
        again["image_id"]], "/etc/debian-base/ansible").stdout == "ansible provisioner (v2) ran on Debian 11\n"


@needs_packer
def test_the_shipped_templates_pass_packer_validate_as_each_target_builds_them():
    for target in ("sandbox", "aws", "local"):
        done = check_template(PROJECT / "packer" / "aws" / "linux", "--image", "global-linux", "--target", target)
        assert done.returncode == 0 and "no problems" in done.stdout, (target, done.stdout)
    done = check_template(PROJECT / "packer" / "aws" / "windows", "--target", "aws")
    assert done.returncode == 0 and "no problems" in done.stdout, done.stdout
