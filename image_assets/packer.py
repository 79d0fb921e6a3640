"""Running `packer build -machine-readable`: output parsing, echo, redaction, and interruption.

Packer's human output goes to stdout (Dagster's compute logs capture it); only results become
events. Packer runs in its own session so an interruption reaches the wrapper and the plugin
child alike (SIGINT to the wrapper alone is ignored, to the child alone orphans shell-local).
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from image_assets.errors import TRANSIENT_AWS_CODES, ImageAssetsError

REDACTED = "<redacted>"
INSTALL_HINT = "install it with `apt-get install packer` (Debian) or put a packer binary on PATH / set IMAGE_ASSETS_PACKER"


class PackerError(ImageAssetsError):
    """A packer call failed; transient only for failures packer reports from the cloud's throttling
    or capacity (see TRANSIENT_PACKER_ERRORS), never for a template, provisioning or SSH failure."""


# Cloud error codes as packer prints them in its error lines: the build may succeed if retried.
TRANSIENT_PACKER_ERRORS = tuple(sorted(TRANSIENT_AWS_CODES)) + ("connection reset by peer", "i/o timeout")


def is_transient(errors: list[str]) -> bool:
    """A failed build is transient when one of packer's error lines names a transient cloud error
    and none is a failure of the template, provisioning or communicator."""
    text = "\n".join(errors)
    permanent = ("Timeout waiting for SSH", "Timeout waiting for WinRM", "Error parsing", "Unsupported argument",
                 "Script exited with non-zero exit status", "Failed preparing", "Invalid value for")
    return any(m in text for m in TRANSIENT_PACKER_ERRORS) and not any(m in text for m in permanent)


class Redactor:
    """Replaces every secret value with a marker in anything printed, logged or recorded."""

    def __init__(self, secrets=()):
        # Longest first, so a secret containing another is masked whole.
        self.secrets = sorted({s for s in secrets if s and len(str(s)) >= 3}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(str(secret), REDACTED)
        return text


def unescape(datum: str) -> str:
    return datum.replace("%!(PACKER_COMMA)", ",").replace("\\n", "\n").replace("\\r", "\r")


@dataclass
class BuildOutput:
    artifacts: list[str] = field(default_factory=list)  # "region:ami-…" as packer reports them
    errors: list[str] = field(default_factory=list)
    returncode: int | None = None
    seconds: float = 0.0

    def parse(self, line: str) -> str | None:
        """Digest one machine-readable line; returns the human text to echo, if any."""
        parts = line.rstrip("\r\n").split(",")
        if len(parts) < 4:
            return line.rstrip("\n") or None
        source, kind, data = parts[1], parts[2], [unescape(d) for d in parts[3:]]
        if kind == "artifact" and len(data) >= 3 and data[1] == "id":
            for artifact in data[2].split(","):
                if artifact not in self.artifacts:  # the manifest post-processor repeats it
                    self.artifacts.append(artifact)
        elif kind == "error":
            self.errors.append(f"{source}: {data[0]}" if source else data[0])
        elif kind == "ui" and len(data) >= 2:
            if data[0] == "error":
                self.errors.append(data[1].strip())
            if data[0] in ("say", "message", "error"):
                return data[1]
        return None


@functools.lru_cache(maxsize=8)
def packer_version(binary: str) -> str:
    out = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=60)
    return out.stdout.strip().splitlines()[0].removeprefix("Packer ").lstrip("v") if out.stdout else "unknown"


def resolve_binary(binary: str) -> str:
    found = shutil.which(binary)
    if not found:
        raise PackerError(f"packer binary {binary!r} not found: {INSTALL_HINT}")
    return found


class PackerCli(dg.ConfigurableResource):
    """The packer command line, wrapped the way a Dagster step needs it."""

    binary: str = os.environ.get("IMAGE_ASSETS_PACKER", "packer")
    # How long packer may take to clean up after a cancel before it is killed (issue: 10 minutes).
    cleanup_timeout_seconds: float = float(os.environ.get("IMAGE_ASSETS_PACKER_CLEANUP_SECONDS", "600"))

    def version(self) -> str:
        return packer_version(resolve_binary(self.binary))

    def run(self, args: list[str], cwd: Path, env: dict[str, str], redact: Redactor, echo=None,
            on_start=None) -> BuildOutput:
        """`on_start(pgid)` is told packer's process group as soon as it runs (the build lock records it)."""
        """Run `packer <args> -machine-readable`, echo human lines, and collect results."""
        binary = resolve_binary(self.binary)
        echo = echo or (lambda text: print(text, flush=True))
        out = BuildOutput()
        start = time.monotonic()
        proc = subprocess.Popen(
            [binary, args[0], "-machine-readable", *args[1:]],
            cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace", start_new_session=True,
        )
        if on_start:
            on_start(proc.pid)  # own session: its process group id is its pid
        try:
            for line in proc.stdout:
                human = out.parse(redact(line))
                if human:
                    echo(human)
            out.returncode = proc.wait()
        except BaseException:
            # Dagster's interrupt (cancel/terminate) or anything else: let packer clean up first.
            self._interrupt(proc, echo)
            raise
        finally:
            out.seconds = time.monotonic() - start
            out.errors = [redact(e) for e in out.errors]
        return out

    def _interrupt(self, proc: subprocess.Popen, echo) -> None:
        if proc.poll() is not None:
            return
        echo(f"interrupted: sending SIGINT to packer (process group {proc.pid}) and waiting up to "
             f"{self.cleanup_timeout_seconds:.0f}s for its cleanup")
        with _shielded():
            try:
                os.killpg(proc.pid, signal.SIGINT)
                proc.communicate(timeout=self.cleanup_timeout_seconds)
            except subprocess.TimeoutExpired:
                echo("packer did not finish its cleanup in time: killing it")
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            except ProcessLookupError:
                pass


class _shielded:
    """Ignore further SIGINTs while packer cleans up, so a second cancel cannot orphan resources."""

    def __enter__(self):
        try:
            self.previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        except ValueError:  # not the main thread
            self.previous = None

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


def build(cli: PackerCli, template_dir: Path, only: str, var_file: Path,
          env: dict[str, str], redact: Redactor, on_start=None) -> tuple[str, BuildOutput]:
    """One `packer build`; returns the single artifact id or raises PackerError quoting packer."""
    out = cli.run(["build", f"-only={only}", f"-var-file={var_file}", str(template_dir)],
                  cwd=var_file.parent, env=env, redact=redact, on_start=on_start)
    if out.returncode != 0 or not out.artifacts:
        reason = (f"packer exited {out.returncode}" if out.returncode
                  else f"packer produced no artifact (does the template define source {only!r}?)")
        detail = "\n".join(dict.fromkeys(out.errors)) or "(packer printed no error line)"
        raise PackerError(f"packer build of {template_dir} failed: {reason}:\n{detail}",
                          transient=is_transient(out.errors))
    if len(out.artifacts) > 1:
        raise PackerError(f"packer build of {template_dir} produced {len(out.artifacts)} artifacts, expected one: {out.artifacts}")
    print(f"packer {cli.version()} built {out.artifacts[0]} in {out.seconds:.1f}s", file=sys.stdout, flush=True)
    return out.artifacts[0], out
