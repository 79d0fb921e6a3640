"""`python -m image_assets lineage|outdated|revoke|retention|channels|promote|rollback|check-template`:
image lifecycle, release channels and template checks from the command line.

The catalog is images.yaml or $IMAGE_ASSETS_CATALOG (or --catalog); commands that need the
current materializations read the Dagster instance in $DAGSTER_HOME and refuse to run without it.
Exit codes: 0 done, 1 the action failed, 2 bad usage or set-up (nothing was changed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import contextmanager

from image_assets import lineage as lineagemod
from image_assets.catalog import CatalogError, load_catalog
from image_assets.errors import ImageAssetsError, StoreError
from image_assets.stores import Store, connect


class UsageError(ImageAssetsError):
    pass


@contextmanager
def dagster_instance(purpose: str, required: bool = True):
    """The instance in DAGSTER_HOME; never a temporary one, whose empty history would mislead."""
    if not os.environ.get("DAGSTER_HOME"):
        if required:
            raise UsageError(f"DAGSTER_HOME is not set: {purpose} needs the current materializations from the "
                             "Dagster instance. Set DAGSTER_HOME to the instance directory (the one `dagster dev` "
                             "uses). Nothing was changed.")
        yield None
        return
    from image_assets.orchestration import records

    with records.open_instance() as instance:
        yield instance


def _store(catalog) -> Store:
    return connect(catalog.target, catalog.defaults.region)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def cmd_lineage(args, catalog) -> int:
    if not args.image_id.strip():
        raise UsageError("lineage: IMAGE_ID is empty: give the id of an image the project built, "
                         "e.g. python -m image_assets lineage ami-0123456789abcdef0")
    chain = lineagemod.lineage(_store(catalog), args.image_id)
    if chain[0].state == "missing":
        raise StoreError(f"image {args.image_id} does not exist in {_store(catalog).where}")
    problems = lineagemod.problems(chain)
    if args.json:
        print(json.dumps({"image_id": args.image_id, "lineage": [l.as_dict() for l in chain],
                          "problems": problems}, indent=2))
    else:
        rows = [["LAYER", "NAME", "IMAGE ID", "VERSION", "STATE", "NOTE"]]
        for l in chain:
            note = f"REVOKED {l.revoked}" if l.revoked else ("" if l.managed or l.state == "missing" else "vendor root")
            rows.append([l.layer or "-", l.name or "-", l.image_id, l.version or "-", l.state, note])
        print(_table(rows))
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    return 0


def cmd_outdated(args, catalog) -> int:
    from image_assets import channels
    from image_assets.orchestration.records import current_images

    with dagster_instance("`outdated`") as instance:
        current = current_images(catalog, instance)
    store = _store(catalog)
    stale = [f for f in lineagemod.outdated(catalog, store, current) if f.status != "current"]
    # An outdated image can still be sound; a revoked current image must be rebuilt: list both.
    revoked = []
    for name, image_id in current.items():
        record = store.get(image_id) if image_id and not catalog.images[name].vendor else None
        if record and record.revoked:
            revoked.append({"name": name, "image_id": image_id, "revoked": record.revoked})
    channel_rows = channels.listing(catalog, store, current)
    if args.json:
        behind = [{"name": r.image, "image_id": r.image_id, "status": "channel behind", "channel": r.channel,
                   "region": r.region, "lags": r.lags, "cause": line}
                  for r in channel_rows for line in channels.lagging([r])]
        print(json.dumps([f.as_dict() for f in stale] + [{"name": r["name"], "image_id": r["image_id"], "status": "revoked",
                                                           "cause": r["revoked"]} for r in revoked] + behind, indent=2))
        return 0
    if stale:
        table = [["IMAGE", "IMAGE ID", "PARENT", "BUILT ON", "EXPECTED PARENT", "STATUS", "WHY"]]
        table += [[f.name, f.image_id, f.parent, f.built_on, f.expected_parent or "-", f.status, f.cause] for f in stale]
        print(_table(table))
    else:
        print("no outdated images: every built image sits on the current image of its parent asset")
    lagging = channels.lagging(channel_rows)
    if lagging:  # a channel behind latest is a release decision, not a fault: shown, exit 0
        print(f"\n{len(lagging)} channel(s) not on the current image:")
        print("\n".join(lagging))
    if revoked:
        print(f"\n{len(revoked)} current image(s) revoked (rebuild: dagster asset materialize -m definitions "
              "--select 'NAME*'):")
        print(_table([["IMAGE", "IMAGE ID", "REVOKED"]] + [[r["name"], r["image_id"], r["revoked"]] for r in revoked]))
    return 0


def cmd_revoke(args, catalog) -> int:
    from image_assets import lifecycle
    from image_assets.orchestration import records

    entries = lifecycle.revoke(_store(catalog), args.image_id, args.reason, catalog=catalog)
    with dagster_instance("recording the revocation", required=False) as instance:
        for entry in entries:
            if instance is not None and not entry.already:
                instance.report_runless_asset_event(records.revocation_observation(entry, args.reason))
            for move in entry.channels if instance is not None else ():
                instance.report_runless_asset_event(records.move_observation(move))
    if instance is None:
        print("warning: DAGSTER_HOME is not set: the revocation is tagged in the cloud but not recorded "
              "as Dagster asset observations", file=sys.stderr)
    if args.json:
        print(json.dumps([e.as_dict() for e in entries], indent=2))
        return 0
    # A store without deprecation says so once, not on every image's line.
    notes = {e.deprecation for e in entries if e.deprecation.startswith("not set")}
    for e in entries:
        state = "already revoked" if e.already else "revoked"
        note = f"; {e.deprecation}" if e.deprecation and e.deprecation not in notes else ""
        print(f"{state}: {e.image_id} ({e.name}{', copy in ' + e.region if e.region else ''}) {e.tag}{note}")
    for move in (m for e in entries for m in e.channels):
        print(f"channel {move}")
    for note in sorted(notes):
        print(f"deprecation {note}")
    return 0


def cmd_retention(args, catalog) -> int:
    from image_assets import lifecycle
    from image_assets.orchestration import records

    with dagster_instance("`retention`") as instance:
        current = records.current_images(catalog, instance)
        decisions = lifecycle.retention(catalog, _store(catalog), current, args.dry_run)
        for decision in decisions:
            if decision.deleted_at:
                instance.report_runless_asset_event(records.deletion_observation(decision))
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "decisions": [d.as_dict() for d in decisions]}, indent=2))
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    rows = [["ACTION", "IMAGE", "IMAGE ID", "CREATED", "REASON"]]
    rows += [[verb if d.delete else "keep", d.name, d.image_id, d.created, d.reason] for d in decisions]
    print(_table(rows) if decisions else "no managed images")
    if args.dry_run:
        print("dry run: nothing was changed")
    return 0


def cmd_channels(args, catalog) -> int:
    from image_assets import channels
    from image_assets.orchestration.records import current_images

    if args.image and (args.image not in catalog.images or catalog.images[args.image].vendor):
        raise UsageError(f"no built image {args.image!r} in {catalog.path}")
    with dagster_instance("`channels`", required=False) as instance:
        current = current_images(catalog, instance) if instance is not None else None
    rows = channels.listing(catalog, _store(catalog), current, args.image)
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
        return 0
    table = [["IMAGE", "CHANNEL", "REGION", "IMAGE ID", "CURRENT", "LAGS"]]
    for r in rows:
        state = "-" if r.current is None else ("yes" if r.current else "no")
        table.append([r.image, r.channel, r.region, r.image_id or "(unset)", state,
                      "-" if r.lags is None else f"{r.lags} build{'s' * (r.lags != 1)}"])
    print(_table(table) if rows else "no channels")
    if current is None:
        print("note: DAGSTER_HOME is not set: CURRENT (the asset's current materialization) is unknown",
              file=sys.stderr)
    return 0


def _each_region(catalog, image, act, as_json: bool) -> int:
    """Act in each region of the image; the moves made are recorded even when a later region fails."""
    from image_assets import channels

    moves = []
    try:
        for store in channels.stores_of(catalog, _store(catalog), image):
            move = act(store)
            if move is None:
                print(f"{image} ({store.region}): the channel already points there: nothing to do", file=sys.stderr)
            else:
                moves.append(move)
    except BaseException:
        if moves:
            _record_moves(moves, as_json)
        raise
    return _record_moves(moves, as_json)


def _record_moves(moves, as_json: bool) -> int:
    from image_assets.orchestration import records

    with dagster_instance("recording the channel move", required=False) as instance:
        for move in moves:
            if instance is not None:
                instance.report_runless_asset_event(records.move_observation(move))
    if instance is None and moves:
        print("warning: DAGSTER_HOME is not set: the channel moved in the store but the move is not recorded "
              "as a Dagster asset observation", file=sys.stderr)
    if as_json:
        print(json.dumps([m.as_dict() for m in moves], indent=2))
    else:
        for move in moves:
            print(move)
    return 0


def cmd_promote(args, catalog) -> int:
    from image_assets import channels

    return _each_region(catalog, args.image, lambda store: channels.promote(
        catalog, store, args.image, args.source, args.dest, channels.who()), args.json)


def cmd_rollback(args, catalog) -> int:
    from image_assets import channels

    return _each_region(catalog, args.image, lambda store: channels.rollback(
        catalog, store, args.image, args.channel, channels.who()), args.json)


def cmd_check_template(args, catalog) -> int:
    """Every way DIR breaks the template contract, and packer's word on it (image_assets.template_check);
    1 when any is an error."""
    from image_assets import template_check

    if not os.path.isdir(args.dir):
        raise UsageError(f"{args.dir}: not a directory")
    if args.image:
        catalog = load_catalog(args.catalog)
        if args.image not in catalog.images or catalog.images[args.image].vendor:
            raise UsageError(f"--image {args.image!r}: no built image of that name in {catalog.path}")
    target = args.target or (catalog.target if catalog else os.environ.get("IMAGE_ASSETS_TARGET") or "sandbox")
    return template_check.main(args.dir, target, args.image, catalog, args.json, args.var_file)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m image_assets", description="Image lifecycle: lineage, outdated "
                                "images, revocation and retention.")
    p.add_argument("--catalog", help="catalog path (default: $IMAGE_ASSETS_CATALOG or images.yaml)")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("lineage", help="the chain of parent images back to the vendor image, from tags")
    c.add_argument("image_id")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_lineage)
    c = sub.add_parser("outdated", help="current images whose parent asset has a newer image")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_outdated)
    c = sub.add_parser("revoke", help="tag an image and every image built on it Revoked")
    c.add_argument("image_id")
    c.add_argument("--reason", required=True)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_revoke)
    c = sub.add_parser("retention", help="delete images beyond each image's retention policy")
    c.add_argument("--dry-run", action="store_true", help="print what would be deleted; change nothing")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_retention)
    c = sub.add_parser("channels", help="release channels: the image each points at, and how far it lags latest")
    c.add_argument("image", nargs="?")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_channels)
    c = sub.add_parser("promote", help="point a channel at the image another channel points at")
    c.add_argument("image")
    c.add_argument("--from", dest="source", default="latest", help="default: latest")
    c.add_argument("--to", dest="dest", required=True)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_promote)
    c = sub.add_parser("rollback", help="set a channel back to its previous unrevoked image")
    c.add_argument("image")
    c.add_argument("--channel", required=True)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_rollback)
    c = sub.add_parser("check-template", help="every way a template directory breaks the template contract")
    c.add_argument("dir", help="a directory of *.pkr.hcl files")
    c.add_argument("--image", help="the catalog image built from it: its variables and secrets count as set")
    c.add_argument("--target", choices=["sandbox", "aws", "local"],
                   help="default: the catalog's target with --image, else $IMAGE_ASSETS_TARGET or sandbox")
    c.add_argument("--var-file", action="append", default=[], metavar="FILE",
                   help="a var-file of the template (relative to DIR), as the catalog's var_files; repeatable")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_check_template, catalog_needed=False)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return _run(args)
    except BrokenPipeError:
        # The reader went away (`| head`): not an error. Point stdout at /dev/null so the
        # interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _run(args) -> int:
    try:
        catalog = load_catalog(args.catalog) if getattr(args, "catalog_needed", True) else None
        return args.func(args, catalog)
    except (UsageError, CatalogError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ImageAssetsError as exc:  # every error the project raises on purpose; anything else is a bug
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
