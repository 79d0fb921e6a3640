"""The local target's groundwork on real docker, real packer and real OpenSCAP.

A 3-layer chain (the Debian 11 base -> global: global.yml with the real roles -> service: a script),
and a product layer (python310.yml, offline) on the same global image, are built by calling `packer build -only=docker.local` on packer/aws/linux with the var-file the build
injects (the docker store and the assets come later). The tools come from bin/setup; the tests skip
only where dockerd cannot start here, and stop only a daemon they started.
"""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from image_assets import dockerd, scan, stores

PROJECT = Path(__file__).resolve().parent.parent
TEMPLATE = PROJECT / "packer" / "aws" / "linux"
CONTENT = {"scripts": str(PROJECT / "packer" / "scripts" / "linux"), "ansible": str(PROJECT / "packer" / "ansible"),
           "check": str(PROJECT / "packer" / "scripts" / "content-check.sh")}
HOST_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")  # holds the host's local CAs (HTTPS egress proxy)
HOST_LOCAL_CAS = sorted(Path("/usr/local/share/ca-certificates").glob("**/*.crt"))


def docker(*args, timeout=120):
    return dockerd.docker(*args, timeout=timeout)


def run_in(image, script, timeout=120):
    done = dockerd.docker("run", "--rm", "--network=none", image, "sh", "-c", script, timeout=timeout, check=False)
    return done.returncode, done.stdout + done.stderr


def packer_build(work: Path, name: str, layer: str, parent: str, root: str, **variables) -> tuple[str, float]:
    """One layer, as the build will run it: the injected variables in a JSON var-file."""
    work.mkdir(parents=True, exist_ok=True)
    values = {
        "image_name": name,
        "image_version": time.strftime("%Y%m%d.%H%M%S"),
        "source_image_id": parent,
        "region": "local",
        "tags": {"ManagedBy": "image-assets", "ImageName": name, "ImageLayer": layer, "ParentImageId": parent,
                 "RootImageId": root, "Deployment": "tests-local-docker"},
        "sandbox_endpoint": "",
        "content_dirs": CONTENT,
        "input_dirs": {},
        "manifest_path": str(work / "manifest.json"),
        **({"build_ca_bundle": str(HOST_BUNDLE)} if HOST_BUNDLE.exists() else {}),
        **variables,
    }
    var_file = work / "vars.json"
    var_file.write_text(json.dumps(values))
    started = time.monotonic()
    done = subprocess.run(["packer", "build", "-machine-readable", "-only=docker.local", f"-var-file={var_file}",
                           str(TEMPLATE)], cwd=work, capture_output=True, text=True, timeout=900,
                          env=dockerd.client_env(dict(os.environ, CHECKPOINT_DISABLE="1")))
    seconds = time.monotonic() - started
    (work / "build.log").write_text(done.stdout + done.stderr)
    ids = {line.split(",")[5] for line in done.stdout.splitlines() if ",docker.local,artifact,0,id," in line}
    assert done.returncode == 0 and len(ids) == 1, f"packer build {name} failed ({done.returncode}):\n{done.stdout[-4000:]}"
    print(f"{name}: built {ids} in {seconds:.1f} s")
    return ids.pop(), seconds


@pytest.fixture(scope="module")
def chain(base_image, tmp_path_factory):
    work = tmp_path_factory.mktemp("local-chain")
    built = {"base": base_image}
    try:
        built["global"], built["global_seconds"] = packer_build(
            work / "global", "global-linux", "global", base_image, base_image, playbook="global.yml")
        built["service"], built["service_seconds"] = packer_build(
            work / "service", "service-sshd-banner", "service", built["global"], base_image, scripts=["sshd-banner.sh"])
        # Offline product runtime: Debian 11 has no python3.10 and python.org is unreachable, so the
        # python310 role installs the distribution's python3 (3.9) and checks that version.
        built["product"], built["product_seconds"] = packer_build(
            work / "product", "python310", "product", built["global"], base_image, playbook="python310.yml",
            playbook_vars={"python310_source": "package", "python310_package": "python3", "python310_minor": "3.9"})
        yield built
    finally:
        for key in ("product", "service", "global"):
            if key in built:
                dockerd.docker("rmi", built[key], check=False, timeout=120)


def inspect(image) -> dict:
    return json.loads(docker("image", "inspect", image).stdout)[0]


def test_each_layer_is_built_on_its_parent(chain):
    for child, parent in (("global", "base"), ("service", "global")):
        info = inspect(chain[child])
        assert info["Parent"] == chain[parent], child  # docker commit records the container's image
        assert info["Config"]["Labels"]["ParentImageId"] == chain[parent]
        assert info["Config"]["Labels"]["RootImageId"] == chain["base"]
        parent_layers = inspect(chain[parent])["RootFS"]["Layers"]
        assert info["RootFS"]["Layers"][:len(parent_layers)] == parent_layers
        assert len(info["RootFS"]["Layers"]) == len(parent_layers) + 1
        history = docker("history", "-q", "--no-trunc", chain[child]).stdout.split()
        assert history[1] == chain[parent]


def test_images_run_commands_and_carry_the_tags(chain):
    for key in ("global", "service"):
        info = inspect(chain[key])
        assert info["Config"]["Entrypoint"] in (None, [""]), info["Config"]["Entrypoint"]  # packer's /bin/sh cleared
        assert docker("run", "--rm", "--network=none", chain[key], "true").returncode == 0
        assert info["Config"]["Labels"]["ManagedBy"] == "image-assets"
    assert inspect(chain["service"])["Config"]["Labels"]["ImageName"] == "service-sshd-banner"


def test_global_provisioning_really_ran(chain):
    code, out = run_in(chain["global"], """
        set -e
        test -s /etc/ssh/sshd_config.d/10-cis.conf
        grep -qx 'PermitRootLogin no' /etc/ssh/sshd_config
        dpkg-query -W -f='${Status}\\n' auditd | grep -q 'install ok installed'
        test -s /etc/audit/rules.d/50-cis.rules
        test -s /etc/modprobe.d/cis-filesystems.conf
        test -s /etc/sysctl.d/60-cis.conf
        grep -q '^PASS_MAX_DAYS.365' /etc/login.defs
        grep -q '^minlen = 14' /etc/security/pwquality.conf
        grep -q '^global-linux ' /etc/image-assets/layers
        test ! -e /opt/image-assets && test ! -e /tmp/ansible && test ! -e /tmp/image-assets-build-ca.pem
        ls /etc/ssh/ssh_host_*_key 2>/dev/null && exit 1
        # what the scanner cannot see: the daemon's effective settings, drop-in included
        ssh-keygen -A >/dev/null && mkdir -p /run/sshd
        sshd -t
        sshd -T | grep -qx 'permitrootlogin no'
        sshd -T | grep -qx 'maxauthtries 4'
        echo provisioned
    """)
    assert code == 0 and "provisioned" in out, out


def test_service_layer_adds_its_script_on_top_of_the_global_layer(chain):
    code, out = run_in(chain["service"], """
        set -e
        grep -q 'Authorised use only' /etc/issue.net
        test -s /etc/ssh/sshd_config.d/20-banner.conf
        test -s /etc/ssh/sshd_config.d/10-cis.conf
        cut -d' ' -f1 /etc/image-assets/layers | tr '\\n' ' '
    """)
    assert code == 0, out
    assert out.split() == ["global-linux", "service-sshd-banner"]


def test_product_layer_installs_its_runtime_offline(chain):
    code, out = run_in(chain["product"], """
        set -e
        /opt/runtime/python3.10/bin/python -c 'import ssl, sqlite3, sys; print("%d.%d" % sys.version_info[:2])'
        /opt/runtime/python3.10/bin/python -m pip --version >/dev/null
        grep -q /opt/runtime/python3.10/bin /etc/profile.d/python310.sh
        test -s /etc/ssh/sshd_config.d/10-cis.conf
    """)
    assert code == 0 and out.split() == ["3.9"], out


def test_no_host_ca_certificate_ships(chain, tmp_path):
    """The build trusts the host's CA bundle (its local CAs included); none of it is in the images."""
    assert HOST_BUNDLE.exists()
    markers = []
    for cert in HOST_LOCAL_CAS:
        lines = [l for l in cert.read_text().splitlines() if l and not l.startswith("-----")]
        markers.append(lines[len(lines) // 2])  # a line of the certificate's body, found in any PEM copy
    for key in ("global", "service", "product"):
        tree = stores.connect("local", "local").export_filesystem(chain[key], tmp_path / key)
        assert not (tree / "tmp" / "image-assets-build-ca.pem").exists()
        for marker in markers:
            found = subprocess.run(["grep", "-rlF", "--devices=skip", marker, str(tree)], capture_output=True,
                                   text=True, timeout=300)
            assert found.stdout == "", f"a host CA certificate is in the {key} image: {found.stdout}"
        subprocess.run(["rm", "-rf", str(tree)], check=True)


def test_global_image_passes_more_standard_rules_than_its_base(chain, tmp_path):
    store = stores.connect("local", "local")
    base = scan.scan_image(store, chain["base"], "standard", report_dir=tmp_path)
    hardened = scan.scan_image(store, chain["global"], "standard", report_dir=tmp_path)
    for result in (base, hardened):
        print(f"{result.image[:19]}: {result.passed} pass / {result.failed} fail / {result.notapplicable} "
              f"notapplicable {result.other} ({result.seconds:.1f} s)")
        assert result.profile == "xccdf_org.ssgproject.content_profile_standard"
        assert result.content_version not in ("", "?")
        assert Path(result.report).is_file()
        assert result.passed + result.failed > 30  # rules were evaluated, not mostly "notapplicable"
    assert hardened.passed > base.passed
    assert base.rules["xccdf_org.ssgproject.content_rule_package_audit_installed"] == "fail"
    assert hardened.rules["xccdf_org.ssgproject.content_rule_package_audit_installed"] == "pass"
    # A layer never undoes what its parent passed.
    assert not [r for r, v in base.rules.items() if v == "pass" and hardened.rules.get(r) != "pass"]


def test_dockerd_status_and_a_missing_client_never_hang(docker_daemon, monkeypatch):
    assert dockerd.main(["status"]) == 0
    assert dockerd.start() is False  # a daemon answers: nothing started, nothing to stop
    monkeypatch.setenv("IMAGE_ASSETS_DOCKER", "/nonexistent/docker")
    started = time.monotonic()
    assert dockerd.is_running() is False
    assert dockerd.main(["status"]) == 1
    if dockerd.status()["pid"] is not None:  # the session's daemon is ours: never a second one beside it
        with pytest.raises(dockerd.DockerUnavailable, match="does not answer"):
            dockerd.start()
        assert dockerd.status()["pid"] is not None
    assert time.monotonic() - started < 5


def test_where_dockerd_cannot_start_it_says_so_and_exits_3(monkeypatch, capsys, tmp_path):
    """No daemon answers (a client that is not there) and the daemon exits at once: a plain message, no hang."""
    monkeypatch.setenv("IMAGE_ASSETS_STATE_DIR", str(tmp_path))  # never the session daemon's pidfile
    monkeypatch.setenv("IMAGE_ASSETS_DOCKER", "/nonexistent/docker")
    monkeypatch.setenv("IMAGE_ASSETS_DOCKERD", "/bin/false")
    started = time.monotonic()
    assert dockerd.main(["start"]) == dockerd.UNAVAILABLE
    assert "docker cannot run here" in capsys.readouterr().err
    monkeypatch.setenv("IMAGE_ASSETS_DOCKERD", "/nonexistent/dockerd")
    with pytest.raises(dockerd.DockerUnavailable, match="apt-get install docker.io"):
        dockerd.start()
    assert time.monotonic() - started < 10
    assert dockerd.status()["pid"] is None
