"""Issue 12, items 1-3: the team deployment for real. The user-code image (deploy/Dockerfile, built
once per set of inputs), deploy/dagster.yaml on a real PostgreSQL server, the code location served
from the image, `dagster-daemon run`, git remotes served by `git daemon`, the sandbox on the host:
git_tag_sensor turns a pushed tag into one completed run in a container of its own, and a run
terminated the way the UI does it stops packer in the container with nothing left behind.

The default-launcher test needs no docker: where docker cannot start the container tests skip
(conftest's docker_daemon says why) and it still runs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

import teamkit
from teamkit import (FAULT_IMAGE, FAULT_REPO, REBUILT, Deployment, compute_logs, finished, sensor_triggered_run,
                     start_deployment)
from image_assets import dockerd
from image_assets.devtools import deploy_image

pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def pg():
    try:
        with teamkit.postgres_server() as server:
            yield server
    except teamkit.Missing as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def user_code_image(docker_daemon):
    ref, seconds = deploy_image.build()
    print(f"user-code image {ref}: " + ("present (inputs unchanged)" if seconds is None else f"built in {seconds:.0f} s"))
    return ref


def docker_inspect(ref: str) -> dict:
    return json.loads(dockerd.docker("inspect", ref).stdout)[0]


def assert_stored_in_postgres(deploy: Deployment, run, tag: str) -> None:
    pg, rid = deploy.pg, run.run_id
    assert teamkit.psql(pg, f"SELECT status FROM runs WHERE run_id = '{rid}'") == "SUCCESS"
    assets = teamkit.psql(pg, "SELECT DISTINCT asset_key FROM event_logs WHERE dagster_event_type = "
                              f"'ASSET_MATERIALIZATION' AND run_id = '{rid}'").split()
    assert {json.loads(a)[0] for a in assets} == REBUILT
    # The sensor's cursor: the tag it saw, in the instigators table.
    bodies = [json.loads(line) for line in teamkit.psql(pg, "SELECT instigator_body FROM instigators").splitlines()]
    cursors = [b["job_specific_data"]["cursor"] for b in bodies  # InstigatorState's stored field names
               if "git_tag_sensor" in json.dumps(b["origin"]) and b.get("job_specific_data")]
    assert len(cursors) == 1 and "ansible-roles" in cursors[0] and f'"{tag}"' in cursors[0], cursors
    assert int(teamkit.psql(pg, "SELECT count(*) FROM job_ticks WHERE status = 'SUCCESS'")) >= 1
    # The packer pool's slots (default_limit 4), none held once the run ended.
    assert teamkit.psql(pg, "SELECT count(*), count(run_id) FROM concurrency_slots WHERE concurrency_key = 'packer'") == "4|0"


def assert_no_secret(deploy: Deployment, *texts: str) -> None:
    password = deploy.pg["password"]
    for text in texts:
        assert password not in text
    assert teamkit.psql(deploy.pg, f"SELECT count(*) FROM event_logs WHERE event LIKE '%{password}%'") == "0"


@pytest.fixture(scope="module")
def docker_team(pg, user_code_image, tmp_path_factory):
    from contextlib import ExitStack
    with ExitStack() as stack:
        yield start_deployment(stack, tmp_path_factory.mktemp("team_docker"), pg, "docker", user_code_image)


def test_user_code_image(user_code_image):
    # Built once per set of inputs: asking again builds nothing.
    assert deploy_image.build() == (user_code_image, None)
    image = docker_inspect(user_code_image)
    assert image["Config"]["Labels"]["image-assets.inputs"].startswith(user_code_image.rsplit(":", 1)[1])
    script = ("packer version; python -c 'import dagster, dagster_docker, dagster_postgres, image_assets; "
              "print(\"dagster\", dagster.__version__)'; dagster definitions validate -m definitions 2>&1 | tail -n1; "
              "ls packer/aws/linux packer/ansible/global.yml packer/scripts/linux/finalize.sh compliance/debian11-container.xml; "
              "cat /etc/ssl/certs/ca-certificates.crt")
    out = subprocess.run([dockerd.docker_bin(), "run", "--rm", "--network", "host", user_code_image, "sh", "-c", script],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert out.stdout.startswith("Packer v1.6.6\n")
    assert f"dagster {dg.__version__}\n" in out.stdout  # the daemon's release
    assert "All code locations passed validation" in out.stdout
    assert "layer.pkr.hcl" in out.stdout and "sources.pkr.hcl" in out.stdout
    # Debian's CA bundle only: none of the host's own CAs (the build trusted them for pip alone).
    for crt in Path("/usr/local/share/ca-certificates").glob("**/*.crt"):
        body = "".join(line for line in crt.read_text().splitlines() if not line.startswith("-----"))
        assert body[:200] not in out.stdout.replace("\n", ""), f"{crt} shipped in the image"


def test_sensor_run_in_a_container(docker_team, user_code_image):
    deploy = docker_team
    run, tag, seconds = sensor_triggered_run(deploy, "ansible-roles", REBUILT, until=finished)
    print(f"docker launcher: tag {tag} -> run {run.run_id} {run.status.value} in {seconds:.1f} s")
    assert run.status == dg.DagsterRunStatus.SUCCESS, deploy.daemon_log.read_text()[-3000:]
    assert json.loads(run.tags["image-assets/git-refs"])["ansible-roles"].startswith(f"{tag}@")
    # Launched by DockerRunLauncher in a container of its own, from the image serving the code.
    container_id = run.tags["docker/container_id"]
    assert run.tags["dagster/image"] == user_code_image
    listed = dockerd.docker("ps", "-aq", "--no-trunc", "--filter", f"label=dagster/run_id={run.run_id}").stdout.split()
    assert listed == [container_id]
    # The run is recorded as finished just before its worker exits.
    c = teamkit.wait_for(lambda: (i := docker_inspect(container_id))["State"]["Status"] != "running" and i, 60,
                         "the run's container to exit")
    assert c["Config"]["Image"] == user_code_image and c["Config"]["Cmd"][:3] == ["dagster", "api", "execute_run"]
    assert c["HostConfig"]["NetworkMode"] == "host" and c["HostConfig"]["Init"] is True
    assert c["State"]["Status"] == "exited" and c["State"]["ExitCode"] == 0
    # Its compute logs (packer's output) reached DAGSTER_HOME on the host through the mount.
    logs = compute_logs(deploy.home, run.run_id)
    assert logs.count("packer 1.6.6 built us-east-1:ami-") == len(REBUILT), logs[-2000:]
    assert_stored_in_postgres(deploy, run, tag)
    container_logs = subprocess.run([dockerd.docker_bin(), "logs", container_id], capture_output=True, text=True,
                                    timeout=60)
    assert_no_secret(deploy, logs, container_logs.stdout + container_logs.stderr, deploy.daemon_log.read_text(),
                     json.dumps(c["Config"]["Cmd"]))


def test_terminated_container_run_leaves_nothing(docker_team, cloud):
    from conftest import sandbox_inventory
    sys.path.insert(0, str(Path(__file__).parent / "faults"))
    from faultkit import pids_with_env

    deploy = docker_team
    before = sandbox_inventory(cloud)
    building = lambda run: "building-now" in compute_logs(deploy.home, run.run_id)  # noqa: E731
    run, _, _ = sensor_triggered_run(deploy, FAULT_REPO, {FAULT_IMAGE}, until=building)
    assert pids_with_env("FAULT_MARK", deploy.mark), "packer's processes in the container, seen from the host"
    assert len(sandbox_inventory(cloud)["instances"] - before["instances"]) == 1
    with deploy.instance() as instance:
        started = time.monotonic()
        # The UI's Terminate mutation: QueuedRunCoordinator.cancel_run -> DockerRunLauncher.terminate ->
        # docker stop with deploy/dagster.yaml's stop_timeout (it returns once the container exited).
        assert teamkit.terminate_as_the_ui(deploy, instance, run.run_id) == "TerminateRunSuccess"
        stopped = time.monotonic() - started
        run = teamkit.wait_for(lambda: (r := instance.get_run_by_id(run.run_id)).is_finished and r, 120,
                               "the terminated run to be recorded as finished")
        assert instance.get_latest_materialization_event(dg.AssetKey([FAULT_IMAGE])) is None
    print(f"terminate: docker stop returned after {stopped:.1f} s; run {run.status.value}")
    assert run.status == dg.DagsterRunStatus.CANCELED
    c = teamkit.wait_for(lambda: (i := docker_inspect(run.tags["docker/container_id"]))["State"]["Status"] != "running"
                         and i, 60, "the run's container to exit")
    # Ended by its own run worker after packer's cleanup, not killed at the stop timeout (137).
    assert c["State"]["Status"] == "exited" and c["State"]["ExitCode"] != 137, c["State"]
    logs = compute_logs(deploy.home, run.run_id)
    assert "sending SIGINT to packer" in logs, logs[-2000:]
    teamkit.wait_for(lambda: not pids_with_env("FAULT_MARK", deploy.mark), 30, "no process of the run left")
    assert sandbox_inventory(cloud) == before


def test_sensor_run_with_the_default_launcher(pg, tmp_path):
    """The same deployment without docker: deploy/dagster.yaml minus run_launcher, the code location
    on this host; runs, events, cursor and pool slots in Postgres all the same."""
    from contextlib import ExitStack
    with ExitStack() as stack:
        deploy = start_deployment(stack, tmp_path, pg, "default")
        run, tag, seconds = sensor_triggered_run(deploy, "ansible-roles", REBUILT, until=finished)
        print(f"default launcher: tag {tag} -> run {run.run_id} {run.status.value} in {seconds:.1f} s")
        assert run.status == dg.DagsterRunStatus.SUCCESS, deploy.daemon_log.read_text()[-3000:]
        assert "docker/container_id" not in run.tags
        assert_stored_in_postgres(deploy, run, tag)
        assert_no_secret(deploy, compute_logs(deploy.home, run.run_id), deploy.daemon_log.read_text())


def test_killed_container_run_fails_and_the_next_build_cleans_up(docker_team, cloud):
    """A run's container SIGKILLed mid-build (docker kill: no cleanup at all): run monitoring marks
    the run FAILURE, and the next build of the image, in another container, finds the dead build in
    the lock file of the shared work dir and removes its instance, key pair and security group."""
    from conftest import sandbox_inventory
    sys.path.insert(0, str(Path(__file__).parent / "faults"))
    from faultkit import pids_with_env

    deploy = docker_team
    before = sandbox_inventory(cloud)
    building = lambda run: "building-now" in compute_logs(deploy.home, run.run_id)  # noqa: E731
    killed, _, _ = sensor_triggered_run(deploy, FAULT_REPO, {FAULT_IMAGE}, until=building)
    dockerd.docker("kill", killed.tags["docker/container_id"])
    assert len(sandbox_inventory(cloud)["instances"] - before["instances"]) == 1  # packer had no time to clean
    with deploy.instance() as instance:
        killed = teamkit.wait_for(lambda: (r := instance.get_run_by_id(killed.run_id)).is_finished and r, 120,
                                  "run monitoring to mark the killed run finished",
                                  diagnose=lambda: deploy.daemon_log.read_text(errors="replace")[-3000:])
        assert killed.status == dg.DagsterRunStatus.FAILURE
        # The next build, in a new container, holding the image's lock, cleans up; then it is terminated.
        nxt, _, _ = sensor_triggered_run(deploy, FAULT_REPO, {FAULT_IMAGE}, until=building)
        assert nxt.tags["docker/container_id"] != killed.tags["docker/container_id"]
        mid = sandbox_inventory(cloud)
        assert len(mid["instances"] - before["instances"]) == 1  # the new build's own instance only
        assert instance.run_coordinator.cancel_run(nxt.run_id)
        teamkit.wait_for(lambda: instance.get_run_by_id(nxt.run_id).is_finished, 120, "the second run to finish")
    assert killed.run_id in compute_logs(deploy.home, nxt.run_id)  # it said whose leftovers it removed
    teamkit.wait_for(lambda: not pids_with_env("FAULT_MARK", deploy.mark), 30, "no process of the runs left")
    assert sandbox_inventory(cloud) == before
