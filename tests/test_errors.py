"""Retries are decided by error type (botocore codes, packer's known failures), never by text elsewhere."""

import botocore.exceptions
import pytest

from image_assets.errors import StoreError
from image_assets.packer import is_transient
from image_assets.stores.ec2 import Ec2Store, aws_error_is_transient


def client_error(code: str) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError({"Error": {"Code": code, "Message": "m"}}, "DescribeImages")


@pytest.mark.parametrize("code", ["RequestLimitExceeded", "Throttling", "InsufficientInstanceCapacity", "InternalError"])
def test_throttling_and_capacity_codes_are_transient(code):
    assert aws_error_is_transient(client_error(code))


@pytest.mark.parametrize("code", ["UnauthorizedOperation", "InvalidAMIID.NotFound", "InvalidParameterValue",
                                  "AuthFailure"])
def test_request_errors_are_permanent(code):
    assert not aws_error_is_transient(client_error(code))


def test_real_sandbox_errors_are_typed(cloud):
    with pytest.raises(StoreError) as err:
        cloud._call("terminate_instances", InstanceIds=["i-0123456789abcdef0"])
    assert not err.value.transient and "InvalidInstanceID" in str(err.value)
    unreachable = Ec2Store.__new__(Ec2Store)
    unreachable.target, unreachable.region, unreachable.endpoint = "sandbox", "us-east-1", "http://127.0.0.1:9"
    unreachable.ec2 = unreachable.client(max_attempts=1)
    with pytest.raises(StoreError) as err:
        unreachable.check_reachable()
    assert err.value.transient


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
