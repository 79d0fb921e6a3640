"""The sandbox's Debian vendor images: the container images its Debian AMIs are backed by.

Made once by the set-up (`python -m image_assets.sandbox.images`, run by bin/setup): debootstrap
--variant=minbase with openssh-server, python3 and sudo, plus the user `admin` (the user of Debian's
AMIs) with passwordless sudo, imported into the local docker daemon. The sandbox server serves
Debian's official AMI names for each image present when it starts (see sandbox_instances).
CLI exit code 3: docker cannot run here (the sandbox then serves no Debian AMIs; nothing else changes).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from image_assets import dockerd

# Debian's AMI name prefix -> (suite, container image).
IMAGES: dict[str, tuple[str, str]] = {
    "debian-11-amd64": ("bullseye", "image-assets/sandbox-debian11"),
    "debian-12-amd64": ("bookworm", "image-assets/sandbox-debian12"),
}
PACKAGES = ["openssh-server", "python3", "sudo"]
DEBIAN_OWNER = "136693071363"  # the account Debian publishes its AMIs from
USER = "admin"


def _add_admin(root: Path) -> None:
    """Debian's AMI user: `admin`, in group sudo, passwordless sudo (cloud-init's drop-in on AWS)."""
    done = subprocess.run(["chroot", str(root), "useradd", "--create-home", "--shell", "/bin/bash",
                           "--groups", "sudo", USER], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"useradd {USER} in the debootstrapped tree failed: {done.stderr.strip()}")
    sudoers = root / "etc" / "sudoers.d" / "90-image-assets-admin"
    sudoers.write_text(f"{USER} ALL=(ALL) NOPASSWD:ALL\n")
    sudoers.chmod(0o440)


def make_images() -> dict[str, tuple[str, float | None]]:
    """Each image: container image -> (image id, seconds it took; None when present). Needs a daemon."""
    return {ref: dockerd.base_image(ref, suite, PACKAGES, prepare=_add_admin) for suite, ref in IMAGES.values()}


def main(argv: list[str] | None = None) -> int:
    try:
        started = dockerd.start()
    except dockerd.DockerUnavailable as exc:
        print(f"sandbox images: docker cannot run here, so the sandbox serves no Debian AMIs "
              f"(its other images build as before): {exc}", file=sys.stderr)
        return dockerd.UNAVAILABLE
    try:
        t0 = time.monotonic()
        made = make_images()
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"sandbox images: failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if started:
            dockerd.stop()
    for ref, (image, seconds) in made.items():
        print(f"sandbox image {ref} {image[:19]}: " + ("present" if seconds is None else f"made in {seconds:.0f} s"))
    print(f"sandbox images ready ({time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
