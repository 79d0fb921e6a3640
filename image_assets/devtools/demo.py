"""Local git repositories the demo catalog builds from, so it runs offline as it stands.

ansible-roles holds this project's packer/ansible tree; service-urllib3 a small service. Each gets
a bare repository under .demo/git with an initial v1.0.0 tag, as an image repo's CI would push.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
SERVICE_FILES = {
    "requirements.txt": "urllib3>=2,<3\n",
    "service.py": (
        '"""Demo service: fetches a URL with urllib3 instead of urllib."""\n'
        "import sys\n\nimport urllib3\n\n\n"
        "def main(url: str) -> int:\n"
        "    response = urllib3.PoolManager().request('GET', url, timeout=5.0)\n"
        "    print(response.status)\n"
        "    return 0 if response.status < 400 else 1\n\n\n"
        "if __name__ == '__main__':\n    sys.exit(main(sys.argv[1]))\n"
    ),
}


def git(*args: str, cwd: Path | None = None) -> str:
    env_args = ["-c", "user.name=image-assets demo", "-c", "user.email=demo@image-assets.invalid",
                "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"]
    done = subprocess.run(["git", *env_args, *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def make_repo(bare: Path, files: dict[str, str | Path], tag: str = "v1.0.0") -> str:
    """A bare repo at `bare` whose main branch holds `files` (text or a directory to copy), tagged."""
    bare.parent.mkdir(parents=True, exist_ok=True)
    git("init", "-q", "--bare", str(bare))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        git("clone", "-q", str(bare), str(work))
        for rel, content in files.items():
            dest = work / rel
            if isinstance(content, Path):
                shutil.copytree(content, dest, dirs_exist_ok=True)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_text(content)
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", "Initial content", cwd=work)
        git("tag", "-a", tag, "-m", f"Release {tag}", cwd=work)
        git("push", "-q", "origin", "HEAD:refs/heads/main", f"refs/tags/{tag}", cwd=work)
        return git("rev-parse", "HEAD", cwd=work)


def create_demo_repos(root: Path = PROJECT, force: bool = False) -> dict[str, Path]:
    """Create the demo repositories under root/.demo/git unless they exist; returns name -> path."""
    base = root / ".demo" / "git"
    repos = {
        "ansible-roles": {".": PROJECT / "packer" / "ansible"},  # playbooks and roles at the top
        "service-urllib3": SERVICE_FILES,
    }
    out = {}
    for name, files in repos.items():
        bare = base / f"{name}.git"
        if force and bare.exists():
            shutil.rmtree(bare)
        if not bare.exists():
            make_repo(bare, files)
        out[name] = bare
    return out


def change(repo: str) -> str:
    """A commit on the main branch of the catalog's repo `repo`, as a merged pull request makes:
    one line added to its CHANGES file. Its next tag (bin/tag-release) then has new content, and
    every image that reads the repo is rebuilt, not reused. Returns the line printed."""
    from datetime import datetime, timezone

    from image_assets.catalog import load_catalog

    catalog = load_catalog()
    if repo not in catalog.repos:
        raise KeyError(f"{catalog.path}: no repo {repo!r} under 'repos' (repos: {', '.join(catalog.repos)})")
    url = catalog.repos[repo].url
    note = f"demo change at {datetime.now(timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')}"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        git("clone", "-q", url, str(work))
        with (work / "CHANGES").open("a") as handle:
            handle.write(note + "\n")
        git("add", "CHANGES", cwd=work)
        git("commit", "-q", "-m", note, cwd=work)
        git("push", "-q", "origin", "HEAD:refs/heads/main", cwd=work)
        commit = git("rev-parse", "--short", "HEAD", cwd=work)
    return f"{repo}: committed {commit} on main of {url}: CHANGES += {note!r}"


def summary() -> None:
    """One line per catalog image: its current image id, parent and inputs (DAGSTER_HOME's instance)."""
    import dagster as dg

    from image_assets.orchestration.records import latest_metadata
    from image_assets.catalog import load_catalog

    catalog = load_catalog()
    with dg.DagsterInstance.get() as instance:
        print(f"{'image':22} {'layer':8} {'image id':22} {'parent image':22} {'reused':6} inputs")
        for name, image in catalog.images.items():
            meta = latest_metadata(instance, name) or {}
            refs = " ".join(f"{r}={ref.split('@')[0]}" for r, ref in (meta.get("git_refs") or {}).items())
            print(f"{name:22} {image.layer.value:8} {meta.get('image_id', '-'):22} "
                  f"{meta.get('parent_image_id', '-'):22} {str(meta.get('reused', '-')):6} {refs}")


def _latest_check(instance, name: str, check: str) -> tuple[dict, bool | None]:
    """(metadata, passed) of the check's latest evaluation; ({}, None) when it never ran."""
    import dagster as dg

    key = dg.AssetCheckKey(dg.AssetKey([name]), check)
    record = instance.event_log_storage.get_latest_asset_check_execution_by_key([key]).get(key)
    if not record or not record.evaluation:
        return {}, None
    return {k: v.value for k, v in record.evaluation.metadata.items()}, record.evaluation.passed


def scores() -> None:
    """One line per built image of the catalog: its image tests and OpenSCAP score, from the
    latest check evaluations in DAGSTER_HOME's instance (the local tree's demo)."""
    import dagster as dg

    from image_assets.catalog import load_catalog
    from image_assets.orchestration.records import latest_metadata

    catalog = load_catalog()
    print(f"{'image':22} {'layer':8} {'image id':14} {'compliance':40} tests")
    reports = []
    with dg.DagsterInstance.get() as instance:
        for name, image in catalog.images.items():
            if not image.parent:
                continue
            image_id = (latest_metadata(instance, name) or {}).get("image_id", "-")
            compliance, compliant = _latest_check(instance, name, "compliance")
            tests, _ = _latest_check(instance, name, "image_tests")
            score = "-"
            if "rules_passed" in compliance:
                score = (f"{compliance['rules_passed']} pass / {compliance['rules_failed']} fail, ratio "
                         f"{compliance['ratio']:.2f} ({'ok' if compliant else 'FAILED'})")
                reports.append(compliance["report"])
            ran = (f"{tests['tests_passed']}/{tests['tests_passed'] + tests['tests_failed']} passed"
                   if "tests_passed" in tests else "-")
            print(f"{name:22} {image.layer.value:8} {image_id.split(':')[-1][:12]:14} {score:40} {ran}")
    if reports:
        print("OpenSCAP reports (HTML):\n  " + "\n  ".join(reports))


# A Dagster event line of `dagster asset materialize`'s output. Searched anywhere in a line: a
# step's stdout (packer's output) is block-buffered and can end mid-line just before it.
EVENT_LINE = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4} - dagster - [A-Z]+ - \S+ - (?P<run>[0-9a-f-]{36}) - "
    r"(?P<pid>\d+) - (?:(?P<step>\w+) - )?"
    r"(?P<event>RUN_START|STEP_SUCCESS|STEP_FAILURE|ASSET_CHECK_EVALUATION) - (?P<message>.*)")
REPORTED = ("STEP_SUCCESS", "STEP_FAILURE", "ASSET_CHECK_EVALUATION")


def progress_line(event: str, image: str, message: str) -> str | None:
    """The terminal line of one event: a finished or failed image step, a failed check; else None."""
    if event == "STEP_SUCCESS":
        return f"  {image:22} done in {message.rsplit(' in ', 1)[-1].rstrip('.')}"
    if event == "STEP_FAILURE":
        return f"  {image:22} FAILED (see the log)"
    if event == "ASSET_CHECK_EVALUATION" and " did not pass" in message:
        return "    check " + message.removeprefix("Asset check ").replace(". Description: ", ": ", 1)
    return None


def _logged_events(run_id: str) -> list[tuple[str, str, str]]:
    """(event, step key, message) of the run's reported events, from DAGSTER_HOME's event log."""
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        entries = instance.all_logs(run_id, of_type={dg.DagsterEventType[e] for e in REPORTED})
    return [(e.dagster_event.event_type_value, e.step_key or "", e.dagster_event.message or "") for e in entries]


def progress(lines: Iterable[str], out=sys.stdout) -> None:
    """One line per finished or failed image step and per failed check, image names as the
    catalog spells them, from `dagster asset materialize` output on `lines` (bin/demo).

    A step's own log lines reach that output only through the `tail -F` Dagster runs on the step's
    captured log file, and Dagster stops that tail as soon as the step ends: under load a step's
    last lines (its STEP_SUCCESS among them) never reach the terminal, though the event log has
    them. So at the end, whatever the output missed is taken from the run's event log."""
    from image_assets.catalog import CatalogError, load_catalog

    try:
        images = {name.replace("-", "_"): name for name in load_catalog().images}  # step key -> image
    except CatalogError:
        images = {}
    seen: set[tuple[str, str, str]] = set()
    run_id = ""

    def report(event: str, step: str, message: str) -> None:
        message = message.split("\n", 1)[0]  # the output holds a message's first line as one line
        line = progress_line(event, images.get(step, step), message)
        if line and (event, step, message) not in seen:
            seen.add((event, step, message))
            print(line, file=out, flush=True)

    for raw in lines:
        match = EVENT_LINE.search(raw.rstrip("\n"))
        if not match:
            continue
        if match["event"] == "RUN_START":
            run_id = match["run"]
        else:
            report(match["event"], match["step"] or "", match["message"])
    if run_id and os.environ.get("DAGSTER_HOME"):
        for event in _logged_events(run_id):
            report(*event)


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "repos"
    if command == "repos":
        for repo, path in create_demo_repos(force="--force" in sys.argv).items():
            print(f"demo repo {repo}: {path}")
    elif command == "summary":
        summary()
    elif command == "scores":
        scores()
    elif command == "progress":
        progress(sys.stdin)
    elif command == "change" and len(sys.argv) == 3:
        try:
            print(change(sys.argv[2]))
        except KeyError as exc:
            print(f"error: {exc.args[0]}", file=sys.stderr)
            sys.exit(2)
    elif command == "cursor":
        # What git_tag_sensor records as its baseline right now, for `dagster sensor preview --cursor`.
        import logging

        from image_assets.catalog import load_catalog
        from image_assets.orchestration.sensors import evaluate_git_tags

        print(evaluate_git_tags(load_catalog(), None, logging.getLogger("image_assets.devtools.demo")).cursor)
    else:
        sys.exit("usage: python -m image_assets.devtools.demo repos [--force] | summary | scores | cursor | progress | change REPO")
