"""EC2 access for the sandbox and aws targets: image lookups, verification, tags, deletion."""

from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass

import boto3
import botocore.exceptions
from botocore.config import Config

from image_assets import sandbox
from image_assets.errors import ImageAssetsError, aws_error_code, aws_error_is_transient

MANAGED_BY = "image-assets"


class CloudError(ImageAssetsError):
    """A cloud call failed; `transient` comes from the botocore error code or exception type."""


def tags_of(resource: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


_session_lock = threading.Lock()  # a boto3 session is not thread-safe; sensors use threads


@functools.lru_cache(maxsize=1)
def _session() -> boto3.session.Session:
    """One session per process: its loader keeps the EC2 API model once read (~0.3 s a client)."""
    return boto3.session.Session()


def warm_up() -> None:
    """Read the EC2 API model into the process's session without any network call. The
    multiprocess executor's forkserver runs this (image_assets.forkserver_warmup), so every
    forked step creates its client from memory."""
    try:
        with _session_lock:
            _session().client("ec2", region_name="us-east-1", endpoint_url="http://127.0.0.1:9",
                              aws_access_key_id="warm-up", aws_secret_access_key="warm-up")
    except Exception:  # a warm-up must never stop the forkserver; steps then load the model themselves
        pass


@dataclass
class Cloud:
    target: str
    region: str

    def __post_init__(self):
        if self.target not in ("sandbox", "aws"):
            raise CloudError(f"target {self.target!r} has no EC2 API (use sandbox or aws)")
        self.endpoint = sandbox.ensure_running() if self.target == "sandbox" else None
        self.ec2 = self.client(max_attempts=5)

    def client(self, max_attempts: int):
        """An EC2 client for this target; standard retry mode backs off on throttling."""
        kwargs = {"region_name": self.region,
                  "config": Config(retries={"mode": "standard", "max_attempts": max_attempts})}
        if self.endpoint:
            kwargs.update(
                endpoint_url=self.endpoint,
                aws_access_key_id=sandbox.CREDENTIALS["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=sandbox.CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            )
        with _session_lock:
            return _session().client("ec2", **kwargs)

    @property
    def where(self) -> str:
        return f"{self.target} ({self.endpoint or 'aws ' + self.region})"

    def packer_env(self) -> dict[str, str]:
        """Environment for packer: sandbox credentials, or the caller's own AWS chain."""
        env = {k: v for k, v in os.environ.items() if not (self.endpoint and k.startswith("AWS_"))}
        env["CHECKPOINT_DISABLE"] = "1"  # no update check calls from build machines
        if self.endpoint:
            env["NO_PROXY"] = ",".join(filter(None, [env.get("NO_PROXY"), "127.0.0.1", "localhost"]))
            env.update(sandbox.CREDENTIALS)
            env["AWS_POLL_DELAY_SECONDS"] = "1"  # the emulator is instant; AWS's 15 s waiter delay is not
        return env

    def _error(self, op: str, exc: Exception) -> CloudError:
        if isinstance(exc, botocore.exceptions.EndpointConnectionError):
            return CloudError(f"cannot reach the {self.where} EC2 endpoint", transient=True)
        return CloudError(f"EC2 {op} on {self.where} failed ({aws_error_code(exc)}): {exc}",
                          transient=aws_error_is_transient(exc))

    def _call(self, op: str, **kwargs):
        try:
            return getattr(self.ec2, op)(**kwargs)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._error(op, exc) from None

    def _images(self, **kwargs) -> list[dict]:
        try:
            pages = self.ec2.get_paginator("describe_images").paginate(**kwargs)
            return [img for page in pages for img in page["Images"]]
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            if isinstance(exc, botocore.exceptions.ClientError) and kwargs.get("ImageIds") and \
                    aws_error_code(exc).startswith(("InvalidAMIID",)):
                return []  # an image id that does not (or no longer) exist
            raise self._error("DescribeImages", exc) from None

    def check_reachable(self) -> None:
        self._call("describe_regions")

    def newest_vendor_image(self, owners: list[str], name: str) -> dict:
        """Newest by CreationDate, then by name, so an unchanged account always gives the same id."""
        images = self._images(Owners=owners, Filters=[{"Name": "name", "Values": [name]}, {"Name": "state", "Values": ["available"]}])
        if not images:
            raise CloudError(f"no image in {self.where} matches owners={owners} name={name!r}")
        return max(images, key=lambda i: (i.get("CreationDate", ""), i.get("Name", "")))

    def get_image(self, image_id: str) -> dict | None:
        found = self._images(ImageIds=[image_id])  # InvalidAMIID.NotFound / .Malformed: none
        return found[0] if found else None

    def managed_images(self, **tag_filters: str) -> list[dict]:
        filters = [{"Name": "tag:ManagedBy", "Values": [MANAGED_BY]}]
        filters += [{"Name": f"tag:{k}", "Values": [v]} for k, v in tag_filters.items()]
        return self._images(Owners=["self"], Filters=filters)

    def find_reusable(self, **tag_filters: str) -> dict | None:
        """An available, unrevoked managed image with these tags (newest first)."""
        candidates = [
            img for img in self.managed_images(**tag_filters)
            if img.get("State") == "available" and "Revoked" not in tags_of(img)
        ]
        return max(candidates, key=lambda i: i.get("CreationDate", ""), default=None)

    def tag(self, resource_id: str, tags: dict[str, str]) -> None:
        self._call("create_tags", Resources=[resource_id], Tags=[{"Key": k, "Value": v} for k, v in tags.items()])

    def deregister(self, image: dict) -> list[str]:
        """Deregister an image and delete its snapshots; returns the snapshot ids deleted."""
        self._call("deregister_image", ImageId=image["ImageId"])
        snaps = [bdm["Ebs"]["SnapshotId"] for bdm in image.get("BlockDeviceMappings", []) if bdm.get("Ebs", {}).get("SnapshotId")]
        for snap in snaps:
            self._call("delete_snapshot", SnapshotId=snap)
        return snaps


@functools.lru_cache(maxsize=8)
def cloud_for(target: str, region: str, endpoint: str | None = None) -> Cloud:
    """One client per target, region and sandbox endpoint per process (creating one costs ~0.15 s)."""
    return Cloud(target, region)


def connect(target: str, region: str) -> Cloud:
    """A cached client; for the sandbox, (re)started first if it is not running."""
    if target != "sandbox":
        return cloud_for(target, region, None)
    try:
        endpoint = sandbox.ensure_running()
    except RuntimeError as exc:  # e.g. the port is held by something else: say which endpoint
        raise CloudError(f"the sandbox EC2 endpoint {sandbox.endpoint()} is unusable: {exc}") from None
    return cloud_for(target, region, endpoint)


def require_available(cloud: Cloud, image_id: str, role: str) -> dict:
    """The image, verified to exist, be available and not be revoked."""
    image = cloud.get_image(image_id)
    if image is None:
        raise CloudError(f"{role} image {image_id} does not exist in {cloud.where}")
    if image.get("State") != "available":
        raise CloudError(f"{role} image {image_id} is {image.get('State')!r}, not available, in {cloud.where}")
    return image


# --- What a dead build left behind (issue: crash) ---

LIVE_INSTANCE_STATES = ["pending", "running", "stopping", "stopped"]


def _image_filters(name: str) -> list[dict]:
    return [{"Name": "tag:ManagedBy", "Values": [MANAGED_BY]}, {"Name": "tag:ImageName", "Values": [name]}]


def _live_instances(cloud: Cloud, filters: list[dict]) -> list[dict]:
    pages = cloud.ec2.get_paginator("describe_instances").paginate(
        Filters=filters + [{"Name": "instance-state-name", "Values": LIVE_INSTANCE_STATES}])
    return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]


def runs_with_leftovers(cloud: Cloud, name: str) -> set[str]:
    """Run ids that still hold a live instance, a volume or an unfinished image of this image."""
    found = [tags_of(i) for i in _live_instances(cloud, _image_filters(name))]
    found += [tags_of(v) for v in cloud.ec2.describe_volumes(Filters=_image_filters(name))["Volumes"]]
    found += [tags_of(i) for i in cloud.managed_images(ImageName=name) if i.get("State") != "available"]
    return {t["DagsterRunId"] for t in found if t.get("DagsterRunId")}


def remove_leftovers(cloud: Cloud, name: str, run_id: str, log=print) -> list[str]:
    """Delete what build `run_id` of `name` left; call only for a run known to be dead.

    Packer's temporary key pair and security group (`packer_<uuid>`) carry no tags in 1.6.6; they
    are found through the tagged instance they were made for, so nothing else is ever touched.
    """
    removed: list[str] = []
    filters = _image_filters(name) + [{"Name": "tag:DagsterRunId", "Values": [run_id]}]
    instances = _live_instances(cloud, filters)
    # Terminated instances too: a packer stopped mid-cleanup (its output pipe gone with the dead
    # step) may have terminated the instance but not yet deleted its key pair and security group.
    pages = cloud.ec2.get_paginator("describe_instances").paginate(Filters=filters)
    every = [i for page in pages for r in page["Reservations"] for i in r["Instances"]]
    groups = {g["GroupId"] for i in every for g in i.get("SecurityGroups", []) if g["GroupName"].startswith("packer_")}
    keys = {i["KeyName"] for i in every if i.get("KeyName", "").startswith("packer_")}
    existing_groups = {g["GroupId"] for g in cloud.ec2.describe_security_groups()["SecurityGroups"]}
    existing_keys = {k["KeyName"] for k in cloud.ec2.describe_key_pairs()["KeyPairs"]}
    groups &= existing_groups
    keys &= existing_keys
    if instances:
        ids = [i["InstanceId"] for i in instances]
        cloud._call("terminate_instances", InstanceIds=ids)
        cloud.ec2.get_waiter("instance_terminated").wait(
            InstanceIds=ids, WaiterConfig={"Delay": 1 if cloud.endpoint else 10, "MaxAttempts": 120})
        removed += ids
    for group in groups:
        cloud._call("delete_security_group", GroupId=group)
        removed.append(group)
    for key in keys:
        cloud._call("delete_key_pair", KeyName=key)
        removed.append(key)
    # Images: unfinished ones tagged with the run, and untagged ones packer named for it (AMI tags
    # are added only once the AMI is available). A finished, tagged image stays: it is reusable.
    tagged = [i for i in cloud._images(Owners=["self"], Filters=filters) if i.get("State") != "available"]
    named = [i for i in cloud._images(Owners=["self"], Filters=[{"Name": "name", "Values": [f"{name}-*.{run_id[:8]}"]}])
             if "ManagedBy" not in tags_of(i)]
    for image in {i["ImageId"]: i for i in tagged + named}.values():
        removed += [image["ImageId"], *cloud.deregister(image)]
    in_use = {b["Ebs"]["SnapshotId"] for i in cloud._images(Owners=["self"])
              for b in i.get("BlockDeviceMappings", []) if b.get("Ebs", {}).get("SnapshotId")}
    for snap in cloud.ec2.describe_snapshots(OwnerIds=["self"], Filters=filters)["Snapshots"]:
        if snap["SnapshotId"] not in in_use:
            cloud._call("delete_snapshot", SnapshotId=snap["SnapshotId"])
            removed.append(snap["SnapshotId"])
    for volume in cloud.ec2.describe_volumes(Filters=filters)["Volumes"]:
        if volume["State"] == "available":
            cloud._call("delete_volume", VolumeId=volume["VolumeId"])
            removed.append(volume["VolumeId"])
    if removed:
        log(f"{name}: removed what dead build {run_id} left: {' '.join(removed)}")
    return removed
