"""The packer templates' declared variables (read as HCL) and their provisioning content (the sandbox's
content check, run directly on it), without packer; packer's own checks are in tests/test_templates.py."""

import os
import shutil
import subprocess
from pathlib import Path

import hcl2
import pytest
from conftest import PROJECT

PACKER_DIR = PROJECT / "packer"
TEMPLATE_DIRS = sorted({p.parent for p in PACKER_DIR.glob("*/*/*.pkr.hcl")})
CONTENT_CHECK = PACKER_DIR / "scripts" / "content-check.sh"
INJECTED = {"image_name", "image_version", "source_image_id", "region", "tags", "sandbox_endpoint"}


def ids(dirs):
    return [str(d.relative_to(PACKER_DIR)) for d in dirs]


def declared(template_dir: Path) -> dict:
    found = {}
    for path in sorted(template_dir.glob("*.pkr.hcl")):
        with path.open() as handle:
            for block in hcl2.load(handle).get("variable", []):
                for name, body in block.items():
                    found[name.strip('"')] = body
    return found


def test_all_template_dirs_exist():
    assert ids(TEMPLATE_DIRS) == [f"{c}/{o}" for c in ("aws", "azure", "gcp") for o in ("linux", "windows")]


@pytest.mark.parametrize("template_dir", TEMPLATE_DIRS, ids=ids(TEMPLATE_DIRS))
def test_declares_the_injected_and_layer_variables(template_dir):
    variables = declared(template_dir)
    assert INJECTED <= set(variables)
    assert {"manifest_path", "scripts", "instance_type", "secret_env"} <= set(variables)
    assert ("playbook" in variables) == (template_dir.name == "linux")
    assert ("ssh_username" if template_dir.name == "linux" else "winrm_username") in variables
    assert variables["secret_env"].get("sensitive") is True
    assert variables["secret_env"].get("default") == {}
    assert variables["sandbox_endpoint"].get("default") in ("", '""')  # python-hcl2 8 keeps quotes
    # Layer variables have defaults, so every layer can use the same template.
    without_default = {n for n, body in variables.items() if "default" not in body}
    assert without_default <= INJECTED


def content_check(os_family, playbook="", scripts=(), packer_dir=PACKER_DIR):
    env = dict(os.environ, SCRIPTS_DIR=str(packer_dir / "scripts" / os_family), ANSIBLE_DIR=str(packer_dir / "ansible"),
               OS_FAMILY=os_family, PLAYBOOK=playbook, SCRIPTS=" ".join(scripts), HELPERS="")
    return subprocess.run(["sh", str(CONTENT_CHECK)], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize("playbook", sorted(p.name for p in (PACKER_DIR / "ansible").glob("*.yml")))
def test_content_check_passes_for_every_playbook(playbook):
    out = content_check("linux", playbook=playbook)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"ansible-playbook {playbook}" in out.stdout


@pytest.mark.parametrize("os_family", ["linux", "windows"])
def test_content_check_passes_for_every_script(os_family):
    scripts = sorted(p.name for p in (PACKER_DIR / "scripts" / os_family).iterdir() if p.is_file())
    assert scripts
    out = content_check(os_family, scripts=scripts)
    assert out.returncode == 0, out.stdout + out.stderr


def test_content_check_fails_on_bad_content(tmp_path):
    shutil.copytree(PACKER_DIR, tmp_path / "packer")
    root = tmp_path / "packer"
    assert content_check("linux", playbook="missing.yml", packer_dir=root).returncode != 0
    assert content_check("windows", scripts=["missing.ps1"], packer_dir=root).returncode != 0
    (root / "scripts" / "linux" / "broken.sh").write_text("if then fi\n")
    out = content_check("linux", scripts=["broken.sh"], packer_dir=root)
    assert out.returncode != 0 and "sh -n" in out.stderr
    (root / "ansible" / "broken.yml").write_text("- hosts: all\n  roles: [nope]\n")
    out = content_check("linux", playbook="broken.yml", packer_dir=root)
    if "not parsed" not in out.stdout:  # the role check needs python3 with PyYAML on the host
        assert out.returncode != 0 and "nope" in out.stdout + out.stderr


def test_the_sandbox_stand_in_ships_in_the_package_and_takes_every_injected_variable():
    """The build's stand-in for images no machine runs is package data (a non-editable install, such
    as the deploy image's, has it) and declares what the build hands it."""
    import tomllib

    from image_assets import build, templates
    stand_in = build.NO_MACHINE_TEMPLATE
    assert stand_in.parent == PROJECT / "image_assets"
    shipped = tomllib.loads((PROJECT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["image_assets"]
    assert any(sorted(stand_in.parent.glob(pattern)) == sorted(stand_in.glob("*.pkr.hcl")) for pattern in shipped)
    assert set(INJECTED) <= set(declared(stand_in))
    assert templates.target_source(stand_in, "sandbox") == "amazon-ebs.no-machine"
