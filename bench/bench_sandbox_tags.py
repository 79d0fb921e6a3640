"""What an aged sandbox costs a build's look-ups: DescribeInstances and DescribeImages with tag
filters (the leftover scan and the reuse look-up) after N tagged builds, with moto's own tag
look-up against the sandbox's (image_assets.sandbox.server._tags_of_resource), in one run.

Run: python bench/bench_sandbox_tags.py [--builds 50,200] [--calls 5]
Each side is an in-process moto (mock_aws) holding N builds' worth of tagged instances and images,
as the sandbox holds them after N builds (it keeps everything while it runs).
"""

import argparse
import os
import sys
import time
from pathlib import Path

import boto3
from moto import mock_aws
from moto.ec2.models.core import TaggedEC2Resource

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from image_assets.sandbox import server as sandbox_server  # noqa: E402

TAGS = ("ManagedBy", "Deployment", "ImageName", "ImageLayer", "ImageVersion", "ParentImageId", "RootImageId",
        "Fingerprint", "GitRefs", "DagsterRunId", "Name")


def timed_lookups(builds: int, calls: int) -> tuple[float, float]:
    """Seconds per DescribeInstances and per DescribeImages (Owners self), both filtered by tags."""
    with mock_aws():
        ec2 = boto3.client("ec2", region_name="us-east-1")
        source = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        for n in range(builds):
            tags = [{"Key": key, "Value": f"{key}-{n}"} for key in TAGS]
            spec = [{"ResourceType": "instance", "Tags": tags}, {"ResourceType": "volume", "Tags": tags}]
            instance = ec2.run_instances(ImageId=source, MinCount=1, MaxCount=1, TagSpecifications=spec)
            instance_id = instance["Instances"][0]["InstanceId"]
            ec2.create_tags(Resources=[ec2.create_image(InstanceId=instance_id, Name=f"image-{n}")["ImageId"]], Tags=tags)
            ec2.terminate_instances(InstanceIds=[instance_id])
        filters = [{"Name": "tag:ManagedBy", "Values": ["ManagedBy-3"]}, {"Name": "tag:ImageName", "Values": ["ImageName-3"]}]
        start = time.perf_counter()
        for _ in range(calls):
            assert len(ec2.describe_instances(Filters=filters)["Reservations"]) == 1
        instances = (time.perf_counter() - start) / calls
        start = time.perf_counter()
        for _ in range(calls):
            assert len(ec2.describe_images(Owners=["self"], Filters=filters)["Images"]) == 1
        return instances, (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--builds", default="50,200")
    parser.add_argument("--calls", type=int, default=5)
    args = parser.parse_args()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    moto_lookup = TaggedEC2Resource.get_tags
    for builds in (int(b) for b in args.builds.split(",")):
        TaggedEC2Resource.get_tags = moto_lookup
        before = timed_lookups(builds, args.calls)
        TaggedEC2Resource.get_tags = sandbox_server._tags_of_resource
        after = timed_lookups(builds, args.calls)
        for what, b, a in (("DescribeInstances", before[0], after[0]), ("DescribeImages", before[1], after[1])):
            print(f"{builds} builds, {what} with tag filters: moto's look-up {b * 1000:.1f} ms, "
                  f"the sandbox's {a * 1000:.1f} ms ({b / a:.1f}x)")
    TaggedEC2Resource.get_tags = moto_lookup


if __name__ == "__main__":
    main()
