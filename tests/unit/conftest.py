"""The fast tier: no packer, no sandbox, no docker, no PostgreSQL.

A guard keeps it honest: in this process, starting the sandbox or dockerd raises and running one of
those programs fails; child processes find failing stand-ins first on PATH (and as IMAGE_ASSETS_PACKER,
IMAGE_ASSETS_DOCKER, IMAGE_ASSETS_DOCKERD), and their sandbox port answers 503 to everything.
A test that needs any of them belongs in tests/, not here.
"""

import http.server
import os
import subprocess
import threading
from pathlib import Path

import pytest

from image_assets import dockerd, sandbox

FORBIDDEN = ("packer", "docker", "dockerd", "postgres", "initdb", "pg_ctl", "psql")
WHY = "the fast tier (tests/unit) runs no packer, sandbox, docker or PostgreSQL: move this test to tests/"


class TierViolation(AssertionError):
    pass


def refuse(what: str):
    raise TierViolation(f"{what} started: {WHY}")


class _Refusing(http.server.BaseHTTPRequestHandler):
    def _refuse(self):
        body = f"sandbox used: {WHY}\n".encode()
        self.send_response(503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _refuse

    def log_message(self, *args):
        pass


@pytest.fixture(scope="package", autouse=True)
def fast_tier_guard(tmp_path_factory):
    """For the whole package (so before any fixture of a unit test): failing stand-ins first on PATH,
    a port where no sandbox can start, and in this process no sandbox, dockerd or tool may start."""
    bin_dir = tmp_path_factory.mktemp("refusing-bin")
    for name in FORBIDDEN:
        tool = bin_dir / name
        tool.write_text(f"#!/bin/sh\necho '{name} started: {WHY}' >&2\nexit 97\n")
        tool.chmod(0o755)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    popen_init = subprocess.Popen.__init__

    def guarded_init(self, args, *rest, **kw):
        argv = [args] if isinstance(args, (str, os.PathLike)) else list(args)
        program = Path(str(argv[0]).split()[0]).name if argv else ""
        if program in FORBIDDEN or any("image_assets.sandbox.server" in str(a) for a in argv):
            refuse(f"{program} ({' '.join(map(str, argv))[:120]})")
        popen_init(self, args, *rest, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
        mp.setenv("IMAGE_ASSETS_PACKER", str(bin_dir / "packer"))
        mp.setenv("IMAGE_ASSETS_DOCKER", str(bin_dir / "docker"))
        mp.setenv("IMAGE_ASSETS_DOCKERD", str(bin_dir / "dockerd"))
        mp.setenv("IMAGE_ASSETS_SANDBOX_PORT", str(server.server_address[1]))
        mp.setattr(sandbox, "start", lambda *a, **kw: refuse("the sandbox"))
        mp.setattr(dockerd, "start", lambda *a, **kw: refuse("dockerd"))
        mp.setattr(subprocess.Popen, "__init__", guarded_init)
        yield
    server.shutdown()
