"""The local target's docker engine and its Debian 11 base image.

`start()` starts `dockerd --iptables=false --bridge=none` when no daemon answers, fully detached
(own session, output to a log file, pidfile in the state dir), as sandbox.py does for the emulator;
`stop()` stops only a daemon recorded in that pidfile. `base_image()` makes the vendor image of the
local target once: `debootstrap --variant=minbase` of bullseye (python3 for Ansible, openssh-server
so the SSH hardening runs) imported as BASE_IMAGE. Every docker call has a timeout; where docker
cannot run, DockerUnavailable says why.
CLI: `python -m image_assets.dockerd start|stop|status|base-image` (exit 3: docker cannot run here).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from image_assets.errors import ImageAssetsError

BASE_IMAGE = "image-assets/debian11-base"
BASE_SUITE = "bullseye"
BASE_PACKAGES = ["python3", "openssh-server"]
MIRROR = "http://deb.debian.org/debian"
DOCKERD_ARGS = ["--iptables=false", "--bridge=none"]
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
UNAVAILABLE = 3  # CLI exit code: docker cannot run on this machine


class DockerUnavailable(ImageAssetsError):
    """No docker daemon answers and none can be started here."""


def docker_bin() -> str:
    """The docker client: env IMAGE_ASSETS_DOCKER, else docker.io's /usr/bin/docker, else PATH's.

    Measured: /usr/local/bin/docker on these machines is a real static client (28.2.2, API 1.50) that
    negotiates down to docker.io's daemon (20.10, API 1.41); docker.io's own client is used where present.
    """
    return os.environ.get("IMAGE_ASSETS_DOCKER") or ("/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK)
                                                     else shutil.which("docker") or "docker")


def client_env(env: dict | None = None) -> dict[str, str]:
    """env (default os.environ) with docker_bin()'s directory first on PATH: packer's docker builder
    runs `docker` from PATH, so it then uses the same client as this module."""
    env = dict(os.environ if env is None else env)
    env["PATH"] = os.pathsep.join([str(Path(docker_bin()).parent), env.get("PATH", "")])
    return env


def docker(*args: str, timeout: float = 60, check: bool = True, **kw) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run([docker_bin(), *args], capture_output=True, text=True, timeout=timeout, **kw)
    except FileNotFoundError:
        raise DockerUnavailable(f"no docker client ({docker_bin()}): apt-get install docker.io") from None
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def state_dir() -> Path:
    d = os.environ.get("IMAGE_ASSETS_STATE_DIR")
    path = Path(d) if d else Path.home() / ".cache" / "image-assets" / "sandbox"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _paths() -> tuple[Path, Path, Path]:
    d = state_dir()
    return d / "dockerd.pid", d / "dockerd.lock", d / "dockerd.log"


@contextmanager
def _locked():
    with open(_paths()[1], "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def is_running() -> bool:
    """True if a docker daemon answers the client (10 s at most)."""
    try:
        return docker("version", "--format", "{{.Server.Version}}", timeout=10, check=False).returncode == 0
    except (DockerUnavailable, subprocess.TimeoutExpired):
        return False


def _read_pid() -> int | None:
    """The pid in our pidfile, if that process is alive and is dockerd (pids get reused)."""
    try:
        pid = int(_paths()[0].read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError, IndexError):
        return None
    return pid if cmdline.endswith(b"dockerd") and state != "Z" else None


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start() -> bool:
    """Start dockerd unless a daemon answers; True if this call started it. Raises DockerUnavailable."""
    pidfile, _, log = _paths()
    with _locked():
        if is_running():
            return False
        if _read_pid() is not None:  # ours, alive, but no answer through this client: never start a second
            raise DockerUnavailable(f"dockerd pid {_read_pid()} (started by image-assets) does not answer "
                                    f"{docker_bin()}; stop it: python -m image_assets.dockerd stop")
        dockerd = (os.environ.get("IMAGE_ASSETS_DOCKERD") or shutil.which("dockerd")
                   or ("/usr/sbin/dockerd" if os.access("/usr/sbin/dockerd", os.X_OK) else None))
        if dockerd is None or not os.access(dockerd, os.X_OK):
            raise DockerUnavailable("no dockerd: apt-get install docker.io (bin/setup does)")
        if os.geteuid() != 0:
            raise DockerUnavailable("no docker daemon answers and starting dockerd needs root")
        with open(log, "ab") as out:
            proc = subprocess.Popen([dockerd, *DOCKERD_ARGS], stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
        pidfile.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + START_TIMEOUT
        while not is_running():
            if proc.poll() is not None or time.monotonic() > deadline:
                why = f"exited ({proc.poll()})" if proc.poll() is not None else f"not answering after {START_TIMEOUT:.0f} s"
                _kill(proc.pid)
                proc.poll()
                pidfile.unlink(missing_ok=True)
                raise DockerUnavailable(f"dockerd {' '.join(DOCKERD_ARGS)} {why}; log {log}:\n{_tail(log)}")
            time.sleep(0.1)
    return True


def _gone(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid  # our child: reaped once all its threads ended
    except ChildProcessError:
        pass
    try:  # another process's child (a CLI stop): a zombie whose threads have all ended (a Go
        # daemon's leader shows Z while its other threads still shut down)
        zombie = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        return zombie and len(os.listdir(f"/proc/{pid}/task")) <= 1
    except OSError:
        return True


def _kill(pid: int) -> None:
    """SIGTERM dockerd (it stops its containers and containerd), SIGKILL its session if it lingers."""
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig) if sig == signal.SIGTERM else os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if _gone(pid):
                return
            time.sleep(0.1)
    raise RuntimeError(f"dockerd pid {pid} did not exit")


def stop() -> bool:
    """Stop the dockerd recorded in our pidfile; True if one was stopped. Never touches another daemon."""
    with _locked():
        pid = _read_pid()
        if pid is not None:
            _kill(pid)
        _paths()[0].unlink(missing_ok=True)
    return pid is not None


def image_id(ref: str) -> str | None:
    done = docker("image", "inspect", "--format", "{{.Id}}", ref, check=False, timeout=30)
    return done.stdout.strip() if done.returncode == 0 else None


def base_image(name: str = BASE_IMAGE, suite: str = BASE_SUITE, packages: list[str] | None = None,
               prepare: Callable[[Path], None] | None = None) -> tuple[str, float | None]:
    """(image id, seconds it took to make; None when it was present). Needs a running daemon and root.
    `suite` and `packages` make other debootstrap images the same way (deploy_image: bookworm);
    `prepare(root)` changes the debootstrapped tree before it is imported (the sandbox's images add a user)."""
    packages = BASE_PACKAGES if packages is None else packages
    with _locked():
        found = image_id(name)
        if found:
            return found, None
        debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
        if not os.access(debootstrap, os.X_OK):
            raise RuntimeError("no debootstrap: apt-get install debootstrap (bin/setup does)")
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=state_dir(), prefix="debootstrap-") as tmp:
            root = Path(tmp) / "root"
            done = subprocess.run([debootstrap, "--variant=minbase", f"--include={','.join(packages)}",
                                   suite, str(root), MIRROR], capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                raise RuntimeError(f"debootstrap {suite} failed ({done.returncode}):\n{done.stdout[-2000:]}"
                                   f"{done.stderr[-2000:]}")
            # Like a cloud vendor image: no host keys baked in (each instance makes its own).
            for key in (root / "etc" / "ssh").glob("ssh_host_*"):
                key.unlink()
            if prepare is not None:
                prepare(root)
            tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
            try:
                imported = subprocess.run(
                    [docker_bin(), "import", "--change", 'CMD ["/bin/bash"]',
                     "--change", f"LABEL org.opencontainers.image.title={name}",
                     "--change", "LABEL org.opencontainers.image.description=" + json.dumps(
                         f"debootstrap --variant=minbase --include={','.join(packages)} {suite}"),
                     "-", name], stdin=tar.stdout, capture_output=True, text=True, timeout=600)
            finally:
                tar.stdout.close()
                tar.wait(timeout=600)
            if imported.returncode != 0 or tar.returncode != 0:
                raise RuntimeError(f"docker import {name} failed: {imported.stderr.strip()}")
        return image_id(name) or imported.stdout.strip(), time.monotonic() - started


def status() -> dict:
    return {"running": is_running(), "pid": _read_pid(), "log": str(_paths()[2]), "docker": docker_bin()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m image_assets.dockerd")
    parser.add_argument("command", choices=["start", "stop", "status", "base-image"])
    args = parser.parse_args(argv)
    if args.command == "status":
        s = status()
        print(f"docker daemon {'answers' if s['running'] else 'not running'} (client {s['docker']}; "
              f"started by image-assets: pid {s['pid']}, log {s['log']})")
        return 0 if s["running"] else 1
    if args.command == "stop":
        print("dockerd stopped" if stop() else "no dockerd started by image-assets was running")
        return 0
    try:
        t0 = time.monotonic()
        started = start()
        if args.command == "start":
            print(f"docker daemon {'started' if started else 'was already running'} ({time.monotonic() - t0:.1f} s; "
                  f"log {_paths()[2]})")
            return 0
        try:
            ref, seconds = base_image()
        finally:
            if started:
                stop()
        print(f"base image {BASE_IMAGE} {ref[:19]}: " + ("present" if seconds is None else f"made in {seconds:.0f} s"))
        return 0
    except DockerUnavailable as exc:
        print(f"dockerd: docker cannot run here: {exc}", file=sys.stderr)
        return UNAVAILABLE
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"dockerd: {args.command} failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
