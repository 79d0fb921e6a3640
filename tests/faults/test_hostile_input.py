"""Item 6: hostile catalog values reach packer unchanged and harmless; no shell; fuzzed catalogs fail cleanly."""

import re

import yaml
from conftest import materialize
from faultkit import PROJECT, write_fault_catalog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from image_assets.catalog import CatalogError, load_catalog


def test_hostile_variable_values_reach_packer_unchanged(docker_daemon, tmp_path, work_dir, instance):
    # Measured on 1.6.6: Go-template text ("{{ .Vars }}") in a value is still evaluated by packer's
    # provisioner interpolation (it arrives as "<no value>"), so it is left out; HCL syntax is not.
    marker = tmp_path / "MARKER"
    payload = (
        "it's \"quoted\" 'twice'\nsecond line\r\n"
        f"$(touch {marker}) `touch {marker}` ; touch {marker} && touch {marker} | touch {marker}\n"
        "${var.image_name} %{ if true }hcl%{ endif } $${x} $HOME \\ \\n \t tab, comma %!(PACKER_COMMA) ünï"
    )
    report = tmp_path / "report.txt"
    catalog = load_catalog(write_fault_catalog(tmp_path / "p", {"payload": payload, "report_path": str(report)}))
    result = materialize(catalog, instance, selection="*")
    assert result.success
    assert report.read_bytes() == payload.encode()
    assert not marker.exists()


def test_no_subprocess_uses_a_shell():
    offenders = []
    for path in (PROJECT / "image_assets").rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"shell\s*=\s*True|os\.system\(|os\.popen\(|getoutput\(", line):
                offenders.append(f"{path.name}:{n}: {line.strip()}")
    assert offenders == []


_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                     st.text(max_size=20), st.sampled_from(["vendor", "global", "al2023", "packer/aws/linux",
                                                            "../..", "ansible-roles:x", "-oops", "v*", "[", "1d"]))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12) | st.sampled_from(
        ["layer", "parent", "template", "repos", "variables", "secrets", "vendor", "env", "url", "tags",
         "owners", "name", "retention", "keep", "min_age", "images", "defaults", "target"]), inner, max_size=4)),
    max_leaves=12)
DEMO = yaml.safe_load((PROJECT / "images.yaml").read_text())


def _paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, prefix + (i,))


PATHS = [p for p in _paths(DEMO) if p]


def _mutate(doc, path, value):
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


def _fresh_demo():
    return yaml.safe_load(yaml.safe_dump(DEMO))


@st.composite
def catalogs(draw):
    kind = draw(st.sampled_from(["text", "value", "mutated", "truncated"]))
    if kind == "text":
        return draw(st.text(max_size=200))
    if kind == "value":
        return yaml.safe_dump(draw(_values))
    text = yaml.safe_dump(_mutate(_fresh_demo(), draw(st.sampled_from(PATHS)), draw(_values)), sort_keys=False)
    if kind == "truncated":
        text = text[: draw(st.integers(0, len(text)))]
    return text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=catalogs())
def test_fuzzed_catalogs_fail_only_with_catalog_errors(tmp_path, text):
    project = tmp_path / "fuzz"
    project.mkdir(exist_ok=True)
    if not (project / "packer").exists():
        (project / "packer").symlink_to(PROJECT / "packer")
    path = project / "images.yaml"
    path.write_text(text, errors="surrogatepass")
    try:
        load_catalog(path)
    except CatalogError as exc:
        assert str(exc).startswith(str(path)) and "Traceback" not in str(exc)
