"""Local git repositories the demo catalog builds from, so it runs offline as it stands.

ansible-roles holds this project's packer/ansible tree; service-urllib3 a small service. Each gets
a bare repository under .demo/git with an initial v1.0.0 tag, as an image repo's CI would push.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
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


def summary() -> None:
    """One line per catalog image: its current image id, parent and inputs (DAGSTER_HOME's instance)."""
    import dagster as dg

    from image_assets.records import latest_metadata
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
    from image_assets.records import latest_metadata

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


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "repos"
    if command == "repos":
        for repo, path in create_demo_repos(force="--force" in sys.argv).items():
            print(f"demo repo {repo}: {path}")
    elif command == "summary":
        summary()
    elif command == "scores":
        scores()
    elif command == "cursor":
        # What git_tag_sensor records as its baseline right now, for `dagster sensor preview --cursor`.
        import logging

        from image_assets.catalog import load_catalog
        from image_assets.sensors import evaluate_git_tags

        print(evaluate_git_tags(load_catalog(), None, logging.getLogger("image_assets.demo")).cursor)
    else:
        sys.exit("usage: python -m image_assets.demo repos [--force] | summary | scores | cursor")
