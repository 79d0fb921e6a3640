"""Running packer: one runner (PackerRun) for every packer call (build, validate, fmt, inspect):
start, stream (parse, mask, echo), wait, interrupt, error.

Packer's human output goes to stdout (Dagster's compute logs capture it); only results become
events. Packer runs in its own session so an interruption reaches the wrapper and the plugin
child alike (SIGINT to the wrapper alone is ignored, to the child alone orphans shell-local).
Masking runs on each raw line and again on the text after packer's escapes are undone.
Each packer process gets a temp dir of its own (see `PackerRun.start`), removed when it ends.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, Field

from image_assets import secret_forms
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


MIN_SECRET = 3  # shorter values (and lines of values) are not masked: they would garble all output


def escape(text: str) -> str:
    """Packer's -machine-readable escaping of one datum (commas and line breaks)."""
    return text.replace(",", "%!(PACKER_COMMA)").replace("\r", "\\r").replace("\n", "\\n")


def unescape(datum: str) -> str:
    return datum.replace("%!(PACKER_COMMA)", ",").replace("\\n", "\n").replace("\\r", "\r")


def hcl_literal(value) -> str:
    """A value as an HCL literal expression, which is how packer reads a PKR_VAR_ of a map, list or
    object type (measured on 1.6.6: JSON is not enough, `${` and `%{` in it are templates and
    `\\b`, `\\f`, `\\/` are not escapes)."""
    if isinstance(value, str):
        out = "".join(_HCL_ESCAPES.get(ch) or (f"\\u{ord(ch):04x}" if ord(ch) < 0x20 or ord(ch) == 0x7F else ch)
                      for ch in value)
        return '"' + out.replace("${", "$${").replace("%{", "%%{") + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{hcl_literal(str(k))} = {hcl_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(hcl_literal(v) for v in value) + "]"
    raise TypeError(f"no HCL literal for a {type(value).__name__}")


_HCL_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def encodings(secret: str) -> set[str]:
    """Every form in which a value can reach text we print or record: as is, JSON-escaped (both
    ASCII and not), Python repr / backslash-escaped, HCL-quoted, each of those as packer's
    machine-readable escaping prints it and as our unescaping of that reads it back (a literal
    `\\r` in a secret comes back a carriage return), and the same for each text the secret can be
    printed as (its lines, what dash's echo prints); and its long runs (see image_assets.secret_forms)."""
    found = secret_forms.runs(secret)
    for part in secret_forms.printed(secret):
        for form in {part, json.dumps(part)[1:-1], json.dumps(part, ensure_ascii=False)[1:-1], repr(part)[1:-1],
                     part.encode("unicode_escape").decode("ascii"), hcl_literal(part)[1:-1]}:
            found |= {form, escape(form), unescape(escape(form))}
    return {form for form in found if len(form.strip()) >= MIN_SECRET}


class Redactor:
    """Replaces every secret value, in every encoding (see `encodings`), with a marker in anything
    printed, logged or recorded."""

    def __init__(self, secrets=()):
        forms = set()
        for secret in secrets:
            if secret is not None and len(str(secret).strip()) >= MIN_SECRET:
                forms |= encodings(str(secret))
        # At each position the longest form is masked, so a secret containing another (or one of
        # its own lines or runs) is masked whole.
        self.forms = sorted(forms, key=lambda f: (-len(f), f))
        self._pattern = re.compile(secret_forms.alternation(self.forms)) if self.forms else None

    def __call__(self, text: str) -> str:
        return self._pattern.sub(REDACTED, text) if self._pattern else text


@dataclass
class BuildOutput:
    artifacts: list[str] = field(default_factory=list)  # "region:ami-…" as packer reports them
    errors: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # the human text echoed, masked
    returncode: int | None = None
    seconds: float = 0.0

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def parse(self, line: str) -> str | None:
        """Digest one output line; returns the human text to echo, if any. Lines that are not
        machine-readable (`packer fmt -diff`, a plugin's stderr) are human text as they are."""
        parts = line.rstrip("\r\n").split(",")
        if len(parts) < 4 or not parts[0].isdigit():
            return line.rstrip("\r\n") or None
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


class PackerCli(BaseModel):
    """The packer command line and its settings (the Dagster resource is
    orchestration.resources.PackerResource, this class with Dagster's config on top)."""

    # Defaults come from the environment when the resource is built, never when this module is imported.
    binary: str = Field(default_factory=lambda: os.environ.get("IMAGE_ASSETS_PACKER", "packer"),
                        description="The packer command (env IMAGE_ASSETS_PACKER; default `packer` on PATH).")
    cleanup_timeout_seconds: float = Field(
        default_factory=lambda: float(os.environ.get("IMAGE_ASSETS_PACKER_CLEANUP_SECONDS", "600")),
        description="How long packer may clean up after a cancel before it is killed "
                    "(env IMAGE_ASSETS_PACKER_CLEANUP_SECONDS; default 600).")

    def version(self) -> str:
        return packer_version(resolve_binary(self.binary))

    def run(self, args: list[str], cwd: Path, env: dict[str, str], redact: Redactor, echo=None,
            on_start=None, timeout: float | None = None) -> BuildOutput:
        """Run `packer <args> -machine-readable` to its end: echo masked human lines, collect results.
        `on_start(pgid)` is told packer's process group as soon as it runs (the build lock records it);
        after `timeout` seconds packer is interrupted as on a cancel (for reads like validate)."""
        return PackerRun(self, args, cwd, env, redact, echo, on_start, timeout).start().wait()


class PackerRun:
    """One packer process, as dagster-dbt has one dbt invocation: start, stream, wait, interrupt,
    error. Every line is masked before anything sees it: the raw line (packer's escaped forms),
    then the human text after unescaping (the raw forms), then the collected errors."""

    def __init__(self, cli: PackerCli, args: list[str], cwd: Path, env: dict[str, str], redact: Redactor,
                 echo=None, on_start=None, timeout: float | None = None, temp_dir: Path | None = None):
        self.cli, self.args, self.cwd, self.env, self.redact = cli, args, cwd, env, redact
        self.temp_dir = temp_dir
        self.timeout, self.timed_out = timeout, False
        self.echo = echo or (lambda text: print(text, flush=True))
        self.on_start = on_start
        self.out = BuildOutput()
        self.proc: subprocess.Popen | None = None

    def start(self) -> PackerRun:
        binary = resolve_binary(self.cli.binary)
        # Packer 1.6.6 puts its log, plugin sockets and shell scripts in TMPDIR and the docker
        # builder's upload dir in PACKER_TMP_DIR (else ~/.packer.d/tmp*); it removes them unless
        # it is killed. One dir for both, per process, removed by `wait`. It must stay short: a
        # plugin socket's path (TMPDIR/packer-plugin<10 digits>) is limited to 107 bytes.
        if self.temp_dir is None:
            self.temp_dir = Path(tempfile.mkdtemp(prefix="packer-"))
        else:
            self.temp_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        env = {**self.env, "TMPDIR": str(self.temp_dir), "PACKER_TMP_DIR": str(self.temp_dir)}
        self._started = time.monotonic()
        self.proc = subprocess.Popen(
            [binary, self.args[0], "-machine-readable", *self.args[1:]],
            cwd=self.cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True,
        )
        if self.on_start:
            self.on_start(self.proc.pid)  # own session: its process group id is its pid
        return self

    def stream(self) -> Iterator[str]:
        """Packer's human lines, masked, as they come; results collect in `out`."""
        for line in self.proc.stdout:
            human = self.out.parse(self.redact(line))
            if human:
                human = self.redact(human)
                self.out.lines.append(human)
                yield human

    def wait(self) -> BuildOutput:
        """Stream to `echo` until packer exits; on an interrupt let packer clean up first."""
        timer = threading.Timer(self.timeout, self._expire) if self.timeout else None
        if timer:
            timer.daemon = True
            timer.start()
        try:
            for human in self.stream():
                self.echo(human)
            self.out.returncode = self.proc.wait()
            if self.timed_out:
                self.out.errors.append(f"packer {self.args[0]} did not finish within {self.timeout:.0f}s: interrupted")
        except BaseException:
            # Dagster's interrupt (cancel/terminate) or anything else.
            self.interrupt()
            raise
        finally:
            if timer:
                timer.cancel()
            self.out.seconds = time.monotonic() - self._started
            self.out.errors = [self.redact(e) for e in self.out.errors]
            if self.proc.poll() is not None:  # nothing of packer's temp dir is for anyone else
                shutil.rmtree(self.temp_dir, ignore_errors=True)
        return self.out

    def _expire(self) -> None:
        """The timeout (a timer thread): SIGINT as on a cancel, SIGKILL if packer outlives its cleanup."""
        if self.proc.poll() is None:
            self.timed_out = True
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
                self.proc.wait(timeout=self.cli.cleanup_timeout_seconds)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def interrupt(self) -> None:
        proc, echo, timeout = self.proc, self.echo, self.cli.cleanup_timeout_seconds
        if proc is None or proc.poll() is not None:
            return
        echo(f"interrupted: sending SIGINT to packer (process group {proc.pid}) and waiting up to "
             f"{timeout:.0f}s for its cleanup")
        with _shielded():
            try:
                os.killpg(proc.pid, signal.SIGINT)
                proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                echo("packer did not finish its cleanup in time: killing it")
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            except ProcessLookupError:
                pass

    def error(self, what: str) -> PackerError | None:
        """The failure of a finished run as a PackerError quoting packer's (masked) errors, or None."""
        out = self.out
        if out.returncode == 0:
            return None
        detail = "\n".join(dict.fromkeys(out.errors)) or "(packer printed no error line)"
        return PackerError(f"{what} failed: packer exited {out.returncode}:\n{detail}",
                           transient=is_transient(out.errors))


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


# For packer 1.6.6's ansible provisioner: its SSH proxy to the instance offers only an ssh-rsa host
# key, which OpenSSH 8.8+ refuses by default, and fails ansible's SFTP and OpenSSH 9's scp (measured:
# "no matching host key type found", then "failed to transfer file"). Only ansible-playbook on the
# build host reads these (the caller's environment overrides them); they keep ansible's own ssh_args.
ANSIBLE_ENV = {"ANSIBLE_SSH_ARGS": "-C -o ControlMaster=auto -o ControlPersist=60s -o HostKeyAlgorithms=+ssh-rsa",
               "ANSIBLE_SSH_TRANSFER_METHOD": "piped"}


def build(cli: PackerCli, template_dir: Path, only: str, var_file: Path,
          env: dict[str, str], redact: Redactor, on_start=None, temp_dir: Path | None = None,
          var_files: list[Path] = ()) -> tuple[str, BuildOutput]:
    """One `packer build`; returns the single artifact id or raises PackerError quoting packer.
    `temp_dir`: packer's temp dir (see PackerRun.start), one the caller can find again. `var_files`
    (the template's own) come before `var_file` (the injected values), so those win."""
    run = PackerRun(cli, ["build", f"-only={only}", *[f"-var-file={f}" for f in var_files], f"-var-file={var_file}",
                          str(template_dir)],
                    cwd=var_file.parent, env={**ANSIBLE_ENV, **env}, redact=redact, on_start=on_start,
                    temp_dir=temp_dir).start()
    out = run.wait()
    failure = run.error(f"packer build of {template_dir}")
    if failure:
        raise failure
    if not out.artifacts:
        raise PackerError(f"packer build of {template_dir} failed: packer produced no artifact "
                          f"(does the template define source {only!r}?)")
    if len(out.artifacts) > 1:
        raise PackerError(f"packer build of {template_dir} produced {len(out.artifacts)} artifacts, expected one: {out.artifacts}")
    print(f"packer {cli.version()} built {out.artifacts[0]} in {out.seconds:.1f}s", file=sys.stdout, flush=True)
    return out.artifacts[0], out
