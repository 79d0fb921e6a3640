"""The docker store, for the local target: images in the local docker daemon, through the docker
CLI (image_assets.dockerd's client, every call with a timeout).

Tags are the image's labels (the template sets `LABEL k=v` for each of var.tags). Labels cannot
change once an image exists, so tags added later (Revoked) live in a side record, one JSON file
per image id in the state dir, merged over the labels. A dead build's leftover is its build
container: the template's run_command labels it (ManagedBy, ImageName, DagsterRunId), so it is
found by run and removed once that run is known dead.

A release channel is the docker tag `<image>:<channel>` on the image id; docker keeps no history
of where a tag pointed, so each channel's values are also appended to a JSON record in the state
dir (what rollback reads).
"""

from __future__ import annotations

import functools
import json
import subprocess
import uuid
from datetime import datetime, timezone
from pathlib import Path

from image_assets import dockerd
from image_assets.errors import StoreError
from image_assets.stores import MANAGED_BY, ChannelEntry, CommandResult, ImageRecord, Store

# Each command in `sh -c`, its output and exit code framed by markers (no `set -e`: all run).
_MARK, _MARK_RC = "\n@@image-assets-test@@\n", "\n@@image-assets-test-rc@@"
_RUN_EACH = ('for t in "$@"; do printf \'\\n@@image-assets-test@@\\n\'; sh -c "$t" 2>&1 </dev/null; '
             'printf \'\\n@@image-assets-test-rc@@%s\\n\' "$?"; done')
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")  # Debian's bundle, /usr/local/share/ca-certificates included


def _utc(created: str) -> str:
    """Docker's Created (RFC 3339, nanoseconds, maybe an offset) as ISO 8601 UTC text."""
    text = created.strip()
    if not text:
        return ""
    head, _, frac = text.partition(".")
    zone = ""
    for sign in ("Z", "+", "-"):
        if sign in frac:
            frac, _, rest = frac.partition(sign)
            zone = "+00:00" if sign == "Z" else sign + rest
            break
    else:
        if head.endswith("Z"):
            head, zone = head[:-1], "+00:00"
    when = datetime.fromisoformat(head + (f".{frac[:6]}" if frac else "") + (zone or "+00:00"))
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def docker_call(where: str, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    """A docker CLI call whose failure is a StoreError naming `where`."""
    try:
        return dockerd.docker(*args, timeout=timeout, check=check)
    except dockerd.DockerUnavailable as exc:
        raise StoreError(f"{where}: {exc}") from None
    except subprocess.TimeoutExpired:
        raise StoreError(f"{where}: docker {args[0]} did not answer in {timeout:.0f} s", transient=True) from None
    except RuntimeError as exc:
        raise StoreError(f"{where}: {exc}") from None


def export_image(where: str, image: str, dest: Path) -> Path:
    """Unpack a container image's filesystem into dest (the local target's images, and the sandbox's
    AMIs through the container images that back them)."""
    # Through a created, never started, container; /.dockerenv goes, so the tree is scanned as
    # the machine it will become (with it most OpenSCAP rules say "not applicable").
    cid = docker_call(where, "create", "--pull=never", image, "true").stdout.strip()  # never a registry download
    try:
        dest.mkdir(parents=True, exist_ok=True)
        export = subprocess.Popen([dockerd.docker_bin(), "export", cid], stdout=subprocess.PIPE,
                                  env=dockerd.client_env())
        untar = subprocess.run(["tar", "-x", "-C", str(dest), "--numeric-owner"], stdin=export.stdout,
                               capture_output=True, text=True, timeout=600)
        export.stdout.close()
        if export.wait(timeout=600) != 0 or untar.returncode != 0:
            raise StoreError(f"{where}: docker export {image} failed: {untar.stderr.strip()[-500:]}")
    finally:
        docker_call(where, "rm", "-f", cid, check=False)
    (dest / ".dockerenv").unlink(missing_ok=True)
    return dest


class DockerStore(Store):
    kind = "docker"
    endpoint = None

    def __init__(self, target: str, region: str):
        self.target, self.region = target, region
        self.extra_dir = dockerd.state_dir() / "docker-tags"
        self.channel_dir = dockerd.state_dir() / "docker-channels"

    @property
    def where(self) -> str:
        return "local (docker)"

    def _docker(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        return docker_call(self.where, *args, timeout=timeout, check=check)

    def check_reachable(self) -> None:
        if not dockerd.is_running():
            raise StoreError(f"{self.where}: no docker daemon answers {dockerd.docker_bin()} "
                             "(start one: python -m image_assets.dockerd start)", transient=True)

    def packer_env(self) -> dict[str, str]:
        env = dockerd.client_env()
        env["CHECKPOINT_DISABLE"] = "1"
        return env

    def build_variables(self) -> dict[str, str]:
        # The build container shares the host's network, so HTTPS (pip through this host's proxy)
        # needs the host's CAs, its local ones included; the template removes the bundle before
        # the commit (finalize.sh), so it never ships.
        return {"build_ca_bundle": str(HOST_CA_BUNDLE)} if HOST_CA_BUNDLE.is_file() else {}

    cannot_run = cannot_export = ""

    def run_commands(self, image_id: str, commands: list[str], timeout: float) -> list[CommandResult]:
        # One container for all the commands, in order (a later one may rely on an earlier one's
        # files), with no network: an image's tests must not depend on the outside.
        name = f"image-assets-test-{uuid.uuid4().hex[:12]}"
        args = ["run", "--rm", "--name", name, "--network=none", f"--label=ManagedBy={MANAGED_BY}",
                "--entrypoint", "/bin/sh", image_id, "-c", _RUN_EACH, "sh", *commands]
        try:
            done = self._docker(*args, timeout=timeout, check=False)
        except StoreError:
            self._docker("rm", "-f", name, timeout=60, check=False)
            raise
        parts = done.stdout.split(_MARK)
        results = []
        for command, part in zip(commands, parts[1:]):
            body, _, code = part.rpartition(_MARK_RC)
            code = code.strip()
            results.append(CommandResult(command, int(code) if code.isdigit() else 1, body.strip("\n")))
        if len(results) < len(commands):  # the container itself failed (no /bin/sh, no such image)
            missing = commands[len(results)]
            results.append(CommandResult(missing, done.returncode or 1, (done.stdout + done.stderr).strip()[-2000:]))
        return results

    def export_filesystem(self, image_id: str, dest: Path) -> Path:
        return export_image(self.where, image_id, dest)

    def _extra(self, image_id: str) -> dict[str, str]:
        try:
            return json.loads((self.extra_dir / f"{image_id.replace(':', '_')}.json").read_text())
        except (OSError, ValueError):
            return {}

    def _inspect(self, refs: list[str]) -> list[ImageRecord]:
        if not refs:
            return []
        done = self._docker("image", "inspect", *refs, check=False)
        try:
            found = json.loads(done.stdout or "[]")
        except ValueError:
            found = []
        if done.returncode != 0 and not found and "No such image" not in done.stderr:
            raise StoreError(f"{self.where}: docker image inspect failed: {done.stderr.strip()}")
        out = []
        for info in found:
            labels = dict((info.get("Config") or {}).get("Labels") or {})
            name = (info.get("RepoTags") or [labels.get("Name", "")])[0]
            out.append(ImageRecord(info["Id"], name, "available", _utc(info.get("Created", "")),
                                   {**labels, **self._extra(info["Id"])}))
        return out

    def newest_vendor_image(self, query) -> ImageRecord:
        if not getattr(query, "image", None):
            raise StoreError(f"{self.where}: the vendor query has no `image` (an image reference in the local daemon)")
        found = self._inspect([query.image])
        if not found:
            raise StoreError(f"no image {query.image!r} in {self.where} (make the base image: "
                             "python -m image_assets.dockerd base-image)")
        return found[0]

    def get(self, image_id: str) -> ImageRecord | None:
        found = self._inspect([image_id])
        return found[0] if found else None

    def managed_images(self, **tags: str) -> list[ImageRecord]:
        filters = [f"label=ManagedBy={MANAGED_BY}"]
        extra = {}
        for k, v in tags.items():
            if k == "Revoked":  # side-record tags are matched after merging
                extra[k] = v
            else:
                filters.append(f"label={k}={v}")
        # -a: without it an image that has children (a parent layer) is not listed
        args = ["images", "-a", "-q", "--no-trunc"] + [a for f in filters for a in ("--filter", f)]
        ids = list(dict.fromkeys(self._docker(*args).stdout.split()))
        return [i for i in self._inspect(ids) if all(i.tags.get(k) == v for k, v in extra.items())]

    def tag(self, image_id: str, tags: dict[str, str]) -> None:
        if self.get(image_id) is None:
            raise StoreError(f"image {image_id} does not exist in {self.where}")
        self.extra_dir.mkdir(parents=True, exist_ok=True)
        path = self.extra_dir / f"{image_id.replace(':', '_')}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**self._extra(image_id), **tags}))
        tmp.replace(path)

    def deprecate(self, image_id: str, at: datetime) -> str:
        return f"not set: {self.where} has no image deprecation"

    def deregister(self, image: ImageRecord) -> list[str]:
        done = self._docker("rmi", image.id, timeout=120, check=False)
        if done.returncode != 0 and "No such image" not in done.stderr:
            raise StoreError(f"{self.where}: docker rmi {image.id} failed: {done.stderr.strip()}")
        (self.extra_dir / f"{image.id.replace(':', '_')}.json").unlink(missing_ok=True)
        return []

    def _channel_record(self, image: str, channel: str) -> Path:
        return self.channel_dir / f"{image}.{channel}.json"

    def channel_get(self, image: str, channel: str) -> str | None:
        found = self._inspect([f"{image}:{channel}"])
        return found[0].id if found else None

    def channel_set(self, image: str, channel: str, image_id: str) -> None:
        self._docker("tag", image_id, f"{image}:{channel}")
        entries = [e.__dict__ for e in self.channel_history(image, channel)]
        entries.append({"image_id": image_id, "at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})
        path = self._channel_record(image, channel)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(entries))
        tmp.replace(path)

    def channel_history(self, image: str, channel: str) -> list[ChannelEntry]:
        try:
            return [ChannelEntry(**e) for e in json.loads(self._channel_record(image, channel).read_text())]
        except (OSError, ValueError, TypeError):
            return []

    def _build_containers(self, name: str, run_id: str | None = None) -> list[tuple[str, str]]:
        """(container id, run id) of packer build containers of `name` (the template's run_command
        labels them), running or not."""
        filters = [f"label=ManagedBy={MANAGED_BY}", f"label=ImageName={name}"]
        if run_id:
            filters.append(f"label=DagsterRunId={run_id}")
        args = ["ps", "-a", "--no-trunc", "--format", '{{.ID}} {{.Label "DagsterRunId"}}']
        out = self._docker(*args, *[a for f in filters for a in ("--filter", f)]).stdout
        return [tuple(line.split(" ", 1)) for line in out.splitlines() if " " in line]

    def runs_with_leftovers(self, name: str) -> set[str]:
        return {run for _, run in self._build_containers(name) if run}

    def remove_leftovers(self, name: str, run_id: str, log=print) -> list[str]:
        removed = []
        for container, _ in self._build_containers(name, run_id):
            done = self._docker("rm", "-f", container, timeout=120, check=False)
            if done.returncode == 0 or "No such container" in done.stderr:
                log(f"{name}: removed build container {container[:12]} left by dead run {run_id}")
                removed.append(container)
        return removed


@functools.lru_cache(maxsize=4)
def _cached(target: str, region: str, state: str) -> DockerStore:
    return DockerStore(target, region)


def connect(target: str, region: str) -> DockerStore:
    if target != "local":
        raise StoreError(f"target {target!r} has no docker store (use local)")
    return _cached(target, region, str(dockerd.state_dir()))
