"""Error types that say, where an error is raised, whether retrying the same step can cure it.

The assets map `transient` to Dagster's RetryPolicy (`dg.Failure(allow_retries=...)`); nothing
decides a retry from an error's text.
"""

from __future__ import annotations

# EC2 error codes that mean "not now" rather than "not so" (throttling, capacity, service faults).
# boto3's standard retry mode has already retried these a few times within the call (stores/ec2.py
# types its errors with them; packer.py reads them in packer's error lines).
TRANSIENT_AWS_CODES = frozenset({
    "RequestLimitExceeded", "Throttling", "ThrottlingException", "RequestThrottled", "EC2ThrottledException",
    "RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete", "ServiceUnavailable", "Unavailable",
    "InternalError", "InternalFailure", "InsufficientInstanceCapacity", "InsufficientCapacity",
    "ResourceNotReady", "IncorrectInstanceState",
})


class ImageAssetsError(RuntimeError):
    """Base of every error the project raises on purpose (catalog, template, secret, git, store,
    packer, build, lineage, channel, lifecycle, docker, usage); `transient` says whether a retry of
    the step may succeed. The assets map it to `dg.Failure(allow_retries=transient)` in one place,
    and the CLI prints it; any other exception is a bug and keeps its traceback."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


class StoreError(ImageAssetsError):
    """A call to an image store (stores/) failed; `transient` as the store's own error says."""
