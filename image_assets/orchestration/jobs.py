"""The lifecycle and channel jobs (one op each, in process) and the retention schedule."""

import dagster as dg

from image_assets import channels, lifecycle
from image_assets.catalog import Catalog
from image_assets.errors import ImageAssetsError
from image_assets.orchestration.failures import failure
from image_assets.orchestration.records import (current_images, deletion_observation, move_observation,
                                                revocation_observation)
from image_assets.orchestration.resources import ImageStore


class RevokeConfig(dg.Config):
    image_id: str
    reason: str


class RetentionConfig(dg.Config):
    dry_run: bool = False


class PromoteConfig(dg.Config):
    image: str
    from_channel: str = channels.LATEST
    to_channel: str = "stable"


class RollbackConfig(dg.Config):
    image: str
    channel: str = "stable"


def lifecycle_jobs(catalog: Catalog) -> list[dg.JobDefinition]:
    @dg.op(name="revoke_image_and_descendants")
    def revoke_op(context: dg.OpExecutionContext, config: RevokeConfig, image_store: ImageStore) -> None:
        try:
            entries = lifecycle.revoke(image_store.store(), config.image_id, config.reason, catalog=catalog,
                                       by=channels.who(context.run.tags))
        except ImageAssetsError as exc:
            raise failure(exc) from None
        for entry in entries:
            if entry.already:
                context.log.info(f"{entry.image_id} ({entry.name}) was already revoked: {entry.tag}")
            else:
                context.log.info(f"revoked {entry.image_id} ({entry.name}): {entry.tag}; {entry.deprecation}")
                context.log_event(revocation_observation(entry, config.reason))
            for move in entry.channels:
                context.log.info(str(move))
                context.log_event(move_observation(move))

    @dg.op(name="apply_retention")
    def retention_op(context: dg.OpExecutionContext, config: RetentionConfig, image_store: ImageStore) -> None:
        try:
            decisions = lifecycle.retention(catalog, image_store.store(), current_images(catalog, context.instance),
                                            config.dry_run)
        except ImageAssetsError as exc:
            raise failure(exc) from None
        verb = "would delete" if config.dry_run else "deleted"
        for d in decisions:
            context.log.info(f"{verb if d.delete else 'keep'} {d.image_id} ({d.name}, {d.created}): {d.reason}")
            if d.deleted_at:
                context.log_event(deletion_observation(d))

    # One op each: the in-process executor avoids a step process per run.
    @dg.job(name="revoke_image", executor_def=dg.in_process_executor,
            description="Tag an image and every image built on it Revoked, with a reason; set deprecation.")
    def revoke_image():
        revoke_op()

    @dg.job(name="image_retention", executor_def=dg.in_process_executor,
            description="Deregister images (and delete their snapshots) beyond each image's retention policy.")
    def image_retention():
        retention_op()

    return [revoke_image, image_retention]


def retention_schedule(job: dg.JobDefinition) -> dg.ScheduleDefinition:
    # Ships stopped: deleting images is switched on deliberately (UI or `dagster schedule start`).
    return dg.ScheduleDefinition(name="image_retention_daily", job=job, cron_schedule="0 4 * * *",
                                 execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.STOPPED)


def channel_jobs(catalog: Catalog) -> list[dg.JobDefinition]:
    def each_region(context: dg.OpExecutionContext, home: ImageStore, image: str, act) -> None:
        """Act in each region of the image, recording each move as it is made."""
        try:
            for store in channels.stores_of(catalog, home.store(), image):
                move = act(store, channels.who(context.run.tags))
                if move is None:
                    context.log.info(f"{image} ({store.region}): the channel already points there: nothing to do")
                    continue
                context.log.info(str(move))
                context.log_event(move_observation(move))
        except ImageAssetsError as exc:
            raise failure(exc) from None

    @dg.op(name="promote_channel")
    def promote_op(context: dg.OpExecutionContext, config: PromoteConfig, image_store: ImageStore) -> None:
        each_region(context, image_store, config.image, lambda store, by: channels.promote(
            catalog, store, config.image, config.from_channel, config.to_channel, by))

    @dg.op(name="roll_channel_back")
    def rollback_op(context: dg.OpExecutionContext, config: RollbackConfig, image_store: ImageStore) -> None:
        each_region(context, image_store, config.image,
                    lambda store, by: channels.rollback(catalog, store, config.image, config.channel, by))

    @dg.job(name="promote_image", executor_def=dg.in_process_executor,
            description="Point a release channel (default stable) at the image another channel (default latest) points at.")
    def promote_image():
        promote_op()

    @dg.job(name="rollback_channel", executor_def=dg.in_process_executor,
            description="Set a release channel back to its previous unrevoked image.")
    def rollback_channel():
        rollback_op()

    return [promote_image, rollback_channel]
