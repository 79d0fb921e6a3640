"""One Dagster asset per catalog image; materializing a built layer runs packer via build.py."""

import inspect
import json
import time
import types

import dagster as dg

from image_assets import build as buildmod
from image_assets import channels, checks, distribution, layer_delta, stores
from image_assets.catalog import Catalog, gc_paused
from image_assets.errors import ImageAssetsError, StoreError
from image_assets.orchestration import checks as dagster_checks
from image_assets.orchestration.executor import PACKER_POOL
from image_assets.orchestration.failures import failure
from image_assets.orchestration.records import built_metadata, latest_metadata, move_observation, recorded_git_refs
from image_assets.orchestration.resources import ImageStore, PackerResource

GIT_REFS_TAG = "image-assets/git-refs"  # run tag: {repo: "tag@commit"} pinned by the git sensor
VENDOR_IMAGES_TAG = "image-assets/vendor-images"  # run tag: {vendor asset: image id} pinned by the vendor sensor
# Errors say where they are raised whether a retry can cure them (errors.ImageAssetsError.transient).
RETRY_POLICY = dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


def store_kind(target: str) -> str:
    """The asset kind (UI icon) of the target's store: aws for EC2, else the store's own kind."""
    kind = stores.KINDS.get(target, "")
    return "aws" if kind == "ec2" else kind


def pinned_refs(context: dg.AssetExecutionContext) -> dict[str, str]:
    raw = context.run.tags.get(GIT_REFS_TAG)
    return json.loads(raw) if raw else {}


def _run_finished(instance: dg.DagsterInstance):
    """Whether a run has ended (its leftovers may go); unknown runs count as running, never touched."""
    def finished(run_id: str) -> bool:
        run = instance.get_run_by_id(run_id)
        return run is not None and run.is_finished
    return finished


_signatures: dict[types.CodeType, inspect.Signature] = {}


def shared_signature(fn):
    """Give `fn` the signature every function of its code already has: Dagster inspects an asset
    function's signature ~15 times while it builds the asset, and inspect.signature has no cache
    (on a 1,000-image catalog that was ~0.14 s of the definitions' load)."""
    if fn.__code__ not in _signatures:
        _signatures[fn.__code__] = inspect.signature(fn)
    fn.__signature__ = _signatures[fn.__code__]
    return fn


def resolve_parent(context: dg.AssetExecutionContext, catalog: Catalog, name: str, store: stores.Store) -> buildmod.Parent:
    """The parent's current image: its latest materialization, or a vendor lookup if never pinned."""
    parent = catalog.images[name].parent
    meta = latest_metadata(context.instance, parent)
    if meta and meta.get("image_id"):
        return buildmod.Parent(meta["image_id"], meta.get("root_image_id") or meta["image_id"],
                               tuple(meta.get("lineage") or ()))
    if catalog.images[parent].vendor:
        image = lookup_vendor(catalog, parent, store)
        return buildmod.Parent(image.id, image.id)
    raise failure(f"image {name!r}: parent asset {parent!r} has never been materialized; "
                f"build it first: dagster asset materialize -m definitions --select '{parent}*'")


def lookup_vendor(catalog: Catalog, name: str, store: stores.Store) -> stores.ImageRecord:
    return store.newest_vendor_image(catalog.images[name].vendor)


def _description(catalog: Catalog, name: str) -> str:
    image = catalog.images[name]
    if image.description:
        return image.description
    if image.vendor and catalog.target == "local":
        return f"Vendor image: {image.vendor.image!r} in the local docker daemon (looked up, not built)"
    if image.vendor:
        return f"Vendor image: newest of owners {image.vendor.owners} named {image.vendor.name!r} (looked up, not built)"
    return f"{image.layer.value} image built by packer from {image.template} on {image.parent}"


def vendor_asset(catalog: Catalog, name: str) -> dg.AssetsDefinition:
    @dg.asset(name=name, group_name="vendor", kinds={store_kind(catalog.target)},
              description=_description(catalog, name), retry_policy=RETRY_POLICY)
    def _vendor(context: dg.AssetExecutionContext, image_store: ImageStore) -> dg.MaterializeResult:
        # A run the vendor sensor requested builds on exactly the image it saw, not on a newer one.
        pinned = json.loads(context.run.tags.get(VENDOR_IMAGES_TAG) or "{}").get(name)
        try:
            store = image_store.store()
            if pinned:
                image = store.require_available(pinned, f"{name}: pinned vendor")
            else:
                image = lookup_vendor(catalog, name, store)
        except StoreError as exc:
            raise failure(exc) from None
        context.log.info(f"{name}: {'pinned' if pinned else 'newest'} vendor image is {image.id} ({image.name})")
        return dg.MaterializeResult(
            metadata={"image_id": image.id, "region": catalog.defaults.region,
                      "root_image_id": image.id, "vendor_name": image.name,
                      "creation_date": image.created, "pinned": bool(pinned)},
            data_version=dg.DataVersion(image.id),
        )

    return _vendor


def built_asset(catalog: Catalog, name: str) -> dg.AssetsDefinition:
    """The image's asset and its checks in one step: checks run right after the build without a
    second step (a step costs ~1-2 s of process start on the multiprocess executor), and a check
    run on its own (UI "Execute checks") subsets the step to the checks alone."""
    image = catalog.images[name]
    key = dg.AssetKey([name])
    spec = dg.AssetSpec(key, deps=[image.parent], group_name=image.layer.value,
                        kinds={"packer", store_kind(catalog.target)}, description=_description(catalog, name))

    def _built(context: dg.AssetExecutionContext, packer: PackerResource, image_store: ImageStore):
        metadata, chain, record, built, moves = None, None, None, None, []
        if key in context.selected_asset_keys:
            built = _build(context, catalog, name, packer, image_store)
            metadata, chain, record = built.metadata(), built.chain, built.record
            metadata.update(_layer_delta(context, name, built, image_store.store()))
        selected = {check.name for check in context.selected_asset_check_keys}
        # The checks run before the materialization is yielded (they read the new image through
        # `metadata`), so what passing them releases (channels) goes into its metadata; their
        # results still follow it, and attach to it.
        results = list(dagster_checks.results(catalog, name, context.instance, selected, packer, image_store.store,
                                              metadata, chain, record)) if selected else []
        if built is not None:
            metadata["channels"], copies, moves = _release(context, catalog, name, built, results, image_store.store())
            if catalog.images[name].distribute:
                metadata["copies"] = copies
            yield dg.MaterializeResult(asset_key=key, metadata=metadata, data_version=dg.DataVersion(built.image_id))
        yield from (dagster_checks.to_dagster(r) for r in results)
        yield from (move_observation(move) for move in moves)

    return dg.multi_asset(name=name.replace("-", "_"), specs=[spec], check_specs=dagster_checks.check_specs(catalog, name),
                          can_subset=True, pool=PACKER_POOL, retry_policy=RETRY_POLICY)(shared_signature(_built))


def _layer_delta(context: dg.AssetExecutionContext, name: str, built: buildmod.Built, store: stores.Store) -> dict:
    """What the layer changed against its parent (packages, files). A reused image carries the delta
    its build recorded; it is measured again only when this instance has no record of it."""
    if built.reused:
        recorded = built_metadata(context.instance, name, built.image_id) or {}
        if "layer_delta" in recorded:
            return {k: recorded[k] for k in layer_delta.METADATA_KEYS if k in recorded}
    started = time.monotonic()
    delta = layer_delta.measure(store, built.parent_image_id, built.image_id)
    context.log.info(f"{name}: layer delta against {built.parent_image_id}: {delta.summary()} "
                     f"({time.monotonic() - started:.2f} s)")
    return delta.metadata()


def _release(context: dg.AssetExecutionContext, catalog: Catalog, name: str, built: buildmod.Built,
             results: list[checks.CheckResult], home: stores.Store) -> tuple[dict[str, str], dict[str, str], list[channels.Move]]:
    """When every blocking check of the image ran and none failed as Dagster counts it (an ERROR;
    a WARN, e.g. image tests not run on the sandbox, blocks nothing): copy it to its distribution
    regions and publish it (and each copy, in its region) to `latest`. Returns "<region>/<channel>"
    -> image id now on it, region -> copy id, and the channel moves made."""
    blocking = {c for c in checks.image_checks(catalog, name) if c in checks.BLOCKING}
    ok = {r.check for r in results if not r.blocks}
    failed = sorted(blocking - ok)
    if failed:
        context.log.warning(f"{name}: {built.image_id} not published to {channels.LATEST!r}: blocking checks "
                            f"{', '.join(failed)} did not pass (or did not run)")
        ran_and_failed = sorted({r.check for r in results if not r.passed} & set(failed))
        buildmod.remove_rejected(home, built, ran_and_failed, lambda text: context.log.warning(f"{name}: {text}"))
        return {}, {}, []
    published, moves = {}, []
    try:
        copies = distribution.distribute(catalog, home, name, built.image_id, context.log.info)
        regional = distribution.region_stores(catalog, home, name)
        for store, image_id in [(home, built.image_id), *((regional[r], i) for r, i in copies.items())]:
            move = channels.publish(store, name, image_id, channels.who(context.run.tags))
            context.log.info(str(move) if move else f"{name}: {channels.LATEST!r} in {store.region} already "
                                                    f"points at {image_id}")
            published[f"{store.region}/{channels.LATEST}"] = image_id
            moves += [move] if move else []
    except StoreError as exc:  # a failed copy is transient: the retry reuses the build and finished copies
        raise failure(f"image {name!r}: releasing {built.image_id}: {exc}", transient=exc.transient) from None
    return published, copies, moves


def _build(context: dg.AssetExecutionContext, catalog: Catalog, name: str, packer: PackerResource,
           image_store: ImageStore) -> buildmod.Built:
    broken = catalog.template_error(name)  # its template, or an ancestor's, does not parse: no cloud or packer work
    if broken:
        raise failure(broken)
    try:
        store = image_store.store()
        parent = resolve_parent(context, catalog, name, store)  # a vendor lookup may call the store
        return buildmod.build_image(catalog, name, parent, context.run.run_id, packer, store=store,
                                    pinned_refs=pinned_refs(context), log=context.log.info,
                                    run_finished=_run_finished(context.instance),
                                    recorded_refs=lambda image_id: recorded_git_refs(context.instance, name, image_id))
    except ImageAssetsError as exc:  # one mapping: the error's own `transient` decides a retry
        message = str(exc) if f"image {name!r}" in str(exc) else f"image {name!r}: {exc}"
        raise failure(message, transient=exc.transient) from None
    except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt):
        # Dagster retries an interrupted step under a RetryPolicy; a cancel must end the build.
        # Packer has been stopped and has cleaned up by now (PackerRun.wait).
        raise failure(f"image {name!r}: build interrupted (run terminated); packer stopped and cleaned up") from None


def image_assets(catalog: Catalog) -> list[dg.AssetsDefinition]:
    with gc_paused():  # Dagster allocates ~200 objects per asset, all kept: collections would find nothing
        return [vendor_asset(catalog, n) if img.vendor else built_asset(catalog, n) for n, img in catalog.images.items()]
