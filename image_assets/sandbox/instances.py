"""Sandbox instances backed by containers: what the sandbox server does in docker for EC2 calls.

An AMI is backed when it has a container image: the Debian AMIs the server serves (one per image
sandbox_images made) and every AMI CreateImage makes from a backed instance (`docker commit`).
RunInstances of a backed AMI starts a container from it with the host's network, running sshd in
the foreground on a loopback address of its own (127.H.L.N, H.L the sandbox's port, N per instance:
two sandboxes never share an address), with the key pair's public key authorized for `admin` and
root. Stop, start, reboot and terminate stop, start, restart and remove the container.

The AMI -> container image map is kept in the server and in backing_file(port) (JSON), for the
store and tests. Containers and committed images carry the sandbox's port as a label, so
remove_all(port) finds them (sandbox stop, and a server starting on a port whose last server died).
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import json
import os
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Mapping
from pathlib import Path

from image_assets import dockerd
from image_assets.sandbox import images as sandbox_images

PORT_LABEL = "image-assets.sandbox-port"
INSTANCE_LABEL = "image-assets.sandbox-instance"
COMMITTED_REPO = "image-assets/sandbox-ami"  # committed images: COMMITTED_REPO-<port>:<ami id>
SSHD_TIMEOUT = 30.0

# The container's command: authorize the key, make missing host keys, run sshd on the address.
_SSH_INIT = r"""
set -e
address=$1 key=$2
if [ -n "$key" ]; then
  for user in root admin; do
    home=$(getent passwd "$user" | cut -d: -f6)
    [ -n "$home" ] || continue
    mkdir -p "$home/.ssh"
    touch "$home/.ssh/authorized_keys"
    grep -qxF "$key" "$home/.ssh/authorized_keys" || printf '%s\n' "$key" >> "$home/.ssh/authorized_keys"
    chmod 700 "$home/.ssh" && chmod 600 "$home/.ssh/authorized_keys" && chown -R "$user:" "$home/.ssh"
  done
fi
# An RSA host key takes far longer to make than the others: only when sshd's configuration names RSA.
types="ed25519 ecdsa"
if grep -qsi '^[^#]*rsa' /etc/ssh/sshd_config /etc/ssh/sshd_config.d/*.conf; then types="$types rsa"; fi
for type in $types; do
  [ -e "/etc/ssh/ssh_host_${type}_key" ] || ssh-keygen -q -t "$type" -N '' -f "/etc/ssh/ssh_host_${type}_key"
done
mkdir -p /run/sshd
exec /usr/sbin/sshd -D -e -o "ListenAddress=$address"
"""


@dataclass
class Container:
    name: str
    address: str


_lock = threading.Lock()
_port: int | None = None
_images: dict[str, str] = {}  # AMI id -> container image
_containers: dict[str, Container] = {}  # instance id -> its container


def backing_file(port: int) -> Path:
    from image_assets import sandbox  # the state dir's one definition

    return sandbox.state_dir() / f"sandbox-{port}-images.json"


def read_backing(port: int) -> dict[str, str]:
    """AMI id -> container image of the sandbox on `port` ({} when it backs none)."""
    try:
        return json.loads(backing_file(port).read_text())
    except (OSError, ValueError):
        return {}


def _save() -> None:
    path = backing_file(_port)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_images, indent=1, sort_keys=True))
    os.replace(tmp, path)


def configure(port: int, keep: Mapping[str, str] = {}) -> list[dict]:
    """Called once by the server: remove the containers a dead server on this port left and the
    committed images of AMIs not in `keep` (the AMIs sandbox_state restores, each with the container
    image that backed it, "" for none), back the kept AMIs whose image docker still has, and return the
    Debian AMIs to serve (Ami keyword arguments), one per sandbox image present in docker."""
    global _port
    _port = port
    backing_file(port).unlink(missing_ok=True)  # a dead server's map: rebuilt from what docker holds
    try:
        remove_all(port, set(keep))
        amis = _vendor_amis()
        committed = _committed(port)
        # A committed image by its AMI; a vendor's (a release published on the sandbox) by its name.
        restored = {ami: ref for ami, ref in keep.items()
                    if ref and (committed.get(ami) == ref if ref.startswith(COMMITTED_REPO) else dockerd.image_id(ref))}
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"sandbox: no Debian AMIs served: docker is unavailable ({exc})", flush=True)
        return []
    if not amis and not restored:
        print("sandbox: no Debian AMIs served: their container images are missing "
              "(bin/setup makes them: python -m image_assets.sandbox.images)", flush=True)
        return []
    with _lock:  # no file where nothing is backed: stop then needs no docker
        _images.update({ami["ami_id"]: ref for ami, ref in amis})
        _images.update(restored)
        _save()
    for ami, ref in amis:
        print(f"sandbox: serving {ami['ami_id']} {ami['name']} backed by {ref}", flush=True)
    if restored:
        print(f"sandbox: {len(restored)} image(s) made before this start still backed by their container images",
              flush=True)
    lost = sorted(ami for ami, ref in keep.items() if ref and ami not in restored)
    if lost:
        print(f"sandbox: no container image left for {len(lost)} kept image(s) ({', '.join(lost[:5])}"
              f"{', ...' if len(lost) > 5 else ''}): no machine runs them here", flush=True)
    return [ami for ami, _ref in amis]


def backing(ami_id: str) -> str:
    """The container image behind an AMI of this server ("" when none)."""
    return _images.get(ami_id, "")


def _committed(port: int) -> dict[str, str]:
    """AMI id -> committed container image of the sandbox on `port`, as docker holds them."""
    repo = f"{COMMITTED_REPO}-{port}"
    refs = dockerd.docker("images", "--filter", f"reference={repo}", "--format", "{{.Repository}}:{{.Tag}}",
                          timeout=30).stdout.split()
    return {ref.rpartition(":")[2]: ref for ref in refs}


def _vendor_amis() -> list[tuple[dict, str]]:
    amis = []
    for prefix, (_suite, ref) in sandbox_images.IMAGES.items():
        done = dockerd.docker("image", "inspect", "--format", "{{.Created}}", ref, check=False, timeout=30)
        if done.returncode != 0:
            continue
        # Debian's names carry the build date and a serial: the image's creation time stands for both.
        created = datetime.datetime.fromisoformat(done.stdout.strip()[:19]).replace(tzinfo=datetime.timezone.utc)
        name = f"{prefix}-{created:%Y%m%d-%H%M}"
        amis.append(({
            # The same id in every region, as moto's own default AMIs.
            "ami_id": "ami-" + hashlib.sha256(name.encode()).hexdigest()[:17],
            "name": name, "description": f"Debian {prefix.split('-')[1]} ({created:%Y%m%d}), a container image here",
            "owner_id": sandbox_images.DEBIAN_OWNER, "public": True, "virtualization_type": "hvm",
            "architecture": "x86_64", "creation_date": created.replace(tzinfo=None),
            "image_location": f"{sandbox_images.DEBIAN_OWNER}/{name}", "hypervisor": "xen",
            "root_device_type": "ebs", "root_device_name": "/dev/xvda", "sriov": "simple",
            "boot_mode": "uefi-preferred",
        }, ref))
    return amis


def is_backed(ami_id: str) -> bool:
    return ami_id in _images


def address(instance_id: str) -> str | None:
    container = _containers.get(instance_id)
    return container.address if container else None


def _free_address() -> str:
    """127.H.L.N: H.L from the sandbox's port, N the first not taken here and not answering on 22."""
    taken = {c.address for c in _containers.values()}
    for n in range(2, 255):
        candidate = f"127.{_port >> 8}.{_port & 255}.{n}"
        if candidate in taken:
            continue
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex((candidate, 22)) != 0:  # a dead server's sshd may still hold one
                return candidate
    raise RuntimeError(f"no free loopback address left for the sandbox on port {_port}")


def start_instance(instance_id: str, ami_id: str, public_key: str) -> str:
    """Run the instance's container from the AMI's image; its address."""
    with _lock:
        container = Container(f"sandbox-{_port}-{instance_id}", _free_address())
        _containers[instance_id] = container
    # --pull=never: an image gone from the daemon is an error, never a download from a registry.
    dockerd.docker("run", "-d", "--pull=never", "--network", "host", "--name", container.name,
                   "--label", f"{PORT_LABEL}={_port}", "--label", f"{INSTANCE_LABEL}={instance_id}",
                   _images[ami_id], "/bin/sh", "-c", _SSH_INIT, "sandbox-init", container.address, public_key,
                   timeout=120)
    _wait_for_sshd(container)
    return container.address


def _wait_for_sshd(container: Container) -> None:
    """Return once sshd accepts: packer dials as soon as the instance runs, and after a refused first
    dial it waits 5 s before the next (measured: 5 of a layer's 8 s)."""
    started = time.monotonic()
    why = f"not accepting on {container.address}:22 after {SSHD_TIMEOUT:.0f} s"
    for attempt in itertools.count():
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex((container.address, 22)) == 0:
                return
        if time.monotonic() - started > SSHD_TIMEOUT:
            break
        if attempt % 50 == 49 and dockerd.docker("inspect", "--format", "{{.State.Running}}", container.name,
                                                 check=False, timeout=30).stdout.strip() != "true":
            why = "exited"  # a broken sshd (config, missing binary): no use waiting
            break
        time.sleep(0.02)
    logs = dockerd.docker("logs", "--tail", "20", container.name, check=False, timeout=30)
    raise RuntimeError(f"sshd of {container.name} {why}; its log:\n{(logs.stdout + logs.stderr).strip()}")


def stop_instance(instance_id: str) -> None:
    if instance_id in _containers:
        dockerd.docker("stop", "-t", "10", _containers[instance_id].name, timeout=60)


def resume_instance(instance_id: str) -> None:
    if instance_id in _containers:
        dockerd.docker("start", _containers[instance_id].name, timeout=60)
        _wait_for_sshd(_containers[instance_id])


def reboot_instance(instance_id: str) -> None:
    """RebootInstances: the container restarts (its processes end, sshd comes back on its address)."""
    if instance_id in _containers:
        dockerd.docker("restart", "-t", "10", _containers[instance_id].name, timeout=60)
        _wait_for_sshd(_containers[instance_id])


def remove_instance(instance_id: str) -> None:
    with _lock:
        container = _containers.pop(instance_id, None)
    if container:
        dockerd.docker("rm", "-f", container.name, check=False, timeout=60)


def commit_instance(instance_id: str, ami_id: str) -> None:
    """CreateImage of a backed instance: its container committed as the new AMI's image."""
    if instance_id not in _containers:
        return
    ref = f"{COMMITTED_REPO}-{_port}:{ami_id}"
    # The image's own command is a shell: the instance's sshd command line is not part of the image.
    dockerd.docker("commit", "--change", 'CMD ["/bin/bash"]', _containers[instance_id].name, ref, timeout=600)
    with _lock:
        _images[ami_id] = ref
        _save()


def back_like(ami_id: str, like: str) -> bool:
    """A vendor's new release of a backed AMI (publish-vendor) is backed by the same image."""
    with _lock:
        if like not in _images:
            return False
        _images[ami_id] = _images[like]
        _save()
    return True


def forget_image(ami_id: str) -> None:
    """DeregisterImage: a committed image is removed with its AMI (a vendor image stays)."""
    with _lock:
        ref = _images.get(ami_id, "")
        if not ref.startswith(COMMITTED_REPO):
            return
        del _images[ami_id]
        _save()
    dockerd.docker("rmi", ref, check=False, timeout=120)  # still used by a running child: it stays


def remove_all(port: int, keep: set[str] = frozenset()) -> list[str]:
    """Remove every container of the sandbox on `port`, and its committed images but those of the AMIs
    in `keep` (the images sandbox_state keeps across restarts); the containers removed."""
    label = f"label={PORT_LABEL}={port}"
    containers = dockerd.docker("ps", "-aq", "--filter", label, timeout=30).stdout.split()
    if containers:
        dockerd.docker("rm", "-f", *containers, timeout=120)
    # By name, not id: an image with a committed child cannot be removed by id; untagged, it goes with the child.
    images = [ref for ami, ref in _committed(port).items() if ami not in keep]
    if images:
        dockerd.docker("rmi", *images, check=False, timeout=120)
    return containers
