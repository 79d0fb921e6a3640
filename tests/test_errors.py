"""Retries are decided by error type: the sandbox's errors (the codes and packer's failures: tests/unit/test_errors.py)."""

import pytest

from image_assets.errors import StoreError
from image_assets.stores.ec2 import Ec2Store


def test_real_sandbox_errors_are_typed(cloud):
    with pytest.raises(StoreError) as err:
        cloud._call("terminate_instances", InstanceIds=["i-0123456789abcdef0"])
    assert not err.value.transient and "InvalidInstanceID" in str(err.value)
    unreachable = Ec2Store.__new__(Ec2Store)
    unreachable.target, unreachable.region, unreachable.endpoint = "sandbox", "us-east-1", "http://127.0.0.1:9"
    unreachable.ec2 = unreachable.client(max_attempts=1)
    with pytest.raises(StoreError) as err:
        unreachable.check_reachable()
    # A stopped sandbox does not come back by retrying the call: the error says how to start it, at once.
    assert not err.value.transient
    assert "http://127.0.0.1:9" in str(err.value) and "python -m image_assets.sandbox start" in str(err.value)
