"""One git_tag_sensor-triggered run through DockerRunLauncher (a container per run) against the same
run with Dagster's default launcher (a process beside the code location), measured in one run.

Both use the team config (deploy/dagster.yaml; the default one without its run_launcher block) on
one real PostgreSQL server, `dagster-daemon run`, the demo tree built first, and its repos served
by `git daemon`. A round pushes a new commit and tag on ansible-roles and times the run that
rebuilds global-linux, python310, service-urllib3 and service-sshd-banner on the sandbox:

    tag -> requested   the sensor's interval (5 s here) and its tick
    requested -> start the queue, the launch (container create + start) and the run worker's start
    start -> end       the run itself (4 packer builds, their checks)

With docker the code location is served from the user-code image; with the default launcher from
this checkout on the host (so the runs' code is the same, the process around it is not).

    python bench/bench_launchers.py [--rounds N]      # needs docker, postgresql (bin/setup)
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(PROJECT), str(PROJECT / "tests")]

import teamkit  # noqa: E402
from image_assets import dockerd, sandbox  # noqa: E402
from image_assets.devtools import deploy_image


def rounds_for(stack, root, pg, launcher, image, rounds):
    deploy = teamkit.start_deployment(stack, root, pg, launcher, image)
    out = []
    with deploy.instance() as instance:
        for _ in range(rounds):
            run, tag, total = teamkit.sensor_triggered_run(deploy, "ansible-roles", teamkit.REBUILT,
                                                           until=teamkit.finished)
            if run.status.value != "SUCCESS":
                raise SystemExit(f"{launcher}: run {run.run_id} ended {run.status.value}; see {deploy.daemon_log}")
            record = instance.get_run_record_by_id(run.run_id)
            requested = record.create_timestamp.timestamp()
            out.append({"total": total, "to_start": record.start_time - requested,
                        "run": record.end_time - record.start_time,
                        "tag_to_request": total - (record.end_time - requested)})  # total ends at the run's end
            print(f"  {launcher}: {tag} run {run.run_id[:8]}: tag->requested {out[-1]['tag_to_request']:.1f} s, "
                  f"requested->start {out[-1]['to_start']:.1f} s, start->end {out[-1]['run']:.1f} s, "
                  f"tag->end {total:.1f} s", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-launchers-"))
    os.environ.update({"IMAGE_ASSETS_SANDBOX_PORT": str(teamkit.free_port()),
                       "IMAGE_ASSETS_STATE_DIR": str(tmp / "state")})
    started = dockerd.start()
    results = {}
    try:
        image, seconds = deploy_image.build()
        print(f"user-code image {image}: " + ("present" if seconds is None else f"built in {seconds:.0f} s"))
        with teamkit.postgres_server() as pg:
            for launcher in ("default", "docker"):
                with ExitStack() as stack:
                    results[launcher] = rounds_for(stack, tmp / launcher, pg, launcher, image, args.rounds)
    finally:
        teamkit.remove_test_containers(dockerd.docker_bin())
        sandbox.stop(forget=True)  # its state dir goes next: its kept images with it
        if started:
            dockerd.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in results.items()}
    for launcher, label in (("default", "default launcher (process)   "), ("docker", "DockerRunLauncher (container)")):
        m = med[launcher]
        print(f"{label}: tag->end {m['total']:.1f} s; requested->start {m['to_start']:.1f} s, "
              f"start->end {m['run']:.1f} s (median of {args.rounds})")
    d, p = med["docker"], med["default"]
    print(f"container per run costs {d['to_start'] - p['to_start']:+.1f} s to start and "
          f"{d['run'] - p['run']:+.1f} s in the run; tag->end ratio {d['total'] / p['total']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
