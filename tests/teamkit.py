"""The pieces of a team deployment a test (or bench/bench_launchers.py) starts and always stops:
a throwaway PostgreSQL server, a git daemon serving bare repos, the code location served from the
user-code image, and `dagster-daemon run`. Each is a context manager; none is mocked."""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import conftest
import dagster as dg
import yaml
from dagster._core.scheduler.instigation import InstigatorType, TickStatus

from image_assets import dockerd, sandbox
from image_assets.devtools import demo

PROJECT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PG_INSTALL_HINT = ("PostgreSQL server binaries (initdb, pg_ctl, postgres) and psql are needed for the "
                   "deployment tests: apt-get install postgresql (or run bin/setup)")
TEST_LABEL = "image-assets.test"  # on every container started here, to find and remove them
DAGSTER = str(BIN / "dagster")
TREE = ["al2023", "windows-2016", "global-linux", "global-windows", "python310", "service-urllib3",
        "service-sshd-banner", "service-iis"]
REBUILT = {"global-linux", "python310", "service-urllib3", "service-sshd-banner"}  # by an ansible-roles tag
FAULT_IMAGE, FAULT_REPO = "fault-image", "fault-repo"
SENSOR_TAG = "dagster/sensor_name"


class Missing(RuntimeError):
    """A tool the deployment needs is not installed."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5, diagnose=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    extra = f"\n{diagnose()}" if diagnose else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{extra}")


def _run(cmd, **kw) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def pg_bin(name: str) -> str:
    """On PATH, else where Debian's postgresql package puts it."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        raise Missing(f"{name} not found. {PG_INSTALL_HINT}")
    return found


@contextmanager
def postgres_server(password: str | None = None):
    """A PostgreSQL server on 127.0.0.1:<free port> with a password user `dagster` owning database
    `dagster`; yields host, port, user, password, db and `psql` (argv for that database). Always
    stopped, its directory removed."""
    binaries = {name: pg_bin(name) for name in ("initdb", "pg_ctl", "postgres", "psql")}
    # initdb refuses to run as root: the server runs as the postgres user, in a dir it owns.
    as_pg, pw = [], None
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            raise Missing(f"no 'postgres' OS user to run the server as. {PG_INSTALL_HINT}") from None
        as_pg = [shutil.which("runuser", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin") or "runuser",
                 "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="image-assets-pg-"))
    if pw:
        os.chown(base, pw.pw_uid, pw.pw_gid)
    data, port, password = base / "data", free_port(), password or f"pw-{uuid.uuid4().hex}"
    try:
        _run([*as_pg, binaries["initdb"], "-D", str(data), "-U", "postgres", "-E", "UTF8",
              "--auth-local=trust", "--auth-host=scram-sha-256"])
        with open(data / "postgresql.conf", "a") as conf:
            # TCP on loopback only, the socket in our dir (not /var/run), no fsync: a test server.
            conf.write(f"listen_addresses = '127.0.0.1'\nport = {port}\n"
                       f"unix_socket_directories = '{base}'\nfsync = off\n")
        _run([*as_pg, binaries["pg_ctl"], "-D", str(data), "-l", str(base / "server.log"), "-w", "start"])
        admin = [binaries["psql"], "-h", str(base), "-p", str(port), "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-qAt"]
        # The password travels on psql's stdin, never in an argv another process could read.
        subprocess.run([*admin, "-d", "postgres"], input=f"CREATE ROLE dagster LOGIN PASSWORD '{password}';\n"
                       "CREATE DATABASE dagster OWNER dagster;\n", text=True, capture_output=True, check=True, timeout=60)
        yield {"host": "127.0.0.1", "port": port, "user": "dagster", "password": password, "db": "dagster",
               "psql": [*admin, "-d", "dagster"], "admin": admin}
    finally:
        try:  # a server that never started makes this fail; the dir goes either way
            subprocess.run([*as_pg, binaries["pg_ctl"], "-D", str(data), "-m", "immediate", "-w", "stop"],
                           capture_output=True, timeout=60)
        finally:
            shutil.rmtree(base, ignore_errors=True)


def create_database(pg: dict, name: str) -> dict:
    """Another database of the same server, owned by `dagster`; the returned dict points at it."""
    _run([*pg["admin"], "-d", "postgres", "-c", f"CREATE DATABASE {name} OWNER dagster"])
    return {**pg, "db": name, "psql": [*pg["admin"], "-d", name]}


def pg_env(pg: dict) -> dict[str, str]:
    return {"DAGSTER_PG_HOST": pg["host"], "DAGSTER_PG_PORT": str(pg["port"]), "DAGSTER_PG_USER": pg["user"],
            "DAGSTER_PG_PASSWORD": pg["password"], "DAGSTER_PG_DB": pg["db"]}


def psql(pg: dict, sql: str) -> str:
    return _run([*pg["psql"], "-c", sql]).strip()


@contextmanager
def git_daemon(base: Path):
    """`git daemon` serving the bare repos under `base` read-only on git://127.0.0.1:<port>/."""
    port = free_port()
    proc = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={base}",
                             "--listen=127.0.0.1", f"--port={port}", str(base)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_for(lambda: _listening(port) or proc.poll() is not None, 20, "git daemon to listen")
        if proc.poll() is not None:
            raise RuntimeError(f"git daemon exited ({proc.returncode})")
        yield f"git://127.0.0.1:{port}"
    finally:
        _stop_group(proc)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _stop_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM the process group a test started, SIGKILL it if it lingers; reaps the leader."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass
    try:  # children left in the group (the daemon's code server, run workers)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def team_home(home: Path, launcher: str) -> Path:
    """DAGSTER_HOME with deploy/dagster.yaml: as shipped but DAGSTER_HOME's own path for /srv/dagster;
    launcher "default" drops its run_launcher block (runs as processes beside the code server)."""
    home.mkdir(parents=True, exist_ok=True)
    text = (PROJECT / "deploy" / "dagster.yaml").read_text().replace("/srv/dagster", str(home))
    if launcher == "default":
        doc = yaml.safe_load(text)
        doc.pop("run_launcher")
        text = yaml.safe_dump(doc, sort_keys=False)
    (home / "dagster.yaml").write_text(text)
    return home


def env_file(path: Path, env: dict[str, str]) -> Path:
    """A docker --env-file (mode 0600): the values stay off every command line."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.writelines(f"{k}={v}\n" for k, v in env.items())
    return path


@contextmanager
def code_server(image: str, home: Path, env: dict[str, str], run_env: dict[str, str], docker: str = "docker"):
    """The code location as docs/team.md starts it: `dagster code-server start` in a container of the
    user-code image (host networking, DAGSTER_HOME mounted at its own path). `run_env` reaches every
    run container through the location's container context. Yields the workspace.yaml to use."""
    port, name = free_port(), f"image-assets-code-{uuid.uuid4().hex[:8]}"
    envs = env_file(home / f".{name}.env", {**env, "DAGSTER_HOME": str(home), "DAGSTER_CURRENT_IMAGE": image})
    # Run containers get TEST_LABEL too (container_kwargs merge key by key with deploy/dagster.yaml's).
    context = json.dumps({"docker": {"env_vars": [f"{k}={v}" for k, v in run_env.items()],
                                     "container_kwargs": {"labels": {TEST_LABEL: "run"}}}})
    workspace = home / "workspace.yaml"
    workspace.write_text(yaml.safe_dump({"load_from": [{"grpc_server": {
        "host": "127.0.0.1", "port": port, "location_name": "image-assets"}}]}))
    _run([docker, "run", "-d", "--init", "--name", name, "--network", "host", "--label", f"{TEST_LABEL}=code-server",
          "--env-file", str(envs), "-v", f"{home}:{home}", image,
          "dagster", "code-server", "start", "-h", "127.0.0.1", "-p", str(port), "-m", "definitions",
          "--container-context", context])
    try:
        grpc_ok = [str(BIN / "dagster"), "api", "grpc-health-check", "-p", str(port)]
        wait_for(lambda: subprocess.run(grpc_ok, capture_output=True, timeout=30).returncode == 0, 120,
                 "the code server in its container to answer",
                 diagnose=lambda: subprocess.run([docker, "logs", "--tail", "40", name], capture_output=True,
                                                 text=True).stderr)
        yield {"workspace": workspace, "container": name, "port": port}
    finally:
        subprocess.run([docker, "rm", "-f", name], capture_output=True, timeout=60)
        envs.unlink(missing_ok=True)


def host_workspace(home: Path) -> Path:
    """The code location as a process on this host (the daemon starts it from the checkout)."""
    workspace = home / "workspace.yaml"
    workspace.write_text(yaml.safe_dump({"load_from": [{"python_module": {
        "module_name": "definitions", "working_directory": str(PROJECT), "location_name": "image-assets"}}]}))
    return workspace


@contextmanager
def dagster_daemon(workspace: Path, env: dict[str, str], log: Path):
    """`dagster-daemon run` in its own session, output to `log`; stopped (SIGTERM, then SIGKILL)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", str(workspace)], env=env,
                                cwd=str(PROJECT), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        yield proc
    finally:
        _stop_group(proc, timeout=60)


def remove_test_containers(docker: str = "docker") -> None:
    """Every container labelled TEST_LABEL: the code servers and run containers started here."""
    ids = subprocess.run([docker, "ps", "-aq", "--filter", f"label={TEST_LABEL}"], capture_output=True, text=True,
                         timeout=60).stdout.split()
    if ids:
        subprocess.run([docker, "rm", "-f", *ids], capture_output=True, timeout=120)


@contextmanager
def environ(values: dict[str, str]):
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def write_demo_catalog(dest: Path, edit) -> Path:
    """The demo catalog in `dest` (its Linux tree on al2023: the team tests are about the deployment,
    not provisioning), with its templates and demo repos there, edited by `edit(doc)`."""
    return conftest.write_demo_catalog(dest, edit)


class Deployment:
    """A DAGSTER_HOME with deploy/dagster.yaml on one Postgres database, the demo catalog (plus a
    fault image that sleeps in packer) whose repos are served on git://127.0.0.1, the demo tree
    built into it by the CLI, and a daemon on the code location (in the image, or on this host)."""

    def __init__(self, root: Path, pg: dict, launcher: str):
        self.root, self.pg, self.launcher = root, pg, launcher
        self.home = team_home(root / "home", launcher)
        self.project = self.home / "project"  # under DAGSTER_HOME: the containers see it at this path
        self.repos = self.project / ".demo" / "git"
        self.mark = uuid.uuid4().hex  # in the env of every run container, so its processes can be found
        self.daemon_log = root / "daemon.log"
        self.workspace: Path | None = None

    def catalog(self, git_url: str) -> Path:
        def edit(doc):
            doc["defaults"]["git_sensor_interval_seconds"] = 5
            for name in doc["repos"]:
                doc["repos"][name]["url"] = f"{git_url}/{name}.git"
            doc["repos"][FAULT_REPO] = {"url": f"{git_url}/{FAULT_REPO}.git", "tags": "v*"}
            doc["images"][FAULT_IMAGE] = {"layer": "global", "parent": "al2023", "template": "fault-template",
                                          "repos": [FAULT_REPO], "variables": {"sleep_seconds": 300}}

        demo.make_repo(self.repos / f"{FAULT_REPO}.git", {"README": "fault repo\n"})
        # communicator "none": its shell-local step sleeps in the run's container, on any parent.
        shutil.copytree(PROJECT / "tests" / "fixtures" / "team-fault-template", self.project / "fault-template")
        return write_demo_catalog(self.project, edit)

    def env(self) -> dict[str, str]:
        """What every process of this deployment gets (the daemon, the CLI, the code server)."""
        return {"DAGSTER_HOME": str(self.home), **pg_env(self.pg),
                "IMAGE_ASSETS_CATALOG": str(self.project / "images.yaml"),
                "IMAGE_ASSETS_WORK_DIR": str(self.home / "work"),  # as deploy/dagster.yaml gives run containers
                "IMAGE_ASSETS_SANDBOX_PORT": str(sandbox.port())}

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.home))


def start_deployment(stack, root: Path, pg: dict, launcher: str, image: str | None = None) -> Deployment:
    """Everything in `stack` (an ExitStack): whatever happens, it is all stopped and removed."""
    pg = create_database(pg, f"team_{launcher}")
    deploy = Deployment(root, pg, launcher)
    deploy.repos.mkdir(parents=True)
    git_url = stack.enter_context(git_daemon(deploy.repos))
    deploy.catalog(git_url)
    sandbox.ensure_running()  # on the host: a run container must find it, never start its own
    stack.enter_context(environ(pg_env(pg)))  # this process opens the instance too
    host_env = {**os.environ, **deploy.env()}
    started = time.monotonic()
    cli = subprocess.run([DAGSTER, "asset", "materialize", "-m", "definitions", "--working-directory", str(PROJECT),
                          "--select", ",".join(TREE)], env={**host_env, "IMAGE_ASSETS_EXECUTOR": "in_process"},
                         capture_output=True, text=True, timeout=900)
    if cli.returncode != 0:
        raise RuntimeError(f"building the demo tree failed:\n{cli.stdout[-3000:]}\n{cli.stderr[-3000:]}")
    print(f"{launcher}: demo tree built by the CLI into Postgres in {time.monotonic() - started:.1f} s")
    if launcher == "docker":
        stack.callback(remove_test_containers, dockerd.docker_bin())
        # Runs get the catalog and sandbox port through the code location's container context, and a
        # mark no other process has (the daemon and the code server do not).
        run_env = {**{k: deploy.env()[k] for k in ("IMAGE_ASSETS_CATALOG", "IMAGE_ASSETS_SANDBOX_PORT")},
                   "FAULT_MARK": deploy.mark}
        server_env = {k: v for k, v in deploy.env().items() if k != "DAGSTER_HOME"}
        location = stack.enter_context(code_server(image, deploy.home, server_env, run_env,
                                                           docker=dockerd.docker_bin()))
        workspace = location["workspace"]
    else:
        workspace = host_workspace(deploy.home)
    deploy.workspace = workspace
    stack.enter_context(dagster_daemon(workspace, dockerd.client_env(host_env), deploy.daemon_log))
    return deploy


def git_sensor_ticks(instance) -> list:
    states = [s for s in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
              if s.instigator_name == "git_tag_sensor"]
    return [t for s in states for t in instance.get_ticks(s.instigator_origin_id, s.selector_id)]


def sensor_runs(instance, selection: set[str] | None = None) -> list:
    runs = instance.get_runs(dg.RunsFilter(tags={SENSOR_TAG: "git_tag_sensor"}))
    return [r for r in runs if selection is None or {k.to_user_string() for k in r.asset_selection or []} == selection]


def tag_release(bare: Path) -> str:
    """What an image repo's CI does on merge: a new commit on main, then the next tag on it (a new
    tag on an old commit would reuse every image: the commit is what the fingerprint holds)."""
    with tempfile.TemporaryDirectory() as work:
        git = ["git", "-c", "user.name=ci", "-c", "user.email=ci@image-assets.invalid", "-C", work]
        subprocess.run(["git", "clone", "-q", str(bare), work], check=True, capture_output=True, timeout=60)
        Path(work, "CHANGES").write_text(f"release {uuid.uuid4().hex}\n")
        for args in (["add", "CHANGES"], ["commit", "-q", "-m", "A change"], ["push", "-q", "origin", "HEAD:main"]):
            subprocess.run([*git, *args], check=True, capture_output=True, timeout=60)
    out = subprocess.run([str(PROJECT / "bin" / "tag-release"), str(bare)], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    return out.split()[0]


def sensor_triggered_run(deploy: Deployment, repo: str, selection: set[str], until=("finished",)) -> tuple:
    """Wait for the sensor's baseline, push the next tag on `repo`, wait for its one run; returns
    (run, seconds from the tag to the run's end or to the condition)."""
    with deploy.instance() as instance:
        log = lambda: deploy.daemon_log.read_text(errors="replace")[-4000:]  # noqa: E731
        wait_for(lambda: any(t.status in (TickStatus.SKIPPED, TickStatus.SUCCESS) for t in git_sensor_ticks(instance)),
                         180, "git_tag_sensor's first (baseline) tick", diagnose=log)
        before = {r.run_id for r in sensor_runs(instance)}
        tag = tag_release(deploy.repos / f"{repo}.git")
        pushed = time.monotonic()

        def new_runs():
            return [r for r in sensor_runs(instance, selection) if r.run_id not in before]

        def ready():
            runs = new_runs()
            if not runs:
                return None
            run = instance.get_run_by_id(runs[0].run_id)
            return run if until(run) else None

        run = wait_for(ready, 600, f"the run of {sorted(selection)} for {repo}@{tag}", interval=0.25,
                               diagnose=log)
        seconds = time.monotonic() - pushed
        if len(new_runs()) != 1:
            raise AssertionError(f"one run expected for {repo}@{tag}, got {[r.run_id for r in new_runs()]}")
        return run, tag, seconds


def finished(run) -> bool:
    return run.is_finished


def compute_logs(home: Path, run_id: str) -> str:
    return "".join(p.read_text(errors="replace") for p in (home / "storage" / run_id).rglob("*") if p.is_file())




# The UI's own Terminate mutation (dagster-webserver 1.13's bundle: TerminateRunPolicy SAFE_TERMINATE).
TERMINATE = """mutation Terminate($runIds: [String!]!, $terminatePolicy: TerminateRunPolicy) {
  terminateRuns(runIds: $runIds, terminatePolicy: $terminatePolicy) {
    __typename
    ... on TerminateRunsResult { terminateRunResults { __typename
      ... on TerminateRunFailure { message } ... on PythonError { message } } }
    ... on PythonError { message }
  }
}"""


def terminate_as_the_ui(deploy: Deployment, instance, run_id: str) -> str:
    """Terminate a run as the UI's button does: the GraphQL mutation, run by Dagster's own schema
    against this deployment's workspace (what dagster-webserver serves). Returns the result type."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster_graphql.test.utils import execute_dagster_graphql

    with WorkspaceProcessContext(instance, WorkspaceFileTarget(paths=[str(deploy.workspace)])) as process:
        result = execute_dagster_graphql(process.create_request_context(), TERMINATE,
                                         {"runIds": [run_id], "terminatePolicy": "SAFE_TERMINATE"})
    outcome = result.data["terminateRuns"]
    results = outcome.get("terminateRunResults") or [outcome]
    return ", ".join(f"{r['__typename']}{': ' + r['message'] if r.get('message') else ''}" for r in results)
