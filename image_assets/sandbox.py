"""The embedded sandbox target: a local moto EC2 server on 127.0.0.1, one per port.

It outlives the process that started it (own session, stdio to a log file), so builds in
later runs find it; `stop()` works from any process through the per-port pidfile.
CLI: `python -m image_assets.sandbox start|stop|status [--port N]`, and
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

_SERVER_MODULE = "image_assets.sandbox_server"
_children: dict[int, subprocess.Popen] = {}  # servers this process started, reaped by stop()


def port() -> int:
    return int(os.environ.get("IMAGE_ASSETS_SANDBOX_PORT") or DEFAULT_PORT)


def endpoint(port: int | None = None) -> str:
    return f"http://127.0.0.1:{_port(port)}"


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
    root = str(Path(__file__).resolve().parent.parent)
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


def stop(port: int | None = None) -> bool:
    """Stop the server recorded in the port's pidfile and remove its instances' containers; True if
    a server was stopped."""
    p = _port(port)
    with _locked(p):
        pid = _read_pid(p)
        if pid is not None:
            _kill(pid)
        _paths(p)[0].unlink(missing_ok=True)
        _children.pop(p, None)
        _remove_containers(p)
    return pid is not None


def _remove_containers(p: int) -> None:
    from image_assets import sandbox_instances  # docker only where a server of this port ran

    backing = sandbox_instances.backing_file(p)
    if not backing.exists():
        return
    try:
        removed = sandbox_instances.remove_all(p)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"sandbox: could not remove the containers of the sandbox on port {p}: {exc}", file=sys.stderr)
        return
    backing.unlink(missing_ok=True)
    if removed:
        print(f"sandbox: removed {len(removed)} instance container(s) of the sandbox on port {p}", file=sys.stderr)


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


def status(port: int | None = None) -> dict:
    p = _port(port)
    return {
        "running": is_running(p),
        "pid": _read_pid(p),
        "port": p,
        "endpoint": endpoint(p),
        "log": str(_paths(p)[2]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m image_assets.sandbox")
    parser.add_argument("command", choices=["start", "stop", "status", "publish-vendor"])
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
            start(p)
        except RuntimeError as e:
            print(f"sandbox: failed to start: {e}", file=sys.stderr)
            return 1
        s = status(p)
        print(f"sandbox running at {s['endpoint']} (pid {s['pid']}, log {s['log']})")
    elif args.command == "stop":
        stopped = stop(p)
        print(f"sandbox on port {p} {'stopped' if stopped else 'was not running (no pidfile process)'}")
    else:
        s = status(p)
        if s["running"]:
            print(f"sandbox running at {s['endpoint']} (pid {s['pid']}, log {s['log']})")
        else:
            print(f"sandbox not running on port {p} (log {s['log']})")
        return 0 if s["running"] else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
