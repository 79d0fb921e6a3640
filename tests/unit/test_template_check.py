"""The template contract without packer: `python -m image_assets check-template`'s checks and usage, the
shipped templates and the drop-in file. The checks that read packer's version and packer 1.6.6's
measured behaviour are in tests/test_template_check.py."""

import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml
from pathlib import Path
from types import SimpleNamespace

from conftest import PROJECT

from image_assets import template_check, templates

FIXTURES = PROJECT / "tests" / "fixtures"
DROP_IN = PROJECT / "packer" / "contrib" / "image-assets.pkr.hcl"

NO_MACHINE = PROJECT / "image_assets" / "no_machine"


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
    assert without == ["2 variables have no default and are not injected: vpc_id, api_token"]  # one finding
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
    found = [f for f in template_check.check(template, "sandbox") if "relative to packer's working directory" in f.problem]
    assert len(found) == 1  # one finding for one kind of problem
    relative = re.findall(r"provisioner '\w+' '([^']+)'", found[0].problem)
    assert relative == ["${local.relative}/d.sh", "${path.cwd}/e.sh", "./f.txt"]


# --- shipped templates and the drop-in ---------------------------------------------------------


def test_shipped_templates_meet_the_contract_for_the_targets_they_serve():
    """aws templates: nothing for any target they have a source for (one amazon-ebs source serves the
    sandbox and aws alike). azure and gcp templates have no source for the project's targets
    (sandbox, aws and local are EC2 and docker), so they report exactly that and nothing else."""
    for template_dir in sorted({p.parent for p in (PROJECT / "packer").glob("*/*/*.pkr.hcl")}):
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
    # Only a source that connects to its instance needs a machine behind its parent on the sandbox.
    assert templates.needs_machine(PROJECT / "packer" / "aws" / "linux", "amazon-ebs.aws")
    assert not templates.needs_machine(NO_MACHINE, "amazon-ebs.no-machine")


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


# --- a public template, as published and after the documented edits --------------------------

PUBLIC = FIXTURES / "public-template"
_DEB = "packer/debian.pkr.hcl"
# The edits docs/templates.md lists, made to the published template: (file, text as published, text after).
EDITS = [
    # packer 1.6.6 has no `packer init`: its builders and provisioners are built in.
    (_DEB, '''packer {
  required_plugins {
    amazon = {
      version = ">= 1.2.8"
      source  = "github.com/hashicorp/amazon"
    }
    ansible = {
      version = ">= 1.1.0"
      source  = "github.com/hashicorp/ansible"
    }
  }
}

''', ""),
    # The drop-in declares the injected variables: the template's own `region` goes.
    ("packer/variables.pkr.hcl", '''variable "region" {
  type    = string
  default = "us-east-1"
}

''', ""),
    # Built from the catalog's parent, not from its own lookup.
    (_DEB, '''  source_ami_filter {
    filters = {
      name                = "debian-11-amd64-*"
      root-device-type    = "ebs"
      virtualization-type = "hvm"
    }
    most_recent = true
    owners      = ["136693071363"]
  }
''', "  source_ami = var.source_image_id\n"),
    # Arguments packer 1.6.6's amazon-ebs does not know.
    (_DEB, '''  temporary_security_group_source_public_ip = true

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

''', ""),
    # The sandbox's EC2 API (empty on AWS), and the build's tags on everything it creates.
    (_DEB, '''  tags = {
    Name    = "${var.ami_prefix}-${local.timestamp}"
    OS      = "Debian 11"
    Builder = "packer"
  }
''', '''  custom_endpoint_ec2        = var.sandbox_endpoint
  skip_credential_validation = var.sandbox_endpoint != ""
  skip_metadata_api_check    = var.sandbox_endpoint != ""
  skip_region_validation     = var.sandbox_endpoint != ""

  tags = merge({
    Name    = "${var.ami_prefix}-${local.timestamp}"
    OS      = "Debian 11"
    Builder = "packer"
  }, var.tags)
  run_tags        = var.tags
  run_volume_tags = var.tags
  snapshot_tags   = var.tags
'''),
    # packer runs in a fresh work directory per build: paths start at the template.
    (_DEB, 'source      = "files/motd"', 'source      = "${path.root}/files/motd"'),
    (_DEB, 'script          = "scripts/setup.sh"', 'script          = "${path.root}/scripts/setup.sh"'),
    # The playbook outside the template becomes the image's content (so it is in the fingerprint).
    (_DEB, 'playbook_file   = "../ansible/playbook.yml"', 'playbook_file   = "${var.content_dirs["ansible"]}/playbook.yml"'),
]


def public_template(dest: Path, edited: bool = True) -> Path:
    """The public template copied to `dest` with the drop-in next to it and, when `edited`, the
    documented edits made; its packer directory."""
    shutil.copytree(PUBLIC, dest)
    shutil.copy(DROP_IN, dest / "packer")
    for file, old, new in EDITS if edited else ():
        text = (dest / file).read_text()
        assert text.count(old) == 1, (file, old)
        (dest / file).write_text(text.replace(old, new))
    return dest / "packer"


def problems(template: Path, target: str = "sandbox", **kw) -> list[str]:
    return [f.problem for f in template_check.check(template, target, **kw)]


def test_a_public_template_as_published_breaks_the_contract_in_these_ways(tmp_path):
    template = public_template(tmp_path / "team", edited=False)
    found = template_check.check(template, "sandbox", catalog_dir=tmp_path, var_files=["debian-11.pkrvars.hcl"])
    print("\n".join(map(str, found)))
    assert [f.problem for f in found] == PUBLISHED
    content = next(f for f in found if "outside the template directory" in f.problem)
    assert "add `ansible: team/ansible` under the image's `content`" in content.fix
    assert '"${var.content_dirs["ansible"]}/playbook.yml"' in content.fix and "path.root" not in content.fix
    after = public_template(tmp_path / "edited")
    assert template_check.check(after, "sandbox", var_files=["debian-11.pkrvars.hcl"]) == []
    assert template_check.check(after, "aws", var_files=["debian-11.pkrvars.hcl"]) == []


# What check-template says of the published template (its packer, validate -syntax-only, stops at the
# first two; the arguments packer 1.6.6 lacks come after: tests/test_template_check.py).
PUBLISHED = [
    "`required_plugins` needs packer >= 1.7.0; the installed packer is 1.6.6",
    "variable 'region' is also declared in image-assets.pkr.hcl",
    "source amazon-ebs.debian looks its parent up with source_ami_filter: it would build from whatever AMI that finds, "
    "while its tags (ParentImageId) name the catalog's parent",
    "source amazon-ebs.debian does not set tags, run_tags, run_volume_tags, snapshot_tags from var.tags",
    "source amazon-ebs.debian does not reach the sandbox's EC2 API (no custom_endpoint_ec2, skip_credential_validation, "
    "skip_metadata_api_check, skip_region_validation): packer would call AWS's own endpoints",
    "2 paths are relative to packer's working directory (a fresh work dir per build), not to the template: "
    "provisioner 'file' 'files/motd' (debian.pkr.hcl:56); provisioner 'shell' 'scripts/setup.sh' (debian.pkr.hcl:61)",
    "a path outside the template directory, in ../ansible: provisioner 'ansible' '../ansible/playbook.yml' "
    "(debian.pkr.hcl:70). A build's fingerprint covers the template directory and the image's `content`, so a "
    "change there would reuse the old image",
]


def ebs_template(tmp_path, settings: str, extra: str = "") -> Path:
    """The drop-in and one amazon-ebs source with the given settings, in one build."""
    template = tmp_path / "t"
    template.mkdir(parents=True)
    shutil.copy(DROP_IN, template)
    (template / "t.pkr.hcl").write_text(f'''source "amazon-ebs" "x" {{
{settings}
  instance_type   = "t3.micro"
  ami_name        = "x-${{var.image_version}}"
  communicator    = "ssh"
  ssh_username    = "admin"
  tags            = var.tags
  run_tags        = var.tags
  run_volume_tags = var.tags
  snapshot_tags   = var.tags
}}

build {{
  name    = "x"
  sources = ["source.amazon-ebs.x"]
}}
{extra}''')
    return template


SOUND = '''  source_ami                 = var.source_image_id
  region                     = var.region
  custom_endpoint_ec2        = var.sandbox_endpoint
  skip_credential_validation = var.sandbox_endpoint != ""
  skip_metadata_api_check    = var.sandbox_endpoint != ""
  skip_region_validation     = var.sandbox_endpoint != ""'''


def test_the_source_builds_from_the_injected_parent_in_the_catalogs_region_and_only_there(tmp_path):
    def found(old: str, new: str, target: str = "sandbox") -> list[str]:
        shutil.rmtree(tmp_path / "t", ignore_errors=True)
        return problems(ebs_template(tmp_path, SOUND.replace(old, new)), target)

    assert found("", "") == [] and found("", "", "aws") == []  # one named build is fine: -only=x.amazon-ebs.x
    claim = ("the image would not be built from the catalog's parent, while its tags (ParentImageId) name the "
             "catalog's parent")
    assert found("var.source_image_id", '"ami-0123456789abcdef0"') == \
        [f"source amazon-ebs.x: source_ami is ami-0123456789abcdef0, not var.source_image_id: {claim}"]
    assert found("var.source_image_id", "var.base_ami") == \
        [f"source amazon-ebs.x: source_ami is ${{var.base_ami}}, not var.source_image_id: {claim}"]
    filtered = found("  source_ami                 = var.source_image_id",
                     '  source_ami_filter {\n    owners = ["amazon"]\n    filters = {\n      name = "al2023-ami-*"\n    }\n  }')
    assert filtered == ["source amazon-ebs.x looks its parent up with source_ami_filter: it would build from whatever "
                        "AMI that finds, while its tags (ParentImageId) name the catalog's parent"]
    assert found("var.region", '"eu-west-1"') == [
        "source amazon-ebs.x: region is eu-west-1, not var.region: the image would be built outside the catalog's "
        "region, where its parent and channels are not"]
    assert found("  region ", '  ami_regions = ["eu-west-1"]\n  region ') == [
        "source amazon-ebs.x copies the image to other regions (ami_regions): copies the catalog does not know are "
        "neither tagged, tracked nor deleted by retention"]
    # The sandbox's endpoint: needed there; on AWS the source is right without it.
    assert found("  custom_endpoint_ec2        = var.sandbox_endpoint\n", "") == [
        "source amazon-ebs.x does not reach the sandbox's EC2 API (no custom_endpoint_ec2): packer would call AWS's "
        "own endpoints"]
    assert found("  custom_endpoint_ec2        = var.sandbox_endpoint\n", "", "aws") == []
    fix = next(f.fix for f in template_check.check(ebs_template(tmp_path / "f", SOUND.replace("var.region", '"eu-west-1"')),
                                                   "sandbox"))
    assert fix == "set `region = var.region` (the catalog's defaults.region)"


def test_one_kind_of_finding_is_one_finding(tmp_path):
    names = [f"setting_{n}" for n in range(41)]
    template = ebs_template(tmp_path, SOUND, "".join(f'\nvariable "{n}" {{\n  type = string\n}}\n' for n in names))
    found = template_check.check(template, "sandbox")
    assert [f.problem for f in found] == [f"41 variables have no default and are not injected: {', '.join(names)}"]
    assert found[0].line == 22 and Path(found[0].file).name == "t.pkr.hcl"  # the first one's
    image = SimpleNamespace(variables={n: "v" for n in names[:40]}, secrets={})
    assert problems(template, image=image) == ["variable 'setting_40' has no default and the catalog image does not set it"]


def test_a_file_outside_the_template_becomes_content_never_path_root_dot_dot(tmp_path):
    project = tmp_path / "project"
    (project / "shared" / "ansible").mkdir(parents=True)
    template = ebs_template(project / "packer", SOUND, '''
build {
  sources = ["source.amazon-ebs.x"]
  provisioner "ansible" {
    playbook_file = "${path.root}/../../shared/ansible/site.yml"
    galaxy_file   = "../../shared/ansible/requirements.yml"
  }
  provisioner "shell" {
    script = abspath("${path.root}/../../setup.sh")
  }
}
''')
    found = [f for f in template_check.check(template, "sandbox", catalog_dir=project) if "outside" in f.problem]
    assert [(f.problem.split(":")[0], f.fix) for f in found] == [
        ("2 paths outside the template directory, in ../../shared",
         "make it the image's content: add `shared: shared` under the image's `content` in the catalog (a path "
         "relative to the catalog file, or \"<repo>:<path>\" in an input repo) and write "
         "\"${var.content_dirs[\"shared\"]}/ansible/site.yml\", \"${var.content_dirs[\"shared\"]}/ansible/requirements.yml\""),
        ("a path outside the template directory, in ../../setup.sh",
         "make it the image's content: add `setup: setup.sh` under the image's `content` in the catalog (a path "
         "relative to the catalog file, or \"<repo>:<path>\" in an input repo) and write "
         "\"${var.content_dirs[\"setup\"]}\""),
    ]
    assert all("path.root" not in f.fix for f in found)


def test_a_target_builds_a_source_of_one_named_build_by_its_build_name(tmp_path):
    template = ebs_template(tmp_path, SOUND)
    assert templates.target_source(template, "sandbox") == "x.amazon-ebs.x"
    assert templates.target_source(PUBLIC_EDITED(tmp_path), "aws") == "debian-base.amazon-ebs.debian"


def PUBLIC_EDITED(tmp_path) -> Path:  # noqa: N802 - reads as the thing it makes
    return public_template(tmp_path / "public")


def test_var_files_count_as_set_and_must_be_inside_the_template(tmp_path):
    template = public_template(tmp_path / "team")
    assert problems(template) == ["variable 'app_user' has no default and is not injected"]
    assert problems(template, var_files=["debian-11.pkrvars.hcl"]) == []
    image = SimpleNamespace(variables={}, secrets={}, var_files=["debian-11.pkrvars.hcl"])
    assert problems(template, image=image) == []
    assert problems(template, var_files=["missing.pkrvars.hcl", "../README.md"]) == [
        "var-file 'missing.pkrvars.hcl' (catalog `var_files`) does not exist",
        "var-file '../README.md' (catalog `var_files`) is outside the template directory",
        "variable 'app_user' has no default and is not injected"]


def catalog_with(tmp_path, image: dict) -> Path:
    shutil.copytree(PUBLIC, tmp_path / "team")
    shutil.copy(DROP_IN, tmp_path / "team" / "packer")
    doc = {"images": {"debian-11": {"layer": "vendor", "vendor": {"owners": ["136693071363"], "name": "debian-11-amd64-*"}},
                      "team-debian": {"layer": "global", "parent": "debian-11", "template": "team/packer", **image}}}
    path = tmp_path / "images.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_the_catalog_passes_var_files_that_exist_inside_the_template(tmp_path):
    from image_assets.catalog import CatalogError, load_catalog

    assert load_catalog(catalog_with(tmp_path / "ok", {"var_files": ["debian-11.pkrvars.hcl"]})) \
        .images["team-debian"].var_files == ["debian-11.pkrvars.hcl"]
    refused = {
        "/etc/x.pkrvars.hcl": "var-file '/etc/x.pkrvars.hcl' must be a path inside the template directory, relative to it",
        "../x.pkrvars.hcl": "var-file '../x.pkrvars.hcl' must be a path inside the template directory, relative to it",
        "missing.pkrvars.hcl": "field 'var_files': 'missing.pkrvars.hcl': ",
    }
    for n, (name, message) in enumerate(refused.items()):
        with pytest.raises(CatalogError, match=re.escape(message)):
            load_catalog(catalog_with(tmp_path / str(n), {"var_files": [name]}))
    # Without it, the template's variable without a default is unset: a load error names it.
    with pytest.raises(CatalogError, match=r"requires 'app_user' \(no default\)"):
        load_catalog(catalog_with(tmp_path / "none", {}))


def test_blocks_the_installed_packer_lacks_are_one_finding_per_kind(tmp_path):
    template = ebs_template(tmp_path, SOUND, 'data "amazon-ami" "a" {\n}\n\ndata "amazon-ami" "b" {\n}\n')
    assert problems(template) == ["`data` needs packer >= 1.7.0; the installed packer is 1.6.6 (2 blocks: t.pkr.hcl:22, "
                                  "t.pkr.hcl:24)"]


def test_the_fingerprint_covers_the_var_files_and_the_content_outside_the_template(tmp_path):
    from image_assets import build
    from image_assets.catalog import load_catalog

    path = catalog_with(tmp_path, {"var_files": ["debian-11.pkrvars.hcl"], "content": {"ansible": "team/ansible"}})

    def fingerprint() -> str:
        parent = build.Parent("ami-0123456789abcdef0", "ami-0123456789abcdef0")
        return build.resolve(load_catalog(path), "team-debian", parent, tmp_path / "work").fingerprint()

    first = fingerprint()
    assert fingerprint() == first
    var_file = tmp_path / "team" / "packer" / "debian-11.pkrvars.hcl"
    var_file.write_text(var_file.read_text().replace("Europe/Stockholm", "UTC"))
    second = fingerprint()
    assert second != first  # a var-file's value
    playbook = tmp_path / "team" / "ansible" / "playbook.yml"
    playbook.write_text(playbook.read_text() + "\n")
    assert fingerprint() not in (first, second)  # the playbook outside the template, named as content
