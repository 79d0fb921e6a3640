"""The embedded sandbox target: a local moto EC2 server on 127.0.0.1, one per port.

It outlives the process that started it (own session, stdio to a log file), so builds in
later runs find it; `stop()` works from any process through the per-port pidfile.
The images it builds are kept across restarts (sandbox_state); `reset` stops it and forgets them.
CLI: `python -m image_assets.sandbox start|stop|status|reset [--port N]`, and
`python -m image_assets.sandbox publish-vendor IMAGE` to show a vendor release on the sandbox.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

DEFAULT_PORT = 5055
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

# Fake credentials for boto3/packer against the sandbox (moto accepts anything).
CREDENTIALS: dict[str, str] = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}

_SERVER_MODULE = "image_assets.sandbox.server"
_children: dict[int, subprocess.Popen] = {}  # servers this process started, reaped by stop()


def port() -> int:
    return int(os.environ.get("IMAGE_ASSETS_SANDBOX_PORT") or DEFAULT_PORT)


def endpoint(port: int | None = None) -> str:
    return f"http://127.0.0.1:{_port(port)}"


def port_of(endpoint: str) -> int:
    """The port of a sandbox endpoint URL (http://127.0.0.1:PORT)."""
    return int(endpoint.rstrip("/").rpartition(":")[2])


def _port(p: int | None) -> int:
    return port() if p is None else int(p)


def state_dir() -> Path:
    d = os.environ.get("IMAGE_ASSETS_STATE_DIR")
    path = Path(d) if d else Path.home() / ".cache" / "image-assets" / "sandbox"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _paths(p: int) -> tuple[Path, Path, Path]:
    d = state_dir()
    return d / f"sandbox-{p}.pid", d / f"sandbox-{p}.lock", d / f"sandbox-{p}.log"


def is_running(port: int | None = None) -> bool:
    """True if something on the port answers moto's own API."""
    # No proxies: an http_proxy in the environment must not answer for 127.0.0.1.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(endpoint(port) + "/moto-api/config", timeout=2) as resp:
            return isinstance(json.load(resp), dict)
    except (OSError, ValueError):
        return False


def _listening(p: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", p)) == 0


@contextmanager
def _locked(p: int):
    # One starter/stopper per port across processes.
    with open(_paths(p)[1], "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _read_pid(p: int) -> int | None:
    """The pid in the pidfile, if that process is alive and is our server (pids get reused)."""
    try:
        pid = int(_paths(p)[0].read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    if _SERVER_MODULE.encode() not in cmdline or _exited(pid):
        return None
    return pid


def _exited(pid: int) -> bool:
    child = next((c for c in _children.values() if c.pid == pid), None)
    if child is not None:
        return child.poll() is not None  # also reaps our own child
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    # A zombie still answers kill(0); it is gone for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _log_tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _server_env(extra_env: dict | None) -> dict[str, str]:
    # The server must never see real credentials or AWS config from the caller.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(CREDENTIALS)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    env.update({k: str(v) for k, v in (extra_env or {}).items()})
    return env


def start(port: int | None = None, extra_env: dict | None = None) -> str:
    """Start the server unless one answers on the port; return its endpoint.

    extra_env (e.g. MOTO_AMIS_PATH) only applies when this call starts the server.
    """
    p = _port(port)
    pidfile, _, log = _paths(p)
    with _locked(p):
        if is_running(p):
            return endpoint(p)
        old = _read_pid(p)
        if old is not None:  # ours but not answering (hung or half started): replace it
            _kill(old)
        if _listening(p):
            raise RuntimeError(f"port {p} is in use by something that is not the moto sandbox")
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", _SERVER_MODULE, "--port", str(p)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_server_env(extra_env),
                cwd=state_dir(),
                start_new_session=True,  # survives the caller and its Ctrl-C
                close_fds=True,
            )
        if p in _children:
            _children[p].poll()  # reap a previous server of ours stopped by another process
        _children[p] = proc
        pidfile.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + START_TIMEOUT
        while not is_running(p):
            if proc.poll() is not None or time.monotonic() > deadline:
                why = "exited" if proc.poll() is not None else f"not answering after {START_TIMEOUT:.0f}s"
                _kill(proc.pid)
                pidfile.unlink(missing_ok=True)
                raise RuntimeError(f"sandbox server on port {p} {why}; log {log}:\n{_log_tail(log)}")
            time.sleep(0.1)
    return endpoint(p)


def ensure_running(port: int | None = None) -> str:
    return start(port)


def _kill(pid: int) -> None:
    """SIGTERM the server's process group, SIGKILL if it lingers; wait until gone."""
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)  # start_new_session: pgid == pid
        except ProcessLookupError:
            pass
        except OSError as e:
            if e.errno != errno.EPERM:
                raise
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if _exited(pid):
                return
            time.sleep(0.05)
    raise RuntimeError(f"sandbox server pid {pid} did not exit")


def stop(port: int | None = None, forget: bool = False) -> bool:
    """Stop the server recorded in the port's pidfile and remove its instances' containers; True if
    a server was stopped. The images it made are kept for its next start (sandbox_state), unless
    `forget`: then they go too, with their committed container images."""
    p = _port(port)
    with _locked(p):
        pid = _read_pid(p)
        if pid is not None:
            _kill(pid)
        _paths(p)[0].unlink(missing_ok=True)
        _children.pop(p, None)
        _remove_containers(p, forget)
    return pid is not None


def _remove_containers(p: int, forget: bool) -> None:
    from image_assets.sandbox import instances as sandbox_instances  # docker only where a server of this port ran
    from image_assets.sandbox import state as sandbox_state

    kept = sandbox_state.image_ids(p)
    keep = set() if forget else kept
    if forget:
        sandbox_state.forget(p)
    backing = sandbox_instances.backing_file(p)
    if not backing.exists() and not (forget and kept):  # a stopped sandbox's kept images go on reset
        return
    try:
        removed = sandbox_instances.remove_all(p, keep)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"sandbox: could not remove the containers of the sandbox on port {p}: {exc}", file=sys.stderr)
        return
    backing.unlink(missing_ok=True)
    if removed:
        print(f"sandbox: removed {len(removed)} instance container(s) of the sandbox on port {p}", file=sys.stderr)


START_HINT = "python -m image_assets.sandbox start"


def down_message(p: int, what: str) -> str:
    """What to say when the sandbox on port p is not there: its endpoint and how to start it."""
    return (f"the sandbox EC2 endpoint {endpoint(p)} {what}; start it with `{START_HINT}`"
            + ("" if p == DEFAULT_PORT else f" (IMAGE_ASSETS_SANDBOX_PORT={p})"))


class Watch:
    """Watches the sandbox while packer builds on it. When the server stops listening or another one
    replaces it, the build's instance is gone and packer's cleanup would only retry calls to a dead
    endpoint (measured: minutes), so packer's process group is killed at once and `down` says why.
    Use: `with Watch(port) as watch: ... on_start=watch.guard ...` (told packer's process group)."""

    INTERVAL = 0.5
    MISSES = 2  # consecutive refused connections: one may be a server busy accepting

    def __init__(self, port: int | None = None):
        self.port = _port(port)
        self.down = ""
        self._pgid: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._server = _read_pid(self.port)

    def guard(self, pgid: int) -> None:
        self._pgid = pgid
        self._thread = threading.Thread(target=self._run, name=f"sandbox-watch-{self.port}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        misses = 0
        while not self._stop.wait(self.INTERVAL):
            misses = 0 if _listening(self.port) else misses + 1
            server = _read_pid(self.port)
            if misses >= self.MISSES:
                self.down = down_message(self.port, "stopped answering during the build")
            elif self._server is not None and server is not None and server != self._server:
                self.down = down_message(self.port, f"was restarted during the build (server pid {self._server} "
                                                    f"is now {server}): the build's instance is gone")
            if self.down:
                try:
                    os.killpg(self._pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                return

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return False


def publish_vendor_image(owners: list[str], name: str, region: str = "us-east-1", port: int | None = None) -> dict:
    """Publish a vendor's newer release on the running sandbox (see sandbox_server.publish_vendor_image):
    the image the query (owners, name pattern) now finds as newest. Returns ImageId, Name, OwnerId,
    CreationDate and Previous (the image that was newest)."""
    body = json.dumps({"region": region, "owners": list(owners), "name": name}).encode()
    request = urllib.request.Request(endpoint(port) + "/image-assets/publish-vendor-image", data=body,
                                     headers={"Content-Type": "application/json"}, method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as exc:
        try:
            why = json.load(exc)["error"]
        except (ValueError, KeyError, TypeError):  # measured: moto without our endpoint answers HTTP 500
            why = (f"HTTP {exc.code}, no publish endpoint: a sandbox started by an older image-assets? "
                   f"restart it: python -m image_assets.sandbox stop; python -m image_assets.sandbox start")
        raise RuntimeError(f"sandbox {endpoint(port)}: {why}") from None


def _publish_vendor(name: str | None, catalog_path: str | None, p: int) -> int:
    from image_assets.catalog import CatalogError, load_catalog  # the sandbox itself needs no catalog

    try:
        catalog = load_catalog(catalog_path)
    except CatalogError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 1
    vendors = [n for n, image in catalog.images.items() if image.vendor]
    if name not in vendors:
        print(f"sandbox: publish-vendor needs one of the catalog's vendor images: {', '.join(vendors)}",
              file=sys.stderr)
        return 2
    query = catalog.images[name].vendor
    try:
        start(p)
        image = publish_vendor_image(query.owners, query.name, catalog.defaults.region, p)
    except (RuntimeError, OSError) as exc:
        print(f"sandbox: publish-vendor {name} failed: {exc}", file=sys.stderr)
        return 1
    print(f"published {image['ImageId']} {image['Name']} (owner {image['OwnerId']}, created {image['CreationDate']}) "
          f"as the newest {name} vendor image on {endpoint(p)}; it was {image['Previous']}")
    return 0


def without_debian(p: int) -> bool:
    """A running server that backs no AMI by a container while docker now answers and holds the
    sandbox's Debian images: it started before docker did."""
    from image_assets import dockerd
    from image_assets.sandbox import images as sandbox_images
    from image_assets.sandbox import instances as sandbox_instances

    if sandbox_instances.read_backing(p) or not dockerd.is_running():
        return False
    return any(dockerd.image_id(ref) for _suite, ref in sandbox_images.IMAGES.values())


def status(port: int | None = None) -> dict:
    from image_assets.sandbox import state as sandbox_state  # reads the state file only

    p = _port(port)
    return {
        "running": is_running(p),
        "pid": _read_pid(p),
        "port": p,
        "endpoint": endpoint(p),
        "log": str(_paths(p)[2]),
        "kept_images": len(sandbox_state.image_ids(p)),
        "state": str(sandbox_state.state_file(p)),
    }


def _kept(s: dict) -> str:
    return (f"keeps {s['kept_images']} image(s) made on it across restarts ({s['state']}; "
            f"`python -m image_assets.sandbox reset` forgets them)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m image_assets.sandbox")
    parser.add_argument("command", choices=["start", "stop", "status", "reset", "publish-vendor"])
    parser.add_argument("image", nargs="?", help="publish-vendor: the catalog's vendor image, e.g. al2023")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--catalog", default=None, help="publish-vendor: the catalog (default images.yaml "
                                                         "or IMAGE_ASSETS_CATALOG)")
    args = parser.parse_args(argv)
    p = _port(args.port)
    if args.command == "publish-vendor":
        return _publish_vendor(args.image, args.catalog, p)
    if args.command == "start":
        try:
            if is_running(p) and without_debian(p):
                print(f"sandbox on port {p} serves no Debian AMIs (docker did not answer when it started) and "
                      "docker answers now: restarting it (it keeps the images it built)")
                stop(p)
            start(p)
        except RuntimeError as e:
            print(f"sandbox: failed to start: {e}", file=sys.stderr)
            return 1
        s = status(p)
        print(f"sandbox running at {s['endpoint']} (pid {s['pid']}, log {s['log']}); {_kept(s)}")
    elif args.command in ("stop", "reset"):
        stopped = stop(p, forget=args.command == "reset")
        print(f"sandbox on port {p} {'stopped' if stopped else 'was not running (no pidfile process)'}"
              + ("; the images it built are forgotten" if args.command == "reset" else f"; {_kept(status(p))}"))
    else:
        s = status(p)
        if s["running"]:
            print(f"sandbox running at {s['endpoint']} (pid {s['pid']}, log {s['log']}); {_kept(s)}")
        else:
            print(f"sandbox not running on port {p} (log {s['log']})")
        return 0 if s["running"] else 1
    return 0

