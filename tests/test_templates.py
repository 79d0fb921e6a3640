"""The packer templates and their provisioning content, checked with the real packer binary.

Every template directory must be `packer fmt -check` clean and pass `packer validate
-syntax-only`; templates are also fully validated with a var-file holding the injected
variables (what the build writes). The variables they declare and the content check, which need no
packer: tests/unit/test_templates.py.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from unit.test_templates import CONTENT_CHECK, PACKER_DIR, TEMPLATE_DIRS, ids

# Source image ids in each cloud's own notion, for full validation.
SOURCE_IMAGE = {
    "aws": "ami-0123456789abcdef0",
    "azure": "Canonical:0001-com-ubuntu-server-jammy:22_04-lts-gen2:latest",
    "gcp": "projects/ubuntu-os-cloud/global/images/ubuntu-2204-jammy-v20240927",
}
CLOUD_VARS = {"aws": {}, "azure": {"subscription_id": "00000000-0000-0000-0000-000000000000"},
              "gcp": {"project_id": "image-assets-test"}}

needs_packer = pytest.mark.skipif(shutil.which("packer") is None,
                                  reason="packer is not installed (apt-get install packer)")


def packer(*args, cwd=None):
    env = dict(os.environ, CHECKPOINT_DISABLE="1")
    return subprocess.run(["packer", *map(str, args)], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env=env)


def content_dirs(os_family: str) -> dict[str, str]:
    """The demo catalog's content for an OS family, as the build injects it."""
    dirs = {"scripts": str(PACKER_DIR / "scripts" / os_family), "check": str(CONTENT_CHECK)}
    if os_family == "linux":
        dirs["ansible"] = str(PACKER_DIR / "ansible")
    return dirs


def var_file(tmp_path, template_dir, **extra) -> Path:
    cloud = template_dir.parent.name
    values = {
        "image_name": "global-linux",
        "image_version": "20250101.1",
        "source_image_id": SOURCE_IMAGE[cloud],
        "region": {"aws": "us-east-1", "azure": "westeurope", "gcp": "europe-west1"}[cloud],
        "tags": {"ManagedBy": "image-assets", "ImageName": "global-linux", "GitRefs": "roles->v1.0@abc1234"},
        "sandbox_endpoint": "http://127.0.0.1:5055",
        "content_dirs": content_dirs(template_dir.name),
        **CLOUD_VARS[cloud],
        **extra,
    }
    path = tmp_path / "vars.json"
    path.write_text(json.dumps(values))
    return path


def test_every_template_links_the_shared_variable_files():
    common = PACKER_DIR / "common"
    assert packer("fmt", "-check", common).returncode == 0
    for template_dir in TEMPLATE_DIRS:
        shared = {"injected.pkr.hcl": common / "injected.pkr.hcl",
                  "layer.pkr.hcl": common / f"{template_dir.name}-layer.pkr.hcl"}
        for name, target in shared.items():
            link = template_dir / name
            assert link.is_symlink() and link.resolve() == target.resolve(), (template_dir, name)


@needs_packer
@pytest.mark.parametrize("template_dir", TEMPLATE_DIRS, ids=ids(TEMPLATE_DIRS))
def test_fmt_check(template_dir):
    out = packer("fmt", "-check", "-diff", template_dir)
    assert out.returncode == 0, f"packer fmt -check {template_dir}:\n{out.stdout}{out.stderr}"


@needs_packer
@pytest.mark.parametrize("template_dir", TEMPLATE_DIRS, ids=ids(TEMPLATE_DIRS))
def test_validate_syntax_only(template_dir):
    out = packer("validate", "-syntax-only", template_dir)
    assert out.returncode == 0, f"packer validate -syntax-only {template_dir}:\n{out.stdout}{out.stderr}"


@needs_packer
@pytest.mark.parametrize("template_dir", TEMPLATE_DIRS, ids=ids(TEMPLATE_DIRS))
def test_validate_with_injected_vars(template_dir, tmp_path):
    """Full validation (syntax-only misses unknown builder attributes); azure/gcp need no account."""
    layer = {"playbook": "global.yml"} if template_dir.name == "linux" else {"scripts": ["global-hardening.ps1"]}
    out = packer("validate", f"-var-file={var_file(tmp_path, template_dir, **layer)}", template_dir, cwd=tmp_path)
    assert out.returncode == 0, f"packer validate {template_dir}:\n{out.stdout}{out.stderr}"


@needs_packer
@pytest.mark.parametrize("template_dir", [d for d in TEMPLATE_DIRS if d.parent.name == "aws"],
                         ids=ids(d for d in TEMPLATE_DIRS if d.parent.name == "aws"))
def test_aws_validate_with_only_injected_vars(template_dir, tmp_path):
    """What the build writes is enough: every layer variable has a default."""
    out = packer("validate", f"-var-file={var_file(tmp_path, template_dir)}", template_dir, cwd=tmp_path)
    assert out.returncode == 0, f"packer validate {template_dir}:\n{out.stdout}{out.stderr}"


@needs_packer
def test_validate_rejects_paths_outside_the_content_dirs(tmp_path):
    template_dir = PACKER_DIR / "aws" / "linux"
    out = packer("validate", f"-var-file={var_file(tmp_path, template_dir, scripts=['../../etc/x.sh'])}",
                 template_dir, cwd=tmp_path)
    assert out.returncode != 0
    assert "without directories" in out.stdout + out.stderr


@needs_packer
def test_fmt_check_fails_on_unformatted_copy(tmp_path):
    copy = tmp_path / "linux"
    shutil.copytree(PACKER_DIR / "aws" / "linux", copy)
    target = copy / "sources.pkr.hcl"
    text = target.read_text()
    assert "  region          = var.region\n" in text
    target.write_text(text.replace("  region          = var.region\n", "  region = var.region\n", 1))
    out = packer("fmt", "-check", copy)
    assert out.returncode != 0
    assert "sources.pkr.hcl" in out.stdout


