"""Error types that say, where an error is raised, whether retrying the same step can cure it.

The assets map `transient` to Dagster's RetryPolicy (`dg.Failure(allow_retries=...)`); nothing
decides a retry from an error's text.
"""

from __future__ import annotations

import botocore.exceptions

# EC2 error codes that mean "not now" rather than "not so" (throttling, capacity, service faults).
# boto3's standard retry mode has already retried these a few times within the call.
TRANSIENT_AWS_CODES = frozenset({
    "RequestLimitExceeded", "Throttling", "ThrottlingException", "RequestThrottled", "EC2ThrottledException",
    "RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete", "ServiceUnavailable", "Unavailable",
    "InternalError", "InternalFailure", "InsufficientInstanceCapacity", "InsufficientCapacity",
    "ResourceNotReady", "IncorrectInstanceState",
})
# Network-level failures of an AWS call: the endpoint did not answer.
TRANSIENT_AWS_EXCEPTIONS = (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionClosedError,
                            botocore.exceptions.ReadTimeoutError, botocore.exceptions.ConnectTimeoutError)


class ImageAssetsError(RuntimeError):
    """Base of the project's errors; `transient` says whether a retry of the step may succeed."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


def aws_error_is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TRANSIENT_AWS_EXCEPTIONS):
        return True
    if isinstance(exc, botocore.exceptions.ClientError):
        return exc.response.get("Error", {}).get("Code", "") in TRANSIENT_AWS_CODES
    return False


def aws_error_code(exc: BaseException) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        return exc.response.get("Error", {}).get("Code", "")
    return type(exc).__name__
