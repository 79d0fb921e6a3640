"""The redactor and the secrets' checks before packer, without packer (what packer does with them:
tests/test_secrets_masking.py)."""

import json
import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from image_assets import secret_forms
from image_assets import secrets as secretsmod
from image_assets.catalog import Image
from image_assets.packer import REDACTED, Redactor
from image_assets.templates import declared_variables

TRICKY = [
    'pa,ss"w\\rd\nline2-é',
    "plain-token-0123456789",
    "back\\slash, comma\ttab \"quote\" ünïcödé ${var.x} %{ if } $${y}\r\nthird line here",
    "\x01ctl-and-del\x7f",
]


def independent_forms(value: str) -> dict[str, str]:
    """Encodings written out here, not taken from the code under test."""
    packer = value.replace(",", "%!(PACKER_COMMA)").replace("\r", "\\r").replace("\n", "\\n")
    forms = {
        "raw": value,
        "json": json.dumps(value)[1:-1],
        "json non-ascii": json.dumps(value, ensure_ascii=False)[1:-1],
        "packer-escaped": packer,
        "packer-escaped, unescaped again": packer.replace("%!(PACKER_COMMA)", ",").replace("\\n", "\n").replace("\\r", "\r"),
        "json in a quoted var-file line": json.dumps(value)[1:-1].replace(",", "%!(PACKER_COMMA)"),
        "repr": repr(value)[1:-1],
        "unicode-escape": value.encode("unicode_escape").decode(),
    }
    lines = [line for line in value.splitlines() if len(line.strip()) >= 3]
    if len(lines) > 1:
        forms.update({f"line {i}": line for i, line in enumerate(lines)})
        forms.update({f"line {i} json": json.dumps(line)[1:-1] for i, line in enumerate(lines)})
    return forms


@pytest.mark.parametrize("value", TRICKY)
def test_redactor_masks_every_encoding(value):
    redact = Redactor([value])
    for name, form in independent_forms(value).items():
        masked = redact(f"before {form} after")
        assert masked == f"before {REDACTED} after", (name, masked)


def test_redactor_masks_a_secret_whole_and_leaves_short_values():
    redact = Redactor(["abcdef-secret", "abc", "ab"])
    assert redact("x abcdef-secret y abc z ab") == f"x {REDACTED} y {REDACTED} z ab"
    assert Redactor([])("nothing to mask") == "nothing to mask"


TEMPLATE = '''
variable "token" {
  type      = string
  default   = ""
  sensitive = true
}
variable "env" {
  type      = map(string)
  default   = {}
  sensitive = true
}
variable "keys" {
  type      = list(string)
  default   = []
  sensitive = true
}
variable "login" {
  type    = object({ user = string, password = string })
  default = { user = "", password = "" }
}
variable "plain" {
  default = ""
}
variable "count" {
  type    = number
  default = 0
}
source "null" "x" {
  communicator = "none"
}
build {
  sources = ["source.null.x"]
  provisioner "shell-local" {
    environment_vars = ["TOKEN=${var.token}", "ENV=${lookup(var.env, "K", "")}", "KEY=${join("", var.keys)}",
                        "PASSWORD=${var.login.password}", "PLAIN=${var.plain}"]
    inline = ["printf '%s' \\"$TOKEN\\" > token.out", "printf '%s' \\"$ENV\\" > env.out",
              "printf '%s' \\"$KEY\\" > key.out", "printf '%s' \\"$PASSWORD\\" > password.out",
              "printf '%s' \\"$PLAIN\\" > plain.out",
              "printf 'token=%s\\\\n' \\"$TOKEN\\"", "printf 'env=%s\\\\n' \\"$ENV\\""]
  }
}
'''


@pytest.fixture
def template(tmp_path) -> Path:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "t.pkr.hcl").write_text(TEMPLATE)
    return tmp_path / "t"


def _image(variables=None, secrets=None) -> Image:
    return Image(layer="global", parent="p", template="t", variables=variables or {},
                 secrets={k: {"env": v} for k, v in (secrets or {}).items()})


@pytest.mark.parametrize("raw, problem", [
    ("not json SECRETVALUE", "not JSON"),
    ('["SECRETVALUE"]', "is a JSON array, not a JSON object"),
    ('{"K": {"n": "SECRETVALUE"}}', "the value['K'] is a JSON object, not a string"),
    ('{"K": null}', "not a string"),
])
def test_a_map_secret_not_json_of_its_type_is_refused_naming_no_value(template, raw, problem):
    with pytest.raises(secretsmod.SecretError) as err:
        secretsmod.for_image("img", _image(secrets={"env": "ENV_JSON"}), declared_variables(template), {"ENV_JSON": raw})
    message = str(err.value)
    assert "image 'img', field 'secrets.env': environment variable ENV_JSON" in message
    assert "map(string)" in message and problem in message, message
    assert "SECRETVALUE" not in message


def test_missing_env_and_untyped_non_string_are_refused(template):
    declared = declared_variables(template)
    with pytest.raises(secretsmod.SecretError, match="environment variable NOPE is not set"):
        secretsmod.for_image("img", _image(secrets={"token": "NOPE"}), declared, {})
    declared = {**declared, "plain": declared["plain"].__class__("plain", True, True, "any")}
    with pytest.raises(secretsmod.SecretError, match="declare its type"):
        secretsmod.for_image("img", _image(variables={"plain": {"a": "b"}}), declared, {})


# --- What a shell prints: dash's echo and printf '%b' interpret backslashes (/bin/sh is dash here).

REWRITABLE = re.compile(r'[,"\\%\r\n]')  # what packer, JSON or a shell may rewrite


def long_runs(text: str) -> set[str]:
    """The runs of 8 or more characters between rewritable characters."""
    return {run.strip() for run in REWRITABLE.split(text) if len(run.strip()) >= 8}


def dash(command: str, value: str) -> str:
    """What dash prints for `command` with the value in "$1", decoded as the packer runner decodes."""
    out = subprocess.run(["dash", "-c", command, "sh", value], capture_output=True, check=True).stdout
    return out.decode("utf-8", errors="replace")


def shell_needles(value: str) -> dict[str, str]:
    """The value's independent forms, what dash's echo and printf '%b' print for it (and their
    lines), and every long run of the value and of what dash prints: none may survive masking."""
    printed = {"raw": value, "echo": dash('echo "$1"', value).removesuffix("\n"),
               "printf %b": dash("printf '%b' \"$1\"", value)}
    found = {**independent_forms(value), **printed}
    for name, text in printed.items():
        found.update({f"{name} line {i}": line for i, line in enumerate(text.splitlines()) if len(line.strip()) >= 3})
        found.update({f"{name} run {run!r}": run for run in long_runs(text)})
    return found


def shell_secret(kind: str) -> str:
    """Backslash escapes dash interprets (`\\t`, `\\\\`, `\\n`, octal, `\\c`), `%`, commas, quotes,
    newlines, non-ASCII; a unique mark in every run."""
    mark = uuid.uuid4().hex[:10]
    return {
        "escapes": f"esc-{mark}-tab\\there-{mark}\\\\back-{mark}\\nnewline-{mark},comma-{mark}%pct-{mark}\"q-{mark}",
        "octal": f"oct-{mark}\\0101\\141\\12twelve-{mark}\\377byte-{mark}\\cnever-echoed-{mark}",
        "controls": f"ctl-{mark}\\a\\b\\f\\v\\rafter-cr-{mark}\\q-unknown-{mark}\\",
        "lines": f"multi-{mark}\nline2 with\\ttab-{mark}\r\nline3,{mark}%20xyz-{mark}",
        "unicode": f"ünï-{mark}\\tcödé\\\\{mark}\\0303\\0251-é-{mark}",
    }[kind]


SHELL_KINDS = ["escapes", "octal", "controls", "lines", "unicode"]


@pytest.mark.parametrize("kind", SHELL_KINDS)
def test_the_masker_reads_backslashes_as_dash_does(kind):
    value = shell_secret(kind)
    assert secret_forms.shell_printed(value) == dash('echo "$1"', value).removesuffix("\n")
    assert secret_forms.shell_printed(value) == dash("printf '%b' \"$1\"", value)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="\\\\\\0123478abcfnqrtvx,%\"é\n ", max_size=24))
def test_the_masker_reads_any_backslashes_as_dash_does(value):
    want = dash("printf '%b' \"$1\"", value)
    assert secret_forms.shell_printed(value) == want, (value, want)


@pytest.mark.parametrize("kind", SHELL_KINDS)
def test_redactor_masks_what_dash_prints_and_every_long_run(kind):
    value = shell_secret(kind)
    redact = Redactor([value])
    for name, form in shell_needles(value).items():
        masked = redact(f"before {form} after")
        assert masked == f"before {REDACTED} after", (name, masked)


def test_a_secret_split_at_rewritable_characters_is_masked_by_its_runs():
    value = 'alpha-0123456789,bravo-abcdefghij%charlie-xyz\\zyxwvutsr"delta-9876543210\necho-ABCDEFGHIJ'
    pieces = REWRITABLE.split(value)
    masked = Redactor([value])("|".join(pieces))
    assert masked == "|".join([REDACTED] * len(pieces)), masked
    # A run under 8 characters is not masked on its own: it would mask ordinary words.
    assert Redactor(["short,abcdefg,x-other"])("abcdefg") == "abcdefg"


def test_a_map_secret_masks_its_values_runs_not_its_keys():
    token = "ci:TOKEN-0123456789@pypi.example/simple"
    raw = json.dumps({"PIP_INDEX_URL": token, "PIP_TRUSTED_HOST": "pypi.example,mirror.example"})
    masked = Redactor([raw])(f"PIP_INDEX_URL={token} PIP_TRUSTED_HOST=mirror.example")
    assert masked == f"PIP_INDEX_URL={REDACTED} PIP_TRUSTED_HOST={REDACTED}", masked


def test_sh_is_dash_here():
    # The provisioner tests below mean dash's echo: shell-local runs its inline script with /bin/sh.
    assert Path(os.path.realpath("/bin/sh")).name == "dash"


@pytest.mark.parametrize("var, env, raw", [
    ("token", "TOKEN", "br{{timestamp}}SEKRETg"),
    # JSON's escapes are undone before packer sees the value: `\u007b\u007b` is `{{` there.
    ("env", "ENV_JSON", '{"K": "x\\u007b\\u007b .Vars }}SEKRETg"}'),
])
def test_a_secret_holding_go_template_braces_is_refused_naming_no_value(template, var, env, raw):
    with pytest.raises(secretsmod.SecretError) as err:
        secretsmod.for_image("img", _image(secrets={var: env}), declared_variables(template), {env: raw})
    message = str(err.value)
    assert f"image 'img', field 'secrets.{var}': environment variable {env} holds '{{{{'" in message, message
    assert "SEKRET" not in message and "timestamp" not in message and "Vars" not in message


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="abc(|)?*\\.", min_size=1, max_size=6), max_size=12),
       st.text(alphabet="abc(|)?*\\. ", max_size=40))
def test_the_prefix_tree_masks_as_a_longest_first_alternation_does(forms, text):
    flat = re.compile("|".join(map(re.escape, sorted(set(forms), key=lambda f: (-len(f), f))))) if forms else None
    tree = re.compile(secret_forms.alternation(forms)) if forms else None
    assert (tree.sub("#", text) if tree else text) == (flat.sub("#", text) if flat else text)


def test_a_long_multi_line_secret_is_masked_whole_and_by_lines():
    key = "\n".join(["-----BEGIN PRIVATE KEY-----",
                     *(uuid.uuid4().hex * 2 for _ in range(80)), "-----END PRIVATE KEY-----"])
    redact = Redactor([key])
    assert redact(f"key: {key}.") == f"key: {REDACTED}."
    lines = key.splitlines()
    assert redact(f"line: {lines[40]}") == f"line: {REDACTED}"
    assert redact(json.dumps(key)) == f'"{REDACTED}"'
