"""The user-code image of a team deployment (deploy/Dockerfile), built offline and only when needed.

`build()` makes the base `image-assets/debian12-base` once (debootstrap minbase bookworm with
python3, imported like the local target's Debian 11 base: the package needs Python 3.10+), then
`docker build --network host` of deploy/Dockerfile with a context made here: src/ (pyproject.toml,
definitions.py, images.yaml, image_assets/, packer/ from the checkout, as they are on disk),
requirements.txt (the package's and the `team` extra's requirements, a layer of their own so a code
change does not reinstall Dagster), constraints.txt (the Dagster versions of the Python running
this, so the image and the daemon speak the same release) and build-ca.pem (the host's CA bundle,
for pip in the build stage only). The image is tagged `image-assets/user-code:<inputs key>` and
`:latest`; the key hashes every input and the base image id, so an unchanged checkout builds nothing.
CLI: `python -m image_assets.devtools.deploy_image build [--force] | key` (exit 3: docker cannot run here).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from image_assets import dockerd

PROJECT = Path(__file__).resolve().parents[2]
DOCKERFILE = PROJECT / "deploy" / "Dockerfile"
IMAGE = "image-assets/user-code"
BASE = "image-assets/debian12-base"
BASE_SUITE = "bookworm"
BASE_PACKAGES = ["python3"]
SOURCES = ["pyproject.toml", "definitions.py", "images.yaml", "image_assets", "packer", "compliance"]
EXTRAS = ["team"]
# The Dagster distributions pinned to this Python's versions (those not installed are skipped).
PINNED = ["dagster", "dagster-shared", "dagster-pipes", "dagster-graphql", "dagster-webserver",
          "dagster-postgres", "dagster-docker", "dagster-k8s"]
BUILD_TIMEOUT = 1800.0


def ca_bundle() -> Path:
    """The bundle pip trusts during the build: env IMAGE_ASSETS_BUILD_CA, else the host's (Debian's
    update-ca-certificates output, which includes /usr/local/share/ca-certificates)."""
    return Path(os.environ.get("IMAGE_ASSETS_BUILD_CA") or "/etc/ssl/certs/ca-certificates.crt")


def source_files(project: Path = PROJECT) -> list[str]:
    """Paths (relative to the project) that go into src/: files and symlinks, no caches."""
    out = []
    for entry in SOURCES:
        path = project / entry
        if path.is_file() or path.is_symlink():
            out.append(entry)
            continue
        for sub in sorted(path.rglob("*")):
            rel = sub.relative_to(project)
            if "__pycache__" in rel.parts or sub.suffix == ".pyc" or any(p.endswith(".egg-info") for p in rel.parts):
                continue
            if sub.is_symlink() or sub.is_file():
                out.append(str(rel))
    return sorted(out)


def requirements(project: Path = PROJECT) -> list[str]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        from pip._vendor import tomli as tomllib
    doc = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    reqs = list(doc["dependencies"])
    for extra in EXTRAS:
        reqs += doc["optional-dependencies"][extra]
    return ["setuptools>=68", *reqs]  # setuptools: the package itself installs without network


def constraints() -> list[str]:
    out = []
    for dist in PINNED:
        try:
            out.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    return out


def inputs_key(base_id: str, project: Path = PROJECT) -> str:
    digest = hashlib.sha256()
    parts = [("Dockerfile", DOCKERFILE.read_bytes()), ("base", base_id.encode()),
             ("requirements", "\n".join(requirements(project)).encode()),
             ("constraints", "\n".join(constraints()).encode())]
    for rel in source_files(project):
        path = project / rel
        parts.append((rel, b"link:" + os.readlink(path).encode() if path.is_symlink() else path.read_bytes()))
    for name, data in parts:
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def make_context(dest: Path, project: Path = PROJECT) -> None:
    shutil.copy(DOCKERFILE, dest / "Dockerfile")
    for rel in source_files(project):
        src, target = project / rel, dest / "src" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            target.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, target)
    (dest / "requirements.txt").write_text("\n".join(requirements(project)) + "\n")
    (dest / "constraints.txt").write_text("\n".join(constraints()) + "\n")
    bundle = ca_bundle()
    shutil.copy(bundle, dest / "build-ca.pem") if bundle.is_file() else (dest / "build-ca.pem").write_text("")


def build(force: bool = False, log=print) -> tuple[str, float | None]:
    """(image reference `IMAGE:<key>`, seconds it took; None when it was present). Needs a daemon."""
    base_id, seconds = dockerd.base_image(BASE, BASE_SUITE, BASE_PACKAGES)
    if seconds is not None:
        log(f"base image {BASE} made in {seconds:.0f} s (debootstrap {BASE_SUITE})")
    key = inputs_key(base_id)
    ref = f"{IMAGE}:{key[:16]}"
    if not force and dockerd.image_id(ref):
        dockerd.docker("tag", ref, f"{IMAGE}:latest")
        return ref, None
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="user-code-image-") as tmp:
        make_context(Path(tmp))
        done = dockerd.docker("build", "--network", "host", "--build-arg", f"BASE={BASE}",
                              "--label", f"image-assets.inputs={key}", "-t", ref, "-t", f"{IMAGE}:latest",
                              tmp, timeout=BUILD_TIMEOUT, check=False,
                              env={**dockerd.client_env(), "DOCKER_BUILDKIT": "0"})
    if done.returncode != 0:
        raise RuntimeError(f"docker build of {ref} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    _drop_older(ref)
    return ref, time.monotonic() - started


def _drop_older(keep: str) -> None:
    """Untag this image's older builds (their layers go with them unless a container uses one)."""
    tags = dockerd.docker("images", IMAGE, "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    for tag in tags:
        if tag not in (keep, f"{IMAGE}:latest") and re.fullmatch(re.escape(IMAGE) + r":[0-9a-f]{16}", tag):
            dockerd.docker("rmi", tag, check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m image_assets.devtools.deploy_image")
    parser.add_argument("command", choices=["build", "key"])
    parser.add_argument("--force", action="store_true", help="build even if an image of these inputs exists")
    args = parser.parse_args(argv)
    try:
        started = dockerd.start()
        try:
            if args.command == "key":
                print(inputs_key(dockerd.base_image(BASE, BASE_SUITE, BASE_PACKAGES)[0]))
                return 0
            ref, seconds = build(force=args.force)
        finally:
            if started:
                dockerd.stop()
    except dockerd.DockerUnavailable as exc:
        print(f"deploy_image: docker cannot run here: {exc}", file=sys.stderr)
        return dockerd.UNAVAILABLE
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"deploy_image: {args.command} failed: {exc}", file=sys.stderr)
        return 1
    print(f"{ref} (also {IMAGE}:latest): " + ("present, inputs unchanged" if seconds is None else f"built in {seconds:.0f} s"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
