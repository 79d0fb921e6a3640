"""Catalog loading: the demo catalog, path resolution, and one clear error per bad-catalog case."""

import textwrap
from pathlib import Path

import pytest

from conftest import PROJECT
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
    "missing content": (GOOD.replace("{playbook: cis.yml}", "{playbook: cis.yml}\n    content: {roles: nope/roles}"),
                        ["image 'global-linux'", "field 'content.roles'", "nope/roles does not exist"]),
    "content repo not an input": (GOOD.replace("    parent: global-linux\n", "    parent: global-linux\n    content: {r: 'roles:x'}\n"),
                                  ["image 'svc'", "field 'content.r'", "repo 'roles' is not an input"]),
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


# --- issue 9: the catalog refuses what it cannot honour, when it loads ---------------------------

def test_unknown_fields_are_refused_with_the_nearest_valid_name(write):
    cases = {
        "varaibles": (GOOD.replace("variables: {playbook", "varaibles: {playbook"),
                      "image 'global-linux', field 'varaibles': unknown field 'varaibles' (did you mean 'variables'?)"),
        "secret": (GOOD.replace("variables: {playbook: cis.yml}", "secret: {token: {env: TOKEN}}"),
                   "image 'global-linux', field 'secret': unknown field 'secret' (did you mean 'secrets'?)"),
        "kep": (GOOD.replace("variables: {playbook: cis.yml}", "variables: {playbook: cis.yml}\n    retention: {kep: 1}"),
                "image 'global-linux', field 'retention.kep': unknown field 'kep' (did you mean 'keep'?)"),
        "git_timout_seconds": (GOOD.replace("region: us-east-1}", "region: us-east-1, git_timout_seconds: 5}"),
                               "field 'defaults.git_timout_seconds': unknown field 'git_timout_seconds' "
                               "(did you mean 'git_timeout_seconds'?)"),
        "repo": (GOOD.replace('tags: "v*"}', 'tag: "v*"}'),
                 "repo 'roles', field 'tag': unknown field 'tag' (did you mean 'tags'?)"),
        "secret env": (GOOD.replace("variables: {playbook: cis.yml}", "secrets: {token: {evn: TOKEN}}"),
                       "image 'global-linux', field 'secrets.token.evn': unknown field 'evn' (did you mean 'env'?)"),
    }
    for case, (text, expected) in cases.items():
        message = error_of(write(text))
        assert expected in message, f"{case}: {message}"


def test_an_unknown_field_is_reported_before_what_it_causes(write):
    # `layr` is unknown and, because of it, `layer` is missing: the typo is the clearer message.
    message = error_of(write(GOOD.replace("layer: service", "layr: service")))
    assert "image 'svc', field 'layr': unknown field 'layr' (did you mean 'layer'?) (and 1 more)" in message


TYPED = """
variable "version" {
  type    = string
  default = ""
}
variable "count" {
  type    = number
  default = 1
}
variable "enabled" {
  type    = bool
  default = false
}
variable "scripts" {
  type    = list(string)
  default = []
}
variable "env" {
  type    = map(string)
  default = {}
}
variable "disk" {
  type    = object({ name = string, size = number })
  default = { name = "root", size = 8 }
}
variable "anything" {
  default = null
}
"""


def _typed(write, tmp_path, variables: str = "", secrets: str = "") -> Path:
    (tmp_path / "tpl" / "typed").mkdir(parents=True, exist_ok=True)
    (tmp_path / "tpl" / "typed" / "variables.pkr.hcl").write_text(TYPED)
    image = "\n  typed:\n    layer: global\n    parent: base\n    template: tpl/typed\n"
    image += f"    variables: {variables}\n" if variables else ""
    image += f"    secrets: {secrets}\n" if secrets else ""
    return write(GOOD + image)


def test_values_are_checked_against_the_declared_types(write, tmp_path):
    good = ("{version: '1.30', count: 2.5, enabled: true, scripts: [a.sh, b.sh], env: {A: x}, "
            "disk: {name: data, size: 20}, anything: [1, {a: b}]}")
    assert load_catalog(_typed(write, tmp_path, good)).images["typed"].variables["version"] == "1.30"
    cases = {
        "{version: 1.30}": ["field 'variables.version'", "the number 1.3, not a string", "quote it"],
        "{version: [a, b]}": ["field 'variables.version'", "a list, not a string"],
        "{version: yes}": ["field 'variables.version'", "the boolean True, not a string", "quote it"],
        "{count: three}": ["field 'variables.count'", "the string 'three', not a number"],
        "{enabled: 'no'}": ["field 'variables.enabled'", "the string 'no', not a bool"],
        "{scripts: a.sh}": ["field 'variables.scripts'", "list(string)", "not a list"],
        "{scripts: [a.sh, 1.5]}": ["field 'variables.scripts'", "scripts[1] is the number 1.5, not a string"],
        "{env: {A: 1}}": ["field 'variables.env'", "env.A is the number 1, not a string", "quote it"],
        "{disk: {name: data}}": ["field 'variables.disk'", "disk has no attribute 'size'"],
        "{disk: {name: data, size: big}}": ["field 'variables.disk'", "disk.size is the string 'big', not a number"],
    }
    for variables, expected in cases.items():
        message = error_of(_typed(write, tmp_path, variables))
        for part in expected:
            assert part in message, f"{variables}: {part!r} not in {message!r}"


def test_secrets_must_be_string_map_or_object_variables(write, tmp_path):
    assert load_catalog(_typed(write, tmp_path, secrets="{version: {env: A}, env: {env: B}, disk: {env: C}}"))
    message = error_of(_typed(write, tmp_path, secrets="{scripts: {env: A}}"))
    assert "image 'typed', field 'secrets.scripts'" in message and "list(string)" in message
    assert "string, map or object" in message


def test_required_template_variables_are_listed_at_once(write, tmp_path):
    (tmp_path / "tpl" / "req").mkdir(parents=True)
    (tmp_path / "tpl" / "req" / "variables.pkr.hcl").write_text(TEMPLATE + """
variable "vpc_id" { type = string }
variable "subnet_id" { type = string }
variable "api_key" {
  type      = string
  sensitive = true
}
""")
    image = "\n  req:\n    layer: global\n    parent: base\n    template: tpl/req\n"
    message = error_of(write(GOOD + image))
    assert "image 'req', field 'variables'" in message
    assert "'api_key', 'subnet_id', 'vpc_id'" in message and "image_name" not in message
    message = error_of(write(GOOD + image + "    variables: {vpc_id: vpc-1}\n"))
    assert "'api_key', 'subnet_id'" in message and "vpc_id" not in message
    catalog = load_catalog(write(GOOD + image + "    variables: {vpc_id: vpc-1, subnet_id: s-1}\n"
                                                "    secrets: {api_key: {env: API_KEY}}\n"))
    assert catalog.images["req"].secrets["api_key"].env == "API_KEY"


def test_injected_names_are_protected(write):
    cases = {
        "{playbook: cis.yml, image_name: mine}": "field 'variables.image_name'",
        "{region: eu-west-1}": "field 'variables.region'",
    }
    for variables, field in cases.items():
        message = error_of(write(GOOD.replace("{playbook: cis.yml}", variables)))
        assert f"image 'global-linux', {field}" in message and "injected" in message, message
    message = error_of(write(GOOD.replace("variables: {playbook: cis.yml}", "secrets: {image_name: {env: X}}")))
    assert "image 'global-linux', field 'secrets.image_name'" in message and "injected" in message
    # A template in a repo is read only at build time, yet an injected name is refused at load.
    repo_template = GOOD.replace("template: tpl/linux\n    repos", "template: roles:packer/linux\n    repos")
    message = error_of(write(repo_template.replace("{playbook: cis.yml}", "{tags: {a: b}}")))
    assert "image 'global-linux', field 'variables.tags'" in message and "injected" in message


BROKEN = 'variable "x" {\n  type    = string\n  default = ]\n}\n'  # line 3 does not parse


def _broken(write, tmp_path) -> Path:
    (tmp_path / "tpl" / "broken").mkdir(parents=True)
    (tmp_path / "tpl" / "broken" / "variables.pkr.hcl").write_text(TEMPLATE)
    (tmp_path / "tpl" / "broken" / "bad.pkr.hcl").write_text(BROKEN)
    return write(GOOD.replace("    parent: global-linux\n    template: tpl/linux",
                              "    parent: global-linux\n    template: tpl/broken"))


def test_a_broken_template_breaks_only_its_own_images(write, tmp_path):
    catalog = load_catalog(_broken(write, tmp_path))
    where = f"{tmp_path / 'tpl' / 'broken' / 'bad.pkr.hcl'}:3:"
    assert list(catalog.template_errors) == ["svc"]
    assert where in catalog.template_errors["svc"] and "cannot parse HCL" in catalog.template_errors["svc"]
    assert where in catalog.template_error("svc")
    assert catalog.template_error("global-linux") is None and catalog.template_error("base") is None


def test_definitions_load_with_a_broken_template(write, tmp_path):
    import os
    import subprocess
    import sys

    path = _broken(write, tmp_path)
    code = "import definitions; print(sorted(k.to_user_string() for k in definitions.defs.resolve_asset_graph().get_all_asset_keys()))"
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT,
                          env={**os.environ, "IMAGE_ASSETS_CATALOG": str(path)}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "'svc'" in done.stdout and "'global-linux'" in done.stdout


def test_content_the_template_reads_must_be_named(tmp_path):
    """A template that reads var.content_dirs["scripts"] gets it from the catalog or the catalog
    does not load: never packer's "Invalid index" at build time."""
    from conftest import write_demo_catalog

    def edit(doc):
        doc["images"]["service-sshd-banner"]["content"] = {"ansible": "packer/ansible"}
    message = error_of(write_demo_catalog(tmp_path / "p", edit))
    assert "image 'service-sshd-banner', field 'content'" in message and "'scripts'" in message
    assert "'ansible'" not in message.split("reads", 1)[1].split("from")[0]


def test_a_sensitive_value_of_the_wrong_type_is_not_quoted(write, tmp_path):
    (tmp_path / "tpl" / "linux" / "secret.pkr.hcl").write_text(
        'variable "db_password" {\n  type      = string\n  sensitive = true\n  default   = ""\n}\n')
    message = error_of(write(GOOD.replace("{playbook: cis.yml}", "{playbook: cis.yml, db_password: 987654321}")))
    assert "field 'variables.db_password'" in message and "sensitive" in message
    assert "987654321" not in message


# --- hostile catalogs: one clear error, never a hang, a RecursionError or another traceback -------

def _laughs(levels: int = 9) -> str:
    """The "billion laughs": each level an alias list of the one before, 9**levels strings expanded."""
    lines = ["    variables:", '      l0: &l0 "lol"']
    lines += [f"      l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines)


def test_an_alias_bomb_is_refused_not_expanded(write):
    import subprocess
    import sys

    path = write(GOOD.replace("    variables: {playbook: cis.yml}", _laughs()))
    assert path.stat().st_size < 1000
    code = ("import sys\nfrom image_assets.catalog import CatalogError, load_catalog\n"
            "try:\n    load_catalog(sys.argv[1])\nexcept CatalogError as exc:\n    print(exc)\nelse:\n    print('LOADED')\n")
    # In a subprocess with a generous timeout: a regression fails here instead of hanging the suite.
    done = subprocess.run([sys.executable, "-c", code, str(path)], cwd=PROJECT,
                          capture_output=True, text=True, timeout=120)
    message = done.stdout.strip()
    assert done.returncode == 0 and message.startswith(f"{path}: "), done.stdout + done.stderr[-2000:]
    assert "image 'global-linux', field 'variables.l9'" in message and "aliases" in message, message


def test_an_alias_that_contains_itself_is_refused(write):
    path = write(GOOD.replace("{playbook: cis.yml}", "{playbook: cis.yml, scripts: &loop [a, *loop]}"))
    message = error_of(path)
    assert message.startswith(f"{path}: line 14: image 'global-linux', field 'variables.scripts'"), message
    assert "inside its own anchor" in message


def test_a_complex_key_names_line_and_field(write):
    path = write(GOOD.replace("{playbook: cis.yml}", "\n      playbook: cis.yml\n      ? [a, b]\n      : x"))
    message = error_of(path)
    assert message.startswith(f"{path}: line 16: image 'global-linux', field 'variables'"), message
    assert "a key must be a plain name, not a list" in message and "\n" not in message


def test_bytes_that_are_not_utf8_name_line_and_field(write):
    path = write(GOOD)
    path.write_bytes(path.read_bytes().replace(b"template: tpl/linux\n    repos",
                                               b"template: tpl/linux\n    description: caf\xe9\n    repos"))
    message = error_of(path)
    assert message.startswith(f"{path}: line 13: image 'global-linux', field 'description'"), message
    assert "not UTF-8" in message and "0xe9" in message


HOSTILE_DEFAULTS = {
    "git_timeout_seconds: .inf": "field 'defaults.git_timeout_seconds'",
    "git_timeout_seconds: .nan": "field 'defaults.git_timeout_seconds'",
    "git_timeout_seconds: 86400": "field 'defaults.git_timeout_seconds'",
    "git_sensor_interval_seconds: 100000000000000000000": "field 'defaults.git_sensor_interval_seconds'",
    "git_sensor_interval_seconds: 1.0e+20": "field 'defaults.git_sensor_interval_seconds'",
    "vendor_sensor_interval_seconds: 99999999999": "field 'defaults.vendor_sensor_interval_seconds'",
    "region: 'us-east-1;touch x'": "field 'defaults.region'",
    "region: 'US-EAST-1'": "field 'defaults.region'",
}


@pytest.mark.parametrize("setting", sorted(HOSTILE_DEFAULTS))
def test_defaults_out_of_range_are_refused(write, setting):
    path = write(GOOD.replace("region: us-east-1}", f"region: us-east-1, {setting}}}".replace(
        "region: us-east-1, region:", "region:")))
    message = error_of(path)
    assert message.startswith(f"{path}: {HOSTILE_DEFAULTS[setting]}: "), message


@pytest.mark.parametrize("glob, why", [("v[z-a]*", "range 'z-a' is empty"), ("v[]", "'[' at 2"),
                                       ("v[!]", "'[' at 2"), ("][v*", "'[' at 2"), ("v*.lock", "no valid tag name"),
                                       ("v..*", "no valid tag name"), ("[[]v*", "holds no character a tag may have")])
def test_a_tag_glob_that_can_match_nothing_is_refused(write, glob, why):
    message = error_of(write(GOOD.replace('tags: "v*"', f"tags: '{glob}'")))
    assert "repo 'roles', field 'tags'" in message and why in message, message


@pytest.mark.parametrize("glob", ["v*", "*", "release-[0-9]*", "v[!a-z]*", "v[0-9].[0-9]*", "[]]*", "v?.*", "v1/*"])
def test_usual_tag_globs_still_load(write, glob):
    assert load_catalog(write(GOOD.replace('tags: "v*"', f"tags: '{glob}'"))).repos["roles"].tags == glob


def test_content_comes_from_the_catalog_tree_or_an_input_repo(write, tmp_path):
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "a.sh").write_text("true\n")
    (tmp_path / "etc-link").symlink_to("/etc")
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir(exist_ok=True)
    (tmp_path / "scripts-with-link").mkdir()
    (tmp_path / "scripts-with-link" / "passwd").symlink_to("/etc/passwd")
    ok = "{playbook: cis.yml}\n    content: {scripts: scripts, same: ./scripts/../scripts/a.sh, roles: 'roles:ansible'}"
    assert load_catalog(write(GOOD.replace("{playbook: cis.yml}", ok))).images["global-linux"].content["roles"]
    for source in ["/etc", "../" + outside.name, "etc-link", "etc-link/ssh", "scripts-with-link",
                   "roles:/etc", "roles:../../etc", "'roles:a/../../x'"]:
        path = write(GOOD.replace("{playbook: cis.yml}", f"{{playbook: cis.yml}}\n    content: {{x: {source}}}"))
        message = error_of(path)
        assert message.startswith(f"{path}: image 'global-linux', field 'content.x': "), message
        assert f"a path under {tmp_path}" in message and "'<repo>:<path>'" in message, message
