"""Secrets a shell rewrites, through a real build on the sandbox: what dash's echo and printf '%b'
print (and pieces of the value) leak nowhere, and a secret holding `{{` is refused before packer
runs. Real packer, the session's sandbox, a real Dagster instance."""

import json
from pathlib import Path

import dagster as dg
import yaml
from conftest import materialize
from unit.test_secrets_masking import shell_needles, shell_secret

from image_assets.catalog import load_catalog
from image_assets.packer import REDACTED

IMAGE = "shell-secrets"

TEMPLATE = r'''
variable "image_name" { type = string }
variable "image_version" { type = string }
variable "source_image_id" { type = string }
variable "region" { type = string }
variable "tags" { type = map(string) }
variable "sandbox_endpoint" { type = string }
variable "manifest_path" {
  type    = string
  default = "manifest.json"
}
variable "exit_code" {
  type    = number
  default = 0
}
variable "api_token" {
  type      = string
  sensitive = true
}
variable "db_password" {
  type      = string
  default   = ""
  sensitive = true
}
variable "secret_env" {
  type      = map(string)
  default   = {}
  sensitive = true
}

source "amazon-ebs" "sandbox" {
  ami_name                   = "${var.image_name}-${var.image_version}"
  source_ami                 = var.source_image_id
  region                     = var.region
  instance_type              = "t3.micro"
  communicator               = "none"
  custom_endpoint_ec2        = var.sandbox_endpoint
  skip_credential_validation = true
  skip_metadata_api_check    = true
  skip_region_validation     = true
  tags                       = var.tags
}

build {
  sources = ["source.amazon-ebs.sandbox"]

  # echo and printf '%b' under /bin/sh (dash) interpret the values' backslashes.
  provisioner "shell-local" {
    environment_vars = [
      "API_TOKEN=${var.api_token}",
      "DB_PASSWORD=${var.db_password}",
      "SECRET_ENV=${lookup(var.secret_env, "PIP_TOKEN", "")}",
      "EXIT_CODE=${var.exit_code}",
    ]
    inline = [
      "echo \"token=$API_TOKEN\"",
      "printf 'password=%b\\n' \"$DB_PASSWORD\"",
      "echo \"env=$SECRET_ENV\"",
      "echo",
      "printf '%s\\n' \"$API_TOKEN\" | tr ',%\"\\\\' '\\n\\n\\n\\n'",
      "echo printed-all",
      "if [ \"$EXIT_CODE\" != 0 ]; then echo \"failed to log in with $API_TOKEN / $DB_PASSWORD\" >&2; exit \"$EXIT_CODE\"; fi",
    ]
  }

  post-processor "manifest" {
    output = var.manifest_path
  }
}
'''


def write_catalog(dest: Path, variables: dict) -> Path:
    (dest / "template").mkdir(parents=True, exist_ok=True)
    (dest / "template" / "shell.pkr.hcl").write_text(TEMPLATE)
    doc = {
        "defaults": {"target": "sandbox", "region": "us-east-1"},
        "images": {
            "al2023": {"layer": "vendor",
                       "vendor": {"owners": ["amazon"], "name": "al2023-ami-2023.*-kernel-6.1-x86_64"}},
            IMAGE: {"layer": "global", "parent": "al2023", "template": "template", "variables": variables,
                    "secrets": {"api_token": {"env": "SHELL_API_TOKEN"}, "secret_env": {"env": "SHELL_PIP_JSON"}}},
        },
    }
    path = dest / "images.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return path


def leaks(data: bytes, needles: dict[str, str]) -> list[str]:
    """The needles in data, as printed or JSON-escaped (as Dagster stores event text)."""
    return [name for name, needle in needles.items()
            if any(form.encode() in data for form in (needle, json.dumps(needle)[1:-1]))]


def tree_leaks(root: Path, needles: dict[str, str]) -> list[str]:
    """Every file under root (as bytes: sqlite, compute logs) holding a needle."""
    return [f"{path.relative_to(root)}: {leak}" for path in sorted(root.rglob("*")) if path.is_file()
            for leak in leaks(path.read_bytes(), needles)]


def step_failure(result) -> str:
    return next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE
                ).step_failure_data.error.message


def test_secrets_echoed_by_sh_leak_nowhere_in_a_sandbox_build(tmp_path, work_dir, instance, monkeypatch, capfd):
    token, password, pip = shell_secret("escapes"), shell_secret("lines"), shell_secret("octal")
    needles = {f"{label}: {name}": needle for label, value in (("token", token), ("password", password), ("pip", pip))
               for name, needle in shell_needles(value).items()}
    monkeypatch.setenv("SHELL_API_TOKEN", token)
    monkeypatch.setenv("SHELL_PIP_JSON", json.dumps({"PIP_TOKEN": pip}))

    catalog = load_catalog(write_catalog(tmp_path / "ok", {"db_password": password}))
    assert materialize(catalog, instance).success
    event = instance.get_latest_materialization_event(dg.AssetKey([IMAGE]))
    metadata = json.dumps({k: repr(v.value) for k, v in event.asset_materialization.metadata.items()})

    failing = load_catalog(write_catalog(tmp_path / "fails", {"db_password": password, "exit_code": 3}))
    result = materialize(failing, instance, selection=IMAGE, raise_on_error=False)
    assert not result.success
    message = step_failure(result)
    assert "failed to log in with" in message and REDACTED in message, message

    out = capfd.readouterr()
    printed = out.out + out.err
    # The provisioner ran and printed each secret, masked.
    assert printed.count("printed-all") == 2 and "token=" + REDACTED in printed, printed[-4000:]
    assert leaks((printed + message + metadata).encode(), needles) == []
    home = Path(instance.root_directory)
    assert any(b"printed-all" in log.read_bytes() for log in home.rglob("compute_logs/*.out"))  # logs were kept
    assert tree_leaks(home, needles) == []
    # The search itself works: it finds the values in the environment that holds them.
    assert leaks(json.dumps([token, password, pip], ensure_ascii=False).encode(), needles)


def test_a_secret_holding_go_template_braces_fails_before_packer_naming_no_value(tmp_path, work_dir, instance,
                                                                                 monkeypatch, capfd):
    # Packer rendered `{{timestamp}}` in it and printed the result, which nothing could mask.
    secret = "br{{timestamp}}SEKRET-" + tmp_path.name[-12:] + "g"
    monkeypatch.setenv("SHELL_API_TOKEN", secret)
    monkeypatch.setenv("SHELL_PIP_JSON", "{}")
    catalog = load_catalog(write_catalog(tmp_path / "p", {}))
    assert materialize(catalog, instance, selection="al2023").success
    result = materialize(catalog, instance, selection=IMAGE, raise_on_error=False)
    assert not result.success
    message = step_failure(result)
    assert (f"image {IMAGE!r}, field 'secrets.api_token': environment variable SHELL_API_TOKEN holds '{{{{'"
            in message), message
    out = capfd.readouterr()
    assert "Running local shell script" not in out.out  # packer never ran
    needles = {"value": secret, "after the braces": secret.split("}}")[1], "before": "br{{timestamp"}
    assert leaks((out.out + out.err + message).encode(), needles) == []
    assert tree_leaks(Path(instance.root_directory), needles) == []
