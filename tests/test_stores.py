"""The store interface: the EC2 store answers it on the sandbox with typed records (nothing above
image_assets/stores imports boto3 or botocore: tests/unit/test_stores.py)."""

from datetime import datetime, timezone
from pathlib import Path

import pytest

from image_assets import lineage, stores
from image_assets.catalog import VendorQuery
from image_assets.errors import StoreError
from image_assets.stores.ec2 import Ec2Store


def test_connect_knows_each_target_and_refuses_others(cloud):
    store = stores.connect("sandbox", "us-east-1")
    assert store.kind == "ec2" and isinstance(store, stores.Store)
    assert stores.connect("sandbox", "us-east-1") is store  # one per process
    assert store.endpoint and store.endpoint in store.where
    with pytest.raises(StoreError, match="has no image store"):
        stores.connect("nowhere", "us-east-1")


def test_the_ec2_store_on_the_sandbox(cloud: Ec2Store):
    vendor = cloud.newest_vendor_image(VendorQuery(owners=["amazon"], name="al2023-ami-2023.*-kernel-6.1-x86_64"))
    assert isinstance(vendor, stores.ImageRecord) and vendor.available and not vendor.managed
    assert vendor.name.startswith("al2023-ami-") and vendor.created
    assert cloud.get(vendor.id) == vendor
    assert cloud.get("ami-0123456789abcdef0") is None and cloud.get("not-an-id") is None
    with pytest.raises(StoreError, match="does not exist"):
        cloud.require_available("ami-0123456789abcdef0", "parent (x)")
    with pytest.raises(StoreError, match="no image"):
        cloud.newest_vendor_image(VendorQuery(owners=["amazon"], name="no-such-image-*"))

    # An image of ours, made by hand: tags as a record, reuse, revocation, leftovers, deregistration.
    instance = cloud.ec2.run_instances(ImageId=vendor.id, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    image_id = cloud.ec2.create_image(InstanceId=instance, Name="store-test")["ImageId"]
    cloud.ec2.terminate_instances(InstanceIds=[instance])
    tags = {"ManagedBy": stores.MANAGED_BY, "ImageName": "store-test", "Fingerprint": "f1", "DagsterRunId": "r1"}
    cloud.tag(image_id, tags)
    made = cloud.require_available(image_id, "built (store-test)")
    assert made.managed and made.tags == tags and made.snapshots and not made.revoked
    assert [i.id for i in cloud.managed_images(ImageName="store-test")] == [image_id]
    assert cloud.find_reusable(ImageName="store-test", Fingerprint="f1") == made
    assert cloud.find_reusable(ImageName="store-test", Fingerprint="f2") is None
    assert cloud.runs_with_leftovers("store-test") == set()  # an available image is no leftover
    said = cloud.deprecate(image_id, datetime.now(timezone.utc))
    shown = cloud.ec2.describe_images(ImageIds=[image_id])["Images"][0]["DeprecationTime"]
    assert said.startswith("deprecated at ") and \
        datetime.fromisoformat(said.removeprefix("deprecated at ")) == datetime.fromisoformat(shown), (said, shown)
    cloud.tag(image_id, {"Revoked": "2026-01-01T00:00:00Z: test"})
    assert cloud.get(image_id).revoked and cloud.find_reusable(ImageName="store-test") is None
    assert cloud.deregister(cloud.get(image_id)) == list(made.snapshots)
    assert cloud.get(image_id) is None
    snapshots = {s["SnapshotId"] for s in cloud.ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert not set(made.snapshots) & snapshots


def test_image_tests_on_ec2_need_a_profile_on_aws_and_a_machine_on_the_sandbox(cloud: Ec2Store, monkeypatch):
    """On aws, image tests need the instance profile SSM's agent runs with; on the sandbox they run
    through the same path (tests/test_sandbox_checks.py) on images a container backs, and an image
    no machine runs is refused at once, naming why, with no instance launched."""
    monkeypatch.delenv("IMAGE_ASSETS_TEST_INSTANCE_PROFILE", raising=False)
    assert cloud.cannot_run == "" and cloud.cannot_export == ""
    aws = Ec2Store("aws", "us-east-1")
    assert "IMAGE_ASSETS_TEST_INSTANCE_PROFILE" in aws.cannot_run and aws.cannot_export
    monkeypatch.setenv("IMAGE_ASSETS_TEST_INSTANCE_PROFILE", "image-tests")
    assert aws.cannot_run == ""

    image = cloud.newest_vendor_image(VendorQuery(owners=["amazon"], name="al2023-ami-2023.*-kernel-6.1-x86_64"))
    assert "no machine" in cloud.no_machine(image.id)
    for call in (lambda: cloud.run_commands(image.id, ["true"], 60),
                 lambda: cloud.export_filesystem(image.id, Path("/nonexistent"))):
        with pytest.raises(StoreError, match="no machine"):
            call()
    launched = cloud.ec2.describe_instances(Filters=[{"Name": "tag:TestedImageId", "Values": [image.id]}])["Reservations"]
    assert launched == []


def test_leftovers_are_found_past_the_first_page(cloud):
    """EC2 pages describe_instances (the sandbox after 100 reservations): a dead build's instance
    on page two is found and removed all the same, and nothing of another run is touched."""
    image = cloud.newest_vendor_image(VendorQuery(owners=["amazon"], name="al2023-ami-2023.*-kernel-6.1-x86_64"))
    runs = [f"paging-run-{n:03d}" for n in range(101)]  # one reservation each
    for run_id in runs:
        tags = [{"Key": "ManagedBy", "Value": "image-assets"}, {"Key": "ImageName", "Value": "paging-probe"},
                {"Key": "DagsterRunId", "Value": run_id}]
        cloud.ec2.run_instances(ImageId=image.id, InstanceType="t3.micro", MinCount=1, MaxCount=1,
                                TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
    try:
        assert cloud.runs_with_leftovers("paging-probe") == set(runs)
        removed = cloud.remove_leftovers("paging-probe", runs[-1], log=lambda _: None)
        assert len(removed) == 1 and removed[0].startswith("i-")
        assert cloud.runs_with_leftovers("paging-probe") == set(runs[:-1])
    finally:
        left = cloud.describe_all("describe_instances", "Reservations",
                                  Filters=[{"Name": "tag:ImageName", "Values": ["paging-probe"]}])
        cloud.ec2.terminate_instances(InstanceIds=[i["InstanceId"] for r in left for i in r["Instances"]])


def test_the_lineage_walk_reads_the_expected_ids_in_one_call(cloud, monkeypatch):
    """A build knows its parent's recorded lineage: the walk reads those images in one call, and
    still follows the tags: where an image is gone since, the walk ends there as it always did."""
    vendor = cloud.newest_vendor_image(VendorQuery(owners=["amazon"], name="al2023-ami-2023.*-kernel-6.1-x86_64"))
    chain = [vendor.id]
    for layer in ("global", "product", "service", "service"):
        image_id = cloud.ec2.register_image(Name=f"walk-probe-{len(chain)}", RootDeviceName="/dev/xvda")["ImageId"]
        cloud.tag(image_id, {"ManagedBy": stores.MANAGED_BY, "ImageName": f"walk-probe-{len(chain)}",
                             "ImageLayer": layer, "ParentImageId": chain[0]})
        chain.insert(0, image_id)
    try:
        plain = lineage.lineage(cloud, chain[0])
        assert [link.image_id for link in plain] == chain and not plain[-1].managed
        described = []
        real = cloud._images
        monkeypatch.setattr(cloud, "_images", lambda **kw: described.append(kw) or real(**kw))
        head, parent = cloud.get_many(chain[:2]).values()
        described.clear()
        assert lineage.lineage(cloud, chain[0], {head.id: head, parent.id: parent}, chain[2:]) == plain
        assert len(described) == 1 and described[0]["ImageIds"] == chain[2:]

        cloud.ec2.deregister_image(ImageId=chain[2])  # the grandparent is gone
        described.clear()
        walked = lineage.lineage(cloud, chain[0], {head.id: head, parent.id: parent}, chain[2:])
        assert [link.image_id for link in walked] == chain[:3] and walked[-1].state == "missing"
        assert len(described) == 2  # the list, then the gone one alone (EC2 may refuse a list naming it)
        assert set(cloud.get_many(chain[2:])) <= set(chain[3:])
    finally:
        for image_id in chain[:-1]:
            if cloud.get(image_id):
                cloud.ec2.deregister_image(ImageId=image_id)
