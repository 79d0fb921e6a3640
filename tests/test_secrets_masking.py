"""The PKR_VAR_ hand-over and the redactor on packer's own output, against real packer 1.6.6 (the null
builder: no cloud). The redactor's own tests, and the helpers these share, are in tests/unit/test_secrets_masking.py."""

import json
import os
from pathlib import Path

import pytest

from image_assets import secrets as secretsmod
from image_assets.packer import REDACTED, PackerCli, PackerRun, Redactor
from image_assets.templates import declared_variables
from unit.test_secrets_masking import (SHELL_KINDS, TRICKY, _image, independent_forms, shell_needles,  # noqa: F401
                                       shell_secret, template)  # template: a fixture


def _run(template: Path, env: dict, values=(), args=()):
    lines = []
    out = PackerCli().run(["build", *args, str(template)], cwd=template.parent,
                          env={**os.environ, "CHECKPOINT_DISABLE": "1", **env},
                          redact=Redactor(values), echo=lines.append)
    return out, lines


@pytest.mark.parametrize("value", TRICKY)
def test_every_secret_type_reaches_packer_unchanged_and_is_masked_in_its_output(template, value):
    environ = {"TOKEN": value, "ENV_JSON": json.dumps({"K": value}), "LOGIN_JSON": json.dumps({"user": "u", "password": value})}
    image = _image(variables={"keys": [value, "k2-" + value], "plain": value},
                   secrets={"token": "TOKEN", "env": "ENV_JSON", "login": "LOGIN_JSON"})
    secrets = secretsmod.for_image("img", image, declared_variables(template), environ)
    assert secrets.names == {"token", "env", "login", "keys"}  # `plain` is not sensitive: the var-file's
    out, lines = _run(template, {**secrets.env, "PKR_VAR_plain": value}, secrets.values)
    assert out.returncode == 0, out.errors
    for name, want in {"token": value, "env": value, "password": value, "key": value + "k2-" + value}.items():
        assert (template.parent / f"{name}.out").read_bytes() == want.encode(), name
    assert (template.parent / "plain.out").read_bytes() == value.encode()
    text = "\n".join(lines + out.errors)
    assert "token=" + REDACTED in text
    assert [n for n, form in independent_forms(value).items() if form in text] == []


def test_a_var_file_packer_quotes_is_masked(template, tmp_path):
    # packer quotes a rejected var-file's line; the build keeps secrets out of it, and the runner
    # masks whatever it quotes anyway.
    value = TRICKY[0]
    var_file = tmp_path / "v.json"
    var_file.write_text(json.dumps({"count": "not-a-number", "token": value}))
    out, lines = _run(template, {}, [value], [f"-var-file={var_file}"])
    assert out.returncode == 1
    text = "\n".join(lines + out.errors)
    assert '"count": "not-a-number"' in text and REDACTED in text
    assert [n for n, form in independent_forms(value).items() if form in text] == []


def test_a_wrong_type_from_the_environment_is_refused_by_packer_without_its_value(template):
    # Measured: for a PKR_VAR_ packer says "(source code not available)", never the value.
    out, lines = _run(template, {"PKR_VAR_env": "not-a-map-SECRETVALUE", "PKR_VAR_count": "SECRETCOUNT"})
    assert out.returncode == 1
    text = "\n".join(lines + out.errors)
    assert "source code not available" in text and "SECRET" not in text


def test_a_hung_packer_call_is_stopped_by_its_timeout(tmp_path):
    """A packer read that hangs (a provisioner that never returns) ends at the runner's timeout."""
    import time as _time

    from image_assets.packer import PackerCli, Redactor
    (tmp_path / "hang.pkr.hcl").write_text(
        'source "null" "x" {\n  communicator = "none"\n}\n\nbuild {\n  sources = ["source.null.x"]\n\n'
        '  provisioner "shell-local" {\n    inline = ["sleep 300"]\n  }\n}\n')
    started = _time.monotonic()
    out = PackerCli().run(["build", str(tmp_path)], cwd=tmp_path, env=dict(os.environ, CHECKPOINT_DISABLE="1"),
                          redact=Redactor(), echo=lambda _: None, timeout=3)
    assert _time.monotonic() - started < 60
    assert out.returncode != 0 and any("did not finish within 3s" in e for e in out.errors)


# --- What a shell prints: dash's echo and printf '%b' interpret backslashes (/bin/sh is dash here).

SHELL_TEMPLATE = r'''
variable "token" {
  type      = string
  sensitive = true
}
variable "fail" {
  type    = number
  default = 0
}
source "null" "x" {
  communicator = "none"
}
build {
  sources = ["source.null.x"]
  provisioner "shell-local" {
    environment_vars = ["TOKEN=${var.token}", "FAIL=${var.fail}"]
    inline = [
      "echo \"token=$TOKEN\"",
      "echo",
      "printf 'b=%b\\n' \"$TOKEN\"",
      "printf '%s\\n' \"$TOKEN\" | tr ',%\"\\\\' '\\n\\n\\n\\n'",
      "echo printed-all",
      "if [ \"$FAIL\" != 0 ]; then echo \"failed to log in with $TOKEN\" >&2; exit 3; fi",
    ]
  }
}
'''


@pytest.mark.parametrize("fail", [0, 1])
@pytest.mark.parametrize("kind", SHELL_KINDS)
def test_a_secret_sh_echoes_is_masked_in_packer_output_and_errors(tmp_path, kind, fail):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "t.pkr.hcl").write_text(SHELL_TEMPLATE)
    value = shell_secret(kind)
    run = PackerRun(PackerCli(), ["build", str(tmp_path / "t")], cwd=tmp_path,
                    env={**os.environ, "CHECKPOINT_DISABLE": "1", "PKR_VAR_token": value, "PKR_VAR_fail": str(fail)},
                    redact=Redactor([value]), echo=lambda _: None).start()
    out = run.wait()
    failure = run.error("packer build")
    assert (out.returncode != 0) == bool(fail), out.errors
    text = "\n".join(out.lines + out.errors + [str(failure)])
    assert "printed-all" in text and REDACTED in text, text  # the provisioner ran and printed the value
    if fail:
        assert REDACTED in str(failure) and "exit status: 3" in str(failure), failure
    assert [name for name, needle in shell_needles(value).items() if needle in text] == [], text
