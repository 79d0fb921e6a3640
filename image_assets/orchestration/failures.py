"""The one mapping of the project's errors to Dagster: a Failure that Dagster's RetryPolicy retries
only when the error says it is transient (errors.ImageAssetsError.transient)."""

import dagster as dg

from image_assets.errors import ImageAssetsError


def failure(error: ImageAssetsError | str, transient: bool | None = None) -> dg.Failure:
    """`error`: the project's error (its own `transient` decides), or a message (permanent unless told)."""
    if isinstance(error, ImageAssetsError):
        transient = error.transient if transient is None else transient
    return dg.Failure(description=str(error), allow_retries=bool(transient))
