"""Catalog loading: the demo catalog, path resolution, and one clear error per bad-catalog case."""

import textwrap
from pathlib import Path

import pytest

from image_assets.catalog import DEFAULT_CATALOG, CatalogError, load_catalog

TEMPLATE = """
variable "image_name" {
  type = string
}
variable "playbook" {
  type    = string
  default = ""
}
variable "token" {
  type      = string
  default   = ""
  sensitive = true
}
"""

GOOD = """
defaults: {target: sandbox, region: us-east-1}
repos:
  roles: {url: /srv/git/roles.git, tags: "v*"}
images:
  base:
    layer: vendor
    vendor: {owners: [amazon], name: "al2023-*"}
  global-linux:
    layer: global
    parent: base
    template: tpl/linux
    repos: [roles]
    variables: {playbook: cis.yml}
  svc:
    layer: service
    parent: global-linux
    template: tpl/linux
"""


@pytest.fixture
def write(tmp_path):
    (tmp_path / "tpl" / "linux").mkdir(parents=True)
    (tmp_path / "tpl" / "linux" / "variables.pkr.hcl").write_text(TEMPLATE)

    def _write(text: str) -> Path:
        path = tmp_path / "images.yaml"
        path.write_text(textwrap.dedent(text))
        return path

    return _write


def error_of(path: Path) -> str:
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    return str(info.value)


def test_good_catalog_resolves_templates_against_its_own_directory(write, tmp_path, monkeypatch):
    path = write(GOOD)
    monkeypatch.chdir("/")
    catalog = load_catalog(path)
    assert catalog.template_dir("global-linux") == tmp_path / "tpl" / "linux"
    assert catalog.chain("svc") == ["svc", "global-linux", "base"]
    assert catalog.descendants("base") == ["global-linux", "svc"]
    assert catalog.users_of_repo("roles") == ["global-linux"]
    assert catalog.images["global-linux"].retention.keep == 3


def test_catalog_path_from_environment(write, monkeypatch):
    path = write(GOOD)
    monkeypatch.setenv("IMAGE_ASSETS_CATALOG", str(path))
    assert load_catalog().path == path


def test_target_from_environment_overrides_defaults(write, monkeypatch):
    monkeypatch.setenv("IMAGE_ASSETS_TARGET", "aws")
    assert load_catalog(write(GOOD)).target == "aws"


def test_demo_catalog_loads():
    catalog = load_catalog(DEFAULT_CATALOG)
    layers = {img.layer.value for img in catalog.images.values()}
    assert layers == {"vendor", "global", "product", "service"}


BAD = {
    "unknown parent": (GOOD.replace("parent: global-linux", "parent: nothere"),
                       ["image 'svc'", "field 'parent'", "unknown parent 'nothere'"]),
    "cycle": (GOOD.replace("parent: base", "parent: svc"), ["field 'parent'", "cycle"]),
    "duplicate name": (GOOD + "  svc:\n    layer: service\n    parent: base\n    template: tpl/linux\n",
                       ["line 19", "duplicate name 'svc'", "first defined on line 15"]),
    "no parent": (GOOD.replace("    parent: global-linux\n", ""), ["image 'svc'", "field 'parent'", "needs a parent"]),
    "vendor with template": (GOOD.replace('name: "al2023-*"}', 'name: "al2023-*"}\n    template: tpl/linux'),
                             ["image 'base'", "field 'template'", "vendor image is looked up"]),
    "missing template dir": (GOOD.replace("template: tpl/linux\n    repos", "template: tpl/nope\n    repos"),
                             ["image 'global-linux'", "field 'template'", "tpl/nope does not exist"]),
    "undeclared variable": (GOOD.replace("{playbook: cis.yml}", "{playbok: cis.yml}"),
                            ["image 'global-linux'", "field 'variables.playbok'", "declares no variable 'playbok'"]),
    "unknown repo": (GOOD.replace("repos: [roles]", "repos: [roles, nope]"),
                     ["image 'global-linux'", "field 'repos'", "unknown repo 'nope'"]),
    "unknown template repo": (GOOD.replace("template: tpl/linux\n    repos", "template: nope:packer/aws\n    repos"),
                              ["image 'global-linux'", "field 'template'", "unknown repo 'nope'"]),
    "bad glob": (GOOD.replace('tags: "v*"', 'tags: "v[1-"'), ["repo 'roles'", "field 'tags'", "not a valid tag glob"]),
    "empty glob": (GOOD.replace('tags: "v*"', 'tags: ""'), ["repo 'roles'", "field 'tags'"]),
    "unused repo": (GOOD.replace("    repos: [roles]\n", ""), ["repo 'roles'", "no image uses this repo"]),
    "option-like url": (GOOD.replace("/srv/git/roles.git", "--upload-pack=touch /tmp/x"), ["repo 'roles'", "field 'url'"]),
    "ext transport url": (GOOD.replace("/srv/git/roles.git", "'ext::sh -c touch% /tmp/x'"), ["repo 'roles'", "field 'url'"]),
    "bad layer": (GOOD.replace("layer: service", "layer: servise"), ["image 'svc'", "field 'layer'"]),
    "layer order": (GOOD.replace("layer: service", "layer: global").replace("layer: global\n    parent: base", "layer: product\n    parent: base"),
                    ["image 'svc'", "field 'layer'", "cannot sit on"]),
    "bad duration": (GOOD.replace("variables: {playbook: cis.yml}", "variables: {playbook: cis.yml}\n    retention: {keep: 2, min_age: 1 day}"),
                     ["image 'global-linux'", "field 'retention.min_age'", "not a duration"]),
    "bad keep": (GOOD.replace("variables: {playbook: cis.yml}", "variables: {playbook: cis.yml}\n    retention: {keep: 0}"),
                 ["image 'global-linux'", "field 'retention.keep'"]),
    "bad target": (GOOD.replace("target: sandbox", "target: moon"), ["field 'defaults.target'"]),
    "bad image name": (GOOD.replace("  svc:", "  Svc_1:"), ["image 'Svc_1'", "field '(name)'"]),
    "vendor without query": (GOOD.replace('    vendor: {owners: [amazon], name: "al2023-*"}\n', ""), ["image 'base'", "field 'vendor'"]),
    "secret not declared": (GOOD.replace("variables: {playbook: cis.yml}", "secrets: {nope: {env: TOKEN}}"),
                            ["image 'global-linux'", "field 'secrets.nope'"]),
    "go template in a variable": (GOOD.replace("{playbook: cis.yml}", "{playbook: 'x{{ .Vars }}'}"),
                                  ["image 'global-linux'", "field 'variables'", "packer would evaluate it"]),
    "not a mapping": ("- just\n- a list\n", ["must be a mapping"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_catalog_names_file_image_and_field(write, case):
    text, expected = BAD[case]
    path = write(text)
    message = error_of(path)
    assert message.startswith(f"{path}: "), message
    for part in expected:
        assert part in message, f"{case}: {part!r} not in {message!r}"
    assert "\n" not in message and "Traceback" not in message


def test_yaml_syntax_error_names_the_line(write):
    path = write(GOOD.replace("    layer: service", "    layer: [service"))
    message = error_of(path)
    assert message.startswith(f"{path}: line ") and "YAML syntax error" in message


def test_missing_catalog_file_is_named(tmp_path):
    assert "cannot read catalog" in error_of(tmp_path / "nope.yaml")
