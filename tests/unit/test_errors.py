"""Retries are decided by error type (botocore codes, packer's known failures), never by text elsewhere."""

import botocore.exceptions
import pytest

from image_assets.packer import is_transient
from image_assets.stores.ec2 import aws_error_is_transient


def client_error(code: str) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError({"Error": {"Code": code, "Message": "m"}}, "DescribeImages")


@pytest.mark.parametrize("code", ["RequestLimitExceeded", "Throttling", "InsufficientInstanceCapacity", "InternalError"])
def test_throttling_and_capacity_codes_are_transient(code):
    assert aws_error_is_transient(client_error(code))


@pytest.mark.parametrize("code", ["UnauthorizedOperation", "InvalidAMIID.NotFound", "InvalidParameterValue",
                                  "AuthFailure"])
def test_request_errors_are_permanent(code):
    assert not aws_error_is_transient(client_error(code))


def test_packer_failures_by_kind():
    # Error lines as packer 1.6.6 prints them for the amazon-ebs builder.
    throttled = ["amazon-ebs.aws: Error launching source instance: RequestLimitExceeded: Request limit exceeded.\n"
                 "\tstatus code: 503, request id: 1"]
    capacity = ["amazon-ebs.aws: Error launching source instance: InsufficientInstanceCapacity: We currently do not "
                "have sufficient t3.micro capacity"]
    ssh = ["amazon-ebs.aws: Timeout waiting for SSH."]
    script = ["amazon-ebs.sandbox: Script exited with non-zero exit status: 1.Allowed exit codes are: [0]"]
    template = ["Unsupported argument; An argument named \"foo\" is not expected here."]
    assert is_transient(throttled) and is_transient(capacity)
    assert not is_transient(ssh) and not is_transient(script) and not is_transient(template)


def test_every_error_the_project_defines_is_an_image_assets_error():
    """One hierarchy: the assets and the CLI catch ImageAssetsError and read its `transient`."""
    import importlib
    import inspect
    import pkgutil

    import image_assets
    from image_assets.errors import ImageAssetsError

    found = {}
    for info in pkgutil.walk_packages(image_assets.__path__, "image_assets."):
        if info.name.endswith(("ui_screenshots", "forkserver_warmup", "sandbox.server", "__main__")):
            continue  # tools that import what only their own runs need; a __main__ runs its command
        module = importlib.import_module(info.name)
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == info.name and issubclass(cls, Exception):
                found[f"{info.name}.{name}"] = cls
    assert len(found) >= 12, sorted(found)
    assert [name for name, cls in found.items() if not issubclass(cls, ImageAssetsError)] == []
    assert all(hasattr(cls("x"), "transient") for cls in found.values())
