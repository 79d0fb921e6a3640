"""Where images live: one interface (Store) and one typed record (ImageRecord); one module per
kind of store (ec2: the sandbox and aws targets). Nothing above a store imports boto3 or talks
to docker: callers get a Store from `connect(target, region)` and read ImageRecords.
"""

from __future__ import annotations

import abc
import contextlib
import importlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

from image_assets.errors import StoreError

MANAGED_BY = "image-assets"
KINDS = {"sandbox": "ec2", "aws": "ec2", "local": "docker"}  # target -> kind of store: module stores/<kind>.py


@dataclass(frozen=True)
class ImageRecord:
    """One image as its store reports it; tags are EC2 tags or docker labels alike."""

    id: str
    name: str  # the store's own name (AMI name, image reference)
    state: str  # "available", "pending", ...
    created: str  # ISO 8601 text as the store gives it ("" when unknown)
    tags: dict[str, str] = field(default_factory=dict)
    snapshots: tuple[str, ...] = ()  # storage deleted with the image (EBS snapshots)

    @property
    def available(self) -> bool:
        return self.state == "available"

    @property
    def managed(self) -> bool:
        return self.tags.get("ManagedBy") == MANAGED_BY

    @property
    def revoked(self) -> str:
        """The Revoked tag's value ("" when not revoked)."""
        return self.tags.get("Revoked", "")


@dataclass(frozen=True)
class ChannelEntry:
    """One value a release channel had (image_assets.channels), as the store keeps its history."""

    image_id: str
    at: str  # ISO 8601 UTC: when the channel was set to it


def channel_parameter(image: str, channel: str) -> str:
    """The SSM parameter (and, in spirit, the name) of a channel: a contract Terraform reads."""
    return f"/image-assets/{image}/{channel}"


@dataclass(frozen=True)
class CommandResult:
    """One command run inside an image (an image test)."""

    command: str
    exit_code: int
    output: str


class Store(abc.ABC):
    """Images of one target and region. `where` names it in messages; `endpoint` is the URL
    packer is pointed at (var.sandbox_endpoint), or None."""

    kind: str
    target: str
    region: str
    endpoint: str | None = None

    @property
    @abc.abstractmethod
    def where(self) -> str: ...

    def in_region(self, region: str) -> Store:
        """The same target's store in another region (where copies and their channels live)."""
        return connect(self.target, region)

    @abc.abstractmethod
    def check_reachable(self) -> None:
        """Raise a transient StoreError when the store does not answer."""

    @abc.abstractmethod
    def packer_env(self) -> dict[str, str]:
        """The environment packer runs with against this store."""

    def build_variables(self) -> dict[str, str]:
        """Template variables the build sets for this store when the template declares them and
        the catalog does not."""
        return {}

    def watch(self) -> contextlib.AbstractContextManager:
        """Around a packer build: yields guard(pgid), told packer's process group once it runs. A store
        whose endpoint can vanish mid-build (the sandbox) stops packer at once then and raises a
        StoreError saying so, instead of packer's cleanup retrying a dead endpoint."""
        return contextlib.nullcontext(lambda pgid: None)

    @abc.abstractmethod
    def newest_vendor_image(self, query) -> ImageRecord:
        """The newest image matching a catalog vendor query; StoreError when none does."""

    @abc.abstractmethod
    def get(self, image_id: str) -> ImageRecord | None:
        """The image, or None when it does not (or no longer) exist."""

    @abc.abstractmethod
    def managed_images(self, **tags: str) -> list[ImageRecord]:
        """Images carrying ManagedBy=image-assets and these tags, in any state."""

    @abc.abstractmethod
    def tag(self, image_id: str, tags: dict[str, str]) -> None: ...

    @abc.abstractmethod
    def deprecate(self, image_id: str, at: datetime) -> str:
        """Mark a revoked image deprecated where the store can; returns what happened."""

    @abc.abstractmethod
    def deregister(self, image: ImageRecord) -> list[str]:
        """Delete the image and its storage; returns the ids of that storage (snapshots)."""

    @abc.abstractmethod
    def runs_with_leftovers(self, name: str) -> set[str]:
        """Run ids that still hold resources of an unfinished build of image `name`."""

    @abc.abstractmethod
    def remove_leftovers(self, name: str, run_id: str, log: Callable[[str], None] = print) -> list[str]:
        """Delete what build `run_id` of `name` left; only for a run known to be dead."""

    # Release channels (image_assets.channels): a named pointer to an image id, with its history.
    @abc.abstractmethod
    def channel_get(self, image: str, channel: str) -> str | None:
        """The image id the channel points at; None when it was never set."""

    def channel_values(self, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """channel_get for many (image, channel) pairs at once; the unset ones are left out."""
        found = {pair: self.channel_get(*pair) for pair in pairs}
        return {pair: image_id for pair, image_id in found.items() if image_id}

    @abc.abstractmethod
    def channel_set(self, image: str, channel: str, image_id: str) -> None: ...

    @abc.abstractmethod
    def channel_history(self, image: str, channel: str) -> list[ChannelEntry]:
        """Every value the channel had, oldest first (the current one last)."""

    # Distribution (image_assets.distribution); stores without regions refuse.
    def copy_image(self, source: ImageRecord, source_region: str, tags: dict[str, str]) -> ImageRecord:
        """Copy an image of another region into this store, wait until it is available, tag it."""
        raise StoreError(f"{self.where}: images cannot be copied between regions here")

    def share(self, image_id: str, accounts: list[str]) -> None:
        """Give these accounts launch permission on the image."""
        raise StoreError(f"{self.where}: images cannot be shared with other accounts here")

    # Why this store cannot run an image's commands (run_commands) or unpack its filesystem
    # (export_filesystem); "" when it can.
    cannot_run: str = "this target cannot run images"
    cannot_export: str = "this target cannot unpack an image's filesystem"

    def no_machine(self, image_id: str) -> str:
        """Why no machine can run this image here (the sandbox's images that no container backs:
        Windows, the vendor AMIs moto ships, and every layer built on them); "" when one can.
        Such an image is built without its template and never tested or scanned, and says so."""
        return ""

    def run_commands(self, image_id: str, commands: list[str], timeout: float) -> list[CommandResult]:
        """Run each command, in order, inside one throwaway instance of the image."""
        raise StoreError(f"{self.where}: {self.cannot_run}")

    def export_filesystem(self, image_id: str, dest: Path) -> Path:
        """Unpack the image's filesystem into dest, as the machine it will become."""
        raise StoreError(f"{self.where}: {self.cannot_export}")

    def get_many(self, image_ids: list[str]) -> dict[str, ImageRecord]:
        """The images of these ids that exist, by id (one call where the store allows it)."""
        return {i: image for i in image_ids if (image := self.get(i)) is not None}

    def require_available(self, image_id: str, role: str) -> ImageRecord:
        """The image, verified to exist and be available."""
        image = self.get(image_id)
        if image is None:
            raise StoreError(f"{role} image {image_id} does not exist in {self.where}")
        if not image.available:
            raise StoreError(f"{role} image {image_id} is {image.state!r}, not available, in {self.where}")
        return image

    def find_reusable(self, **tags: str) -> ImageRecord | None:
        """An available, unrevoked managed image with these tags (newest first)."""
        candidates = [i for i in self.managed_images(**tags) if i.available and "Revoked" not in i.tags]
        return max(candidates, key=lambda i: i.created, default=None)


def kind_of(target: str) -> str:
    if target not in KINDS:
        raise StoreError(f"target {target!r} has no image store (use {' or '.join(KINDS)})")
    return KINDS[target]


def connect(target: str, region: str) -> Store:
    """The store of a target, cached per process (for the sandbox: started first if it is not running).
    Each kind's module has `connect(target, region)`; it is imported only here, when first used."""
    kind = kind_of(target)
    try:
        module = importlib.import_module(f"image_assets.stores.{kind}")
    except ModuleNotFoundError as exc:
        if exc.name != f"image_assets.stores.{kind}":
            raise
        raise StoreError(f"target {target!r}: no {kind} store in this version") from None
    return module.connect(target, region)
