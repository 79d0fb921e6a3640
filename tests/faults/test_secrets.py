"""Item 5: secrets appear nowhere: stdout/stderr, DAGSTER_HOME (event log, compute logs), work dirs."""

import uuid
from pathlib import Path

from faultkit import IMAGE, cli_env, run_cli, write_fault_catalog


def hits(root: Path, needles: list[str]) -> list[str]:
    """Every file under root (read as bytes: sqlite too) that holds any needle."""
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path}: {n}" for n in needles if n.encode() in data]
    return found


def test_secrets_leak_nowhere_in_success_and_failure(tmp_path, work_dir):
    token, password, pip, aws = (f"{kind}-{uuid.uuid4().hex}" for kind in ("tok", "pw", "pip", "aws"))
    secrets = [token, password, pip, aws]
    variables = {"db_password": password, "secret_env": {"PIP_TOKEN": pip}}
    home = tmp_path / "home"
    env = {"FAULT_API_TOKEN": token, "AWS_SECRET_ACCESS_KEY": aws, "AWS_ACCESS_KEY_ID": "AKIAFAULTSUITE"}

    ok_catalog = write_fault_catalog(tmp_path / "ok", variables, {"api_token": "FAULT_API_TOKEN"})
    ok = run_cli("*", cli_env(home, ok_catalog, **env))
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-3000:]
    # The provisioner echoed all three template secrets; each line reached the log masked.
    logs = ok.stdout + ok.stderr + "".join(p.read_text() for p in home.rglob("compute_logs/*.out"))
    assert "provisioning with token=<redacted> password=<redacted> env=<redacted>" in logs

    bad_catalog = write_fault_catalog(tmp_path / "bad", {**variables, "exit_code": 3}, {"api_token": "FAULT_API_TOKEN"})
    bad = run_cli(IMAGE, cli_env(home, bad_catalog, **env))
    assert bad.returncode != 0
    logs = bad.stdout + bad.stderr + "".join(p.read_text() for p in home.rglob("compute_logs/*.out"))
    assert "failed to log in with <redacted> / <redacted>" in logs

    for proc in (ok, bad):
        assert not [s for s in secrets if s in proc.stdout or s in proc.stderr]
    assert hits(home, secrets) == []
    assert hits(work_dir, secrets) == [] if work_dir.exists() else True
    # The search itself works: the planted value is found where it legitimately is.
    assert hits(ok_catalog.parent, [password])
