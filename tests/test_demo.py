"""The demo as the README runs it: bin/demo's terminal lines (a real `dagster asset materialize` of
the demo tree on the sandbox, piped through `python -m image_assets.devtools.demo progress` as bin/demo pipes
it), and the tag and channel commands of the README and docs/lifecycle.md, read from those files
and run as written, in a copy of the demo project."""

import ipaddress
import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from conftest import PROJECT, latest, write_demo_catalog
from test_cli import LINUX_TREE
from test_lifecycle import run
from image_assets.catalog import load_catalog
from image_assets.devtools.demo import EVENT_LINE
from image_assets.stores import connect

BIN = Path(sys.executable).parent
LIFECYCLE = PROJECT / "docs" / "lifecycle.md"


def doc_commands(path: Path, marker: str) -> list[str]:
    """The commands of the first ```bash block in `path` that holds `marker`, as written there:
    each line that is not a comment, without its trailing comment."""
    block = next(b for b in re.findall(r"```bash\n(.*?)```", path.read_text(), re.S) if marker in b)
    return [re.sub(r"\s+#.*$", "", line) for line in block.splitlines() if line.strip() and not line.startswith("#")]


def progress(text: str, env: dict) -> list[str]:
    done = subprocess.run([sys.executable, "-m", "image_assets.devtools.demo", "progress"], input=text, capture_output=True,
                          text=True, env=env, cwd=PROJECT, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


# A check the sandbox cannot run on an image with no machine (the al2023 tree): a WARN line, not a failure.
NOT_RUN_LINE = re.compile(r"    check '(image_tests|compliance)' on '\S+' did not pass: '(.* )?not run on the sandbox: .*")


def done_lines(lines: list[str]) -> dict[str, int]:
    """Image name -> how many "done" lines it got; any other line but a not-run check fails."""
    counts: dict[str, int] = {}
    for line in lines:
        if NOT_RUN_LINE.fullmatch(line):
            continue
        match = re.fullmatch(r"  (\S+) +done in (?:\d+m)?[0-9.]+m?s", line)  # 106ms, 1.28s, 4m48s
        assert match, f"not a progress line: {line!r}"
        counts[match[1]] = counts.get(match[1], 0) + 1
    return counts


def test_every_built_image_gets_its_line(tmp_path, work_dir):
    """bin/demo's sandbox tree as shipped: the Debian tree's provisioners run over SSH on loopback
    addresses, its image tests and OpenSCAP scores pass and each layer records its package delta;
    the Windows tree says its template was not run and its checks are not run."""
    catalog_path = write_demo_catalog(tmp_path / "project", machines=True)
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "IMAGE_ASSETS_CATALOG": str(catalog_path)}
    log = tmp_path / "sandbox.log"
    # bin/demo's pipeline, word for word but for the paths.
    piped = subprocess.run(["bash", "-o", "pipefail", "-c",
                            f"{BIN}/dagster asset materialize -m definitions --select '*' 2>&1 | tee {log} "
                            f"| {sys.executable} -m image_assets.devtools.demo progress"],
                           capture_output=True, text=True, env=env, cwd=PROJECT, timeout=1800)
    assert piped.returncode == 0, piped.stdout + piped.stderr
    raw = log.read_text()
    assert "amazon-ebs.aws:" in raw  # packer's own output, between Dagster's lines
    addresses = set(re.findall(r"Using ssh communicator to connect: (\S+)", raw))
    assert addresses and all(ipaddress.ip_address(a).is_loopback for a in addresses), addresses
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for name in LINUX_TREE:
            meta = latest(instance, name)
            assert meta["provisioning"] == "ran" and meta["files_changed"] > 0, (name, meta)
            for check in ("image_tests", "compliance"):
                record = instance.event_log_storage.get_asset_check_execution_history(
                    dg.AssetCheckKey(dg.AssetKey([name]), check), limit=1)[0]
                assert record.status == AssetCheckExecutionRecordStatus.SUCCEEDED, (name, check)
        assert latest(instance, "global-linux")["packages_added"]  # the hardening installs auditd and more
        for name in ("global-windows", "service-iis"):
            assert latest(instance, name)["provisioning"].startswith("not run on the sandbox: "), name
    names = list(load_catalog(catalog_path).images)
    assert done_lines(piped.stdout.splitlines()) == {name: 1 for name in names}, piped.stdout

    # Dagster mirrors a step's own lines to the output through a `tail -F` it stops when the step
    # ends, so a loaded machine loses a step's last lines (STEP_SUCCESS among them). The worst case
    # of that: only the run's parent process's lines reach the output, none of a step's.
    start = next(m for m in map(EVENT_LINE.search, raw.splitlines()) if m and m["event"] == "RUN_START")
    parent = f" - {start['run']} - {start['pid']} - "
    parents_only = "".join(line for line in raw.splitlines(keepends=True) if parent in line)
    assert "STEP_SUCCESS" not in parents_only and "RUN_SUCCESS" in parents_only
    assert done_lines(progress(parents_only, env)) == {name: 1 for name in names}


def test_doc_tag_demo_rebuilds_and_promotes(tmp_path, work_dir, instance):
    """The by-hand tag demo (README "A first walk: a change, its tag, the rebuild", the same commands
    in docs/lifecycle.md) and docs/lifecycle.md's promote, read from the files and run as written, in
    a copy of the demo project: a change and its tag rebuild the Linux tree, then global-linux's build
    is promoted to stable."""
    walk = doc_commands(LIFECYCLE, "demo cursor")
    assert doc_commands(PROJECT / "README.md", "demo cursor") == walk
    cursor_cmd, change_cmd, tag_cmd, preview_cmd, build_cmd, summary_cmd = walk
    promote_cmd = next(c for c in doc_commands(LIFECYCLE, "promote global-linux") if " promote " in c)
    assert promote_cmd in doc_commands(PROJECT / "README.md", "promote global-linux")

    def own_region(doc):
        doc["defaults"]["region"] = "eu-north-1"  # its own images and channels in the session sandbox
    project = tmp_path / "project"
    catalog = load_catalog(write_demo_catalog(project, own_region))
    (project / "bin").symlink_to(PROJECT / "bin")  # the docs run bin/tag-release from the project
    run(catalog, instance, "al2023*")  # what bin/demo built
    before = {name: latest(instance, name)["image_id"] for name in LINUX_TREE}
    env = {**os.environ, "IMAGE_ASSETS_CATALOG": str(catalog.path), "DAGSTER_HOME": instance.root_directory,
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(PROJECT)}

    def sh(command: str) -> str:
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, cwd=project,
                              timeout=600)
        assert done.returncode == 0, f"{command}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
        return done.stdout + done.stderr

    assert cursor_cmd.startswith("cursor=$(")
    # The cursor's value, for the "$cursor" of the commands below: printed last, on stderr.
    env["cursor"] = sh(f"{cursor_cmd} && printf '\\n%s\\n' \"$cursor\" >&2").splitlines()[-1]
    changed = sh(change_cmd)
    assert changed.startswith("ansible-roles: committed ") and "CHANGES += 'demo change at " in changed
    tag, commit = sh(tag_cmd).split()
    assert tag == "v1.0.1" and changed.split()[2] == commit[:len(changed.split()[2])]
    preview = sh(preview_cmd)
    assert ("git_tag_sensor: ansible-roles@v1.0.1 -> rebuild global-linux, python310, service-sshd-banner, "
            "service-urllib3") in preview and "run requests for 1 run" in preview
    built = sh(build_cmd)
    assert done_lines(built.splitlines()) == {name: 1 for name in LINUX_TREE}
    summary = {line.split()[0]: line.split() for line in sh(summary_cmd).splitlines()[1:]}
    for name in LINUX_TREE:  # rebuilt, not reused
        meta = latest(instance, name)
        assert meta["reused"] is False and meta["image_id"] != before[name], name
        assert summary[name][2] == meta["image_id"] and summary[name][4] == "False", summary[name]
    assert "ansible-roles=v1.0.1" in summary["global-linux"]

    promoted = sh(promote_cmd)
    new_global = latest(instance, "global-linux")["image_id"]
    assert f"global-linux stable (eu-north-1): promoted (unset) -> {new_global}" in promoted
    assert connect("sandbox", "eu-north-1").channel_get("global-linux", "stable") == new_global
