"""Release channels: named pointers (latest, stable, ...) from an image to one of its image ids.

The store keeps each channel and its history (an SSM parameter /image-assets/<image>/<channel> on
sandbox and aws, a docker tag <image>:<channel> on local). Every build that passes its blocking
checks is published to `latest`; people promote an image from one channel to another and roll a
channel back; revoking an image moves each channel that points at it back to the newest
unrevoked image in its history. Every move is a Move (the orchestration layer records it as an
observation on the image's asset).
"""

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from image_assets import distribution
from image_assets.catalog import Catalog
from image_assets.errors import ImageAssetsError
from image_assets.stores import Store

LATEST = "latest"
USER_TAG = "dagster/user"  # set on runs launched by a signed-in user (Dagster+); else $USER


class ChannelError(ImageAssetsError):
    pass


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def who(tags: Mapping[str, str] | None = None) -> str:
    return (tags or {}).get(USER_TAG) or os.environ.get("USER") or "unknown"


@dataclass
class Move:
    image: str
    channel: str
    region: str
    from_image_id: str  # "" when the channel was not set before
    to_image_id: str
    action: str  # published | promoted | rolled back | moved off revoked
    by: str
    at: str
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        line = (f"{self.image} {self.channel} ({self.region}): {self.action} "
                f"{self.from_image_id or '(unset)'} -> {self.to_image_id}")
        return line + (f"; {self.note}" if self.note else "")


def set_channel(store: Store, image: str, channel: str, image_id: str, action: str, by: str) -> Move | None:
    """Point the channel at image_id; None when it already does (no new history entry)."""
    before = store.channel_get(image, channel) or ""
    if before == image_id:
        return None
    store.channel_set(image, channel, image_id)
    return Move(image, channel, store.region, before, image_id, action, by, _now())


def publish(store: Store, image: str, image_id: str, by: str) -> Move | None:
    return set_channel(store, image, LATEST, image_id, "published", by)


def usable(store: Store, image_id: str) -> bool:
    """An image a channel may point at: it exists, is available and is not revoked."""
    record = store.get(image_id)
    return record is not None and record.available and not record.revoked


def _known(catalog: Catalog, image: str, *channels: str) -> None:
    if image not in catalog.images or catalog.images[image].vendor:
        built = [n for n, i in catalog.images.items() if not i.vendor]
        raise ChannelError(f"{catalog.path}: no built image {image!r} (images: {', '.join(built)})")
    for channel in channels:
        if channel not in catalog.images[image].channels:
            raise ChannelError(f"{catalog.path}: image {image!r}, field 'channels': no channel {channel!r} "
                               f"(channels: {', '.join(catalog.images[image].channels)}); add it there first")


def stores_of(catalog: Catalog, home: Store, image: str) -> list[Store]:
    """Where the image's channels live: its home region, then each region it is copied to (each
    region's channels point at that region's copy)."""
    _known(catalog, image)
    return [home, *distribution.region_stores(catalog, home, image).values()]


def promote(catalog: Catalog, store: Store, image: str, source: str, dest: str, by: str) -> Move | None:
    """Point `dest` at the image `source` points at (None: it already does); a revoked or missing
    image is refused."""
    _known(catalog, image, source, dest)
    image_id = store.channel_get(image, source)
    if not image_id:
        raise ChannelError(f"image {image!r}: channel {source!r} is not set in {store.where}: nothing to promote")
    record = store.get(image_id)
    if record is None or not record.available:
        raise ChannelError(f"image {image!r}: channel {source!r} points at {image_id}, which is "
                           f"{'missing' if record is None else record.state} in {store.where}: not promoted")
    if record.revoked:
        raise ChannelError(f"image {image!r}: refusing to promote {image_id} from {source!r} to {dest!r}: "
                           f"it is revoked ({record.revoked})")
    move = set_channel(store, image, dest, image_id, "promoted", by)
    if move is not None:
        move.note = f"from channel {source!r}"
    return move


def previous(store: Store, image: str, channel: str, skip: set[str]) -> str | None:
    """The newest image in the channel's history that is not in `skip` and still usable."""
    for entry in reversed(store.channel_history(image, channel)):
        if entry.image_id not in skip and usable(store, entry.image_id):
            return entry.image_id
    return None


def rollback(catalog: Catalog, store: Store, image: str, channel: str, by: str) -> Move:
    """Set the channel back to its previous value in its history that is not revoked."""
    _known(catalog, image, channel)
    current = store.channel_get(image, channel)
    if not current:
        raise ChannelError(f"image {image!r}: channel {channel!r} is not set in {store.where}: nothing to roll back")
    target = previous(store, image, channel, {current})
    if target is None:
        raise ChannelError(f"image {image!r}: channel {channel!r} has no earlier unrevoked image in its history "
                           f"in {store.where} (it points at {current})")
    return set_channel(store, image, channel, target, "rolled back", by)


def off_revoked(catalog: Catalog, store: Store, revoked: Mapping[str, set[str]], by: str) -> list[Move]:
    """Move each channel that points at a revoked image (revoked: image name -> ids) back to the
    newest unrevoked image in its history; a channel with none stays and says so."""
    moves = []
    for image, ids in revoked.items():
        if image not in catalog.images:
            continue
        for channel in catalog.images[image].channels:
            current = store.channel_get(image, channel)
            if current not in ids:
                continue
            target = previous(store, image, channel, set(ids))
            if target is None:
                moves.append(Move(image, channel, store.region, current, current, "left on revoked", by, _now(),
                                  "no earlier unrevoked image in its history: rebuild and publish one"))
                continue
            move = set_channel(store, image, channel, target, "moved off revoked", by)
            move.note = f"{current} was revoked"
            moves.append(move)
    return moves


def held(catalog: Catalog, store: Store) -> dict[str, str]:
    """Image id -> why retention must keep it: the channels that point at it."""
    out: dict[str, list[str]] = {}
    for name, img in catalog.images.items():
        for channel in [] if img.vendor else img.channels:
            image_id = store.channel_get(name, channel)
            if image_id:
                out.setdefault(image_id, []).append(channel)
    return {i: f"held: channel{'s' * (len(c) > 1)} {', '.join(c)} of {store.region} point{'s' * (len(c) == 1)} at it"
            for i, c in out.items()}


def lag(latest_ids: list[str], image_id: str | None) -> int | None:
    """Builds published to `latest` after image_id (None: image_id was never on latest)."""
    if not image_id or image_id not in latest_ids:
        return None
    after = latest_ids[len(latest_ids) - latest_ids[::-1].index(image_id):]
    return len(dict.fromkeys(i for i in after if i != image_id))


@dataclass
class Row:
    image: str
    channel: str
    region: str
    image_id: str  # "" when the channel is not set
    current: bool | None  # is it the asset's current materialization (None: unknown)
    lags: int | None  # builds behind latest (None: unknown)

    def as_dict(self) -> dict:
        return asdict(self)


def listing(catalog: Catalog, home: Store, current: Mapping[str, str | None] | None,
            only: str | None = None) -> list[Row]:
    """Every channel of every built image (or of `only`), in every region it lives in. In a copy
    region, "current" means the copy of the current materialization."""
    names = [n for n, img in catalog.images.items() if not img.vendor and (not only or n == only)]
    where = {name: stores_of(catalog, home, name) for name in names}
    wanted: dict[str, tuple] = {}  # region -> (store, every (image, channel) read there)
    for name in names:
        for store in where[name]:
            wanted.setdefault(store.region, (store, []))[1].extend((name, c) for c in catalog.images[name].channels)
    # One read per region for every channel (batched by the store), not one call per channel.
    values = {region: store.channel_values(pairs) for region, (store, pairs) in wanted.items()}
    rows = []
    for name in names:
        home = current.get(name) if current is not None else None
        for store in where[name]:
            latest_ids: list[str] | None = None  # read once, and only for a channel not on the current image
            want = home
            if home and store.region != catalog.defaults.region:
                want = next((c.id for c in distribution.copies_of(store, home)), None)
            for channel in catalog.images[name].channels:
                image_id = values[store.region].get((name, channel)) or ""
                is_current = None if current is None or not image_id else image_id == want
                if is_current:  # latest is published in the step that materializes: nothing after it
                    rows.append(Row(name, channel, store.region, image_id, True, 0))
                    continue
                if not image_id:  # never set: no lag to tell
                    rows.append(Row(name, channel, store.region, "", None, None))
                    continue
                if latest_ids is None:
                    latest_ids = [e.image_id for e in store.channel_history(name, LATEST)]
                rows.append(Row(name, channel, store.region, image_id, is_current, lag(latest_ids, image_id)))
    return rows


def lagging(rows: list[Row]) -> list[str]:
    """Lines for channels whose image is not the current materialization (shown, not an error)."""
    out = []
    for row in rows:
        if row.image_id and row.current is False:
            if row.lags is None:
                behind = "is not on latest's history"
            elif row.lags == 0:  # the current image was never published (a blocking check failed)
                behind = "is on latest, but the current image was not published"
            else:
                behind = f"lags latest by {row.lags} build{'s' * (row.lags != 1)}"
            out.append(f"{row.image} {row.channel} ({row.region}) {behind}: {row.image_id} is not the current image")
    return out
