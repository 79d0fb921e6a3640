"""The EC2 store, for the sandbox and aws targets: image lookups, verification, tags, deletion,
and what dead builds left behind. boto3 and botocore are imported here and nowhere above."""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import botocore.exceptions
from botocore.config import Config

from image_assets import sandbox
from image_assets.sandbox import images as sandbox_images
from image_assets.sandbox import instances as sandbox_instances
from image_assets.sandbox import ssm as sandbox_ssm
from image_assets.errors import TRANSIENT_AWS_CODES, StoreError
from image_assets.stores import MANAGED_BY, ChannelEntry, CommandResult, ImageRecord, Store, channel_parameter
from image_assets.stores import docker as docker_store

# Network-level failures of an AWS call: the endpoint did not answer.
TRANSIENT_AWS_EXCEPTIONS = (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionClosedError,
                            botocore.exceptions.ReadTimeoutError, botocore.exceptions.ConnectTimeoutError)
LIVE_INSTANCE_STATES = ["pending", "running", "stopping", "stopped"]
# Image tests: an instance from the image, driven by SSM (on aws its profile needs AmazonSSMManagedInstanceCore;
# on the sandbox it is the profile the sandbox makes, sandbox_ssm.INSTANCE_PROFILE).
TEST_PROFILE_ENV = "IMAGE_ASSETS_TEST_INSTANCE_PROFILE"
TEST_TYPE_ENV = "IMAGE_ASSETS_TEST_INSTANCE_TYPE"  # default t3.micro
TEST_SUBNET_ENV = "IMAGE_ASSETS_TEST_SUBNET"  # default: the account's default subnet


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


def _tags(resource: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def _snapshots(image: dict) -> tuple[str, ...]:
    return tuple(m["Ebs"]["SnapshotId"] for m in image.get("BlockDeviceMappings", [])
                 if m.get("Ebs", {}).get("SnapshotId"))


def record(image: dict) -> ImageRecord:
    """A DescribeImages entry as an ImageRecord."""
    return ImageRecord(image["ImageId"], image.get("Name", ""), image.get("State", ""), image.get("CreationDate", ""),
                       _tags(image), _snapshots(image))


_session_lock = threading.Lock()  # a boto3 session is not thread-safe; sensors use threads


@functools.lru_cache(maxsize=1)
def _session() -> boto3.session.Session:
    """One session per process: its loader keeps the EC2 API model once read (~0.3 s a client)."""
    return boto3.session.Session()


def warm_up() -> None:
    """Read the EC2 and SSM API models into the process's session without any network call. The
    multiprocess executor's forkserver runs this (image_assets.orchestration.forkserver_warmup), so every
    forked step creates its clients from memory (SSM: each built image publishes a channel)."""
    try:
        with _session_lock:
            for service in ("ec2", "ssm"):
                _session().client(service, region_name="us-east-1", endpoint_url="http://127.0.0.1:9",
                                  aws_access_key_id="warm-up", aws_secret_access_key="warm-up")
    except Exception:  # a warm-up must never stop the forkserver; steps then load the models themselves
        pass


class Ec2Store(Store):
    kind = "ec2"

    def __init__(self, target: str, region: str):
        if target not in ("sandbox", "aws"):
            raise StoreError(f"target {target!r} has no EC2 API (use sandbox or aws)")
        self.target, self.region = target, region
        self.endpoint = sandbox.ensure_running() if target == "sandbox" else None
        try:
            self.ec2 = self.client(max_attempts=5)
        except botocore.exceptions.BotoCoreError as exc:
            raise self._error("client", exc) from None

    def client(self, max_attempts: int, service: str = "ec2"):
        """A client for this target (EC2, or SSM for image tests); standard retry mode backs off on throttling."""
        kwargs = {"region_name": self.region,
                  "config": Config(retries={"mode": "standard", "max_attempts": max_attempts})}
        if self.endpoint:
            kwargs.update(
                endpoint_url=self.endpoint,
                aws_access_key_id=sandbox.CREDENTIALS["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=sandbox.CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            )
        with _session_lock:
            return _session().client(service, **kwargs)

    @property
    def where(self) -> str:
        return f"{self.target} ({self.endpoint or 'aws ' + self.region})"

    @property
    def cannot_run(self) -> str:
        if self.target == "sandbox":
            return ""  # per image: no_machine
        if not os.environ.get(TEST_PROFILE_ENV):
            return (f"image tests on aws run on an instance launched from the image, through SSM: set "
                    f"{TEST_PROFILE_ENV} to an instance profile with AmazonSSMManagedInstanceCore")
        return ""

    def no_machine(self, image_id: str) -> str:
        if self.target != "sandbox" or image_id in sandbox_instances.read_backing(sandbox.port_of(self.endpoint)):
            return ""
        return (f"{image_id} has no machine behind it (the sandbox runs Debian's AMIs and the images built "
                "on them as containers, nothing else)")

    @property
    def cannot_export(self) -> str:
        if self.target == "sandbox":
            return ""  # per image: no_machine
        return "an EC2 image's filesystem is not unpacked here: OpenSCAP scores are taken on target local"

    def export_filesystem(self, image_id: str, dest: Path) -> Path:
        """The sandbox: the filesystem of the container image that backs the AMI, as the local target's."""
        if self.cannot_export or self.no_machine(image_id):
            raise StoreError(f"{self.where}: {self.cannot_export or self.no_machine(image_id)}")
        backing = sandbox_instances.read_backing(sandbox.port_of(self.endpoint))[image_id]
        return docker_store.export_image(f"{self.where} {image_id}", backing, dest)

    def run_commands(self, image_id: str, commands: list[str], timeout: float) -> list[CommandResult]:
        if self.cannot_run or self.no_machine(image_id):
            raise StoreError(f"{self.where}: {self.cannot_run or self.no_machine(image_id)}")
        profile = sandbox_ssm.INSTANCE_PROFILE if self.endpoint else os.environ[TEST_PROFILE_ENV]
        return self.run_on_instance(image_id, commands, timeout, profile,
                                    os.environ.get(TEST_TYPE_ENV, "t3.micro"), os.environ.get(TEST_SUBNET_ENV))

    def run_on_instance(self, image_id: str, commands: list[str], timeout: float, instance_profile: str,
                        instance_type: str = "t3.micro", subnet: str | None = None) -> list[CommandResult]:
        """Launch one instance from the image (tagged; terminated whatever happens), run each command
        with SSM's AWS-RunShellScript in order, and return each one's exit code and output."""
        deadline = time.monotonic() + timeout
        tags = [{"Key": "ManagedBy", "Value": MANAGED_BY}, {"Key": "Purpose", "Value": "image-tests"},
                {"Key": "TestedImageId", "Value": image_id}]
        launch = {"ImageId": image_id, "InstanceType": instance_type, "MinCount": 1, "MaxCount": 1,
                  "IamInstanceProfile": {"Name": instance_profile}, "InstanceInitiatedShutdownBehavior": "terminate",
                  "TagSpecifications": [{"ResourceType": "instance", "Tags": tags}]}
        if subnet:
            launch["SubnetId"] = subnet
        instance = self._call("run_instances", **launch)["Instances"][0]["InstanceId"]
        delay = 1 if self.endpoint else 10
        try:
            self.ec2.get_waiter("instance_running").wait(
                InstanceIds=[instance], WaiterConfig={"Delay": delay, "MaxAttempts": max(1, int(timeout // delay))})
            ssm = self.client(max_attempts=5, service="ssm")
            # The sandbox's instances are managed from the start; AWS's agent registers some seconds late.
            return [self._ssm_run(ssm, instance, command, deadline, delay, wait_for_agent=not self.endpoint)
                    for command in commands]
        except botocore.exceptions.WaiterError as exc:
            raise StoreError(f"{self.where}: test instance {instance} of {image_id} did not start: {exc}") from None
        except botocore.exceptions.ClientError as exc:
            raise self._error("SSM send_command", exc) from None
        finally:
            self._call("terminate_instances", InstanceIds=[instance])
            self.ec2.get_waiter("instance_terminated").wait(
                InstanceIds=[instance], WaiterConfig={"Delay": delay, "MaxAttempts": 120})

    @staticmethod
    def _ssm_run(ssm, instance: str, command: str, deadline: float, delay: float,
                 wait_for_agent: bool = True) -> CommandResult:
        while True:  # the SSM agent registers some seconds after the instance runs
            left = max(1, int(deadline - time.monotonic()))
            try:
                # TimeoutSeconds bounds the delivery, executionTimeout the run (SSM's default: an hour).
                sent = ssm.send_command(InstanceIds=[instance], DocumentName="AWS-RunShellScript",
                                        Parameters={"commands": [command], "executionTimeout": [str(left)]},
                                        TimeoutSeconds=max(30, left))
                break
            except botocore.exceptions.ClientError as exc:
                if not wait_for_agent or aws_error_code(exc) != "InvalidInstanceId" or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
        command_id = sent["Command"]["CommandId"]
        try:
            ssm.get_waiter("command_executed").wait(
                CommandId=command_id, InstanceId=instance,
                WaiterConfig={"Delay": delay, "MaxAttempts": max(1, int((deadline - time.monotonic()) // delay))})
        except botocore.exceptions.WaiterError:
            pass  # a failed command ends the waiter too: its invocation says how
        done = ssm.get_command_invocation(CommandId=command_id, InstanceId=instance)
        code = done.get("ResponseCode", -1)
        output = (done.get("StandardOutputContent", "") + done.get("StandardErrorContent", "")).strip("\n")
        return CommandResult(command, code if code >= 0 else 1, output or done.get("StatusDetails", ""))

    def build_variables(self) -> dict[str, str]:
        # A sandbox instance is a container on the host's network, as a local build is: HTTPS through
        # this host's proxy needs the host's CAs (finalize.sh removes them before the image is made).
        if self.target == "sandbox" and docker_store.HOST_CA_BUNDLE.is_file():
            return {"build_ca_bundle": str(docker_store.HOST_CA_BUNDLE)}
        return {}

    def packer_env(self) -> dict[str, str]:
        """Environment for packer: sandbox credentials, or the caller's own AWS chain."""
        env = {k: v for k, v in os.environ.items() if not (self.endpoint and k.startswith("AWS_"))}
        env["CHECKPOINT_DISABLE"] = "1"  # no update check calls from build machines
        if self.endpoint:
            env["NO_PROXY"] = ",".join(filter(None, [env.get("NO_PROXY"), "127.0.0.1", "localhost"]))
            env.update(sandbox.CREDENTIALS)
            env["AWS_POLL_DELAY_SECONDS"] = "1"  # the emulator is instant; AWS's 15 s waiter delay is not
        return env

    @contextlib.contextmanager
    def watch(self):
        if self.target != "sandbox":
            yield lambda pgid: None
            return
        with sandbox.Watch(sandbox.port_of(self.endpoint)) as watch:
            try:
                yield watch.guard
            except Exception:
                if watch.down:  # packer's own error is then only its lost connection
                    raise StoreError(watch.down) from None
                raise

    def _error(self, op: str, exc: Exception) -> StoreError:
        if isinstance(exc, botocore.exceptions.EndpointConnectionError):
            if self.target == "sandbox":
                return StoreError(sandbox.down_message(sandbox.port_of(self.endpoint), f"does not answer (EC2 {op})"))
            return StoreError(f"cannot reach the {self.where} EC2 endpoint", transient=True)
        return StoreError(f"EC2 {op} on {self.where} failed ({aws_error_code(exc)}): {exc}",
                          transient=aws_error_is_transient(exc))

    def _call(self, op: str, **kwargs):
        try:
            return getattr(self.ec2, op)(**kwargs)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._error(op, exc) from None

    def _images(self, **kwargs) -> list[dict]:
        try:
            return self.describe_all("describe_images", "Images", **kwargs)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            if isinstance(exc, botocore.exceptions.ClientError) and kwargs.get("ImageIds") and \
                    aws_error_code(exc).startswith(("InvalidAMIID",)):
                return []  # an image id that does not (or no longer) exist
            raise self._error("DescribeImages", exc) from None

    def check_reachable(self) -> None:
        self._call("describe_regions")

    def newest_vendor_image(self, query) -> ImageRecord:
        """Newest by CreationDate, then by name, so an unchanged account always gives the same id."""
        owners, name = query.owners, query.name
        images = self._images(Owners=owners, Filters=[{"Name": "name", "Values": [name]}, {"Name": "state", "Values": ["available"]}])
        if not images:
            hint = ""
            if self.target == "sandbox" and sandbox_images.DEBIAN_OWNER in owners:
                hint = ("; the sandbox serves Debian's AMIs only when docker answered as it started (its instances "
                        "are containers): python -m image_assets.dockerd start, then python -m image_assets.sandbox "
                        "stop and start (it keeps the images it built)")
            raise StoreError(f"no image in {self.where} matches owners={owners} name={name!r}{hint}")
        return record(max(images, key=lambda i: (i.get("CreationDate", ""), i.get("Name", ""))))

    def get(self, image_id: str) -> ImageRecord | None:
        found = self._images(ImageIds=[image_id])  # InvalidAMIID.NotFound / .Malformed: none
        return record(found[0]) if found else None

    def get_many(self, image_ids: list[str]) -> dict[str, ImageRecord]:
        # One id gone makes EC2 refuse the whole list (InvalidAMIID.NotFound): then none is
        # returned, and a caller asks for each on its own.
        return {i["ImageId"]: record(i) for i in self._images(ImageIds=list(image_ids))} if image_ids else {}

    def managed_images(self, **tags: str) -> list[ImageRecord]:
        filters = [{"Name": "tag:ManagedBy", "Values": [MANAGED_BY]}]
        filters += [{"Name": f"tag:{k}", "Values": [v]} for k, v in tags.items()]
        return [record(i) for i in self._images(Owners=["self"], Filters=filters)]

    def tag(self, image_id: str, tags: dict[str, str]) -> None:
        self._call("create_tags", Resources=[image_id], Tags=[{"Key": k, "Value": v} for k, v in tags.items()])

    def deprecate(self, image_id: str, at: datetime) -> str:
        """Set the image's deprecation time (the sandbox keeps it too); returns what was set."""
        # AWS rounds to the minute and refuses a past time: the next whole minute plus one.
        when = (at + timedelta(minutes=2)).replace(second=0, microsecond=0)
        self._call("enable_image_deprecation", ImageId=image_id, DeprecateAt=when)
        return f"deprecated at {when.strftime('%Y-%m-%dT%H:%M:%SZ')}"

    def deregister(self, image: ImageRecord) -> list[str]:
        """Deregister an image and delete its snapshots; returns the snapshot ids deleted."""
        self._call("deregister_image", ImageId=image.id)
        for snap in image.snapshots:
            self._call("delete_snapshot", SnapshotId=snap)
        return list(image.snapshots)

    # --- Distribution: copies in this region of images built in another ---

    def copy_image(self, source: ImageRecord, source_region: str, tags: dict[str, str]) -> ImageRecord:
        # A step that died mid-copy left an untagged (or unfinished) copy under the same name, and
        # AMI names are unique per region: remove it first, or every retry fails on the name.
        for image in self._images(Owners=["self"], Filters=[{"Name": "name", "Values": [source.name]}]):
            left = record(image)
            if not left.managed or (left.tags.get("SourceImageId") == source.id and not left.available):
                self.deregister(left)
        copy_id = self._call("copy_image", SourceImageId=source.id, SourceRegion=source_region, Name=source.name,
                             Description=f"image-assets: copy of {source.id} from {source_region}")["ImageId"]
        delay = 1 if self.endpoint else 15
        try:
            # Tagged only once available (as packer does): a copy with tags is a finished copy.
            self.ec2.get_waiter("image_available").wait(
                ImageIds=[copy_id], WaiterConfig={"Delay": delay, "MaxAttempts": 4 * 3600 // delay})
            self.tag(copy_id, tags)
            return self.get(copy_id)
        except (botocore.exceptions.WaiterError, botocore.exceptions.BotoCoreError,
                botocore.exceptions.ClientError, StoreError) as exc:
            half = self.get(copy_id)
            if half is not None:  # never leave a half-made (or untagged, so untraceable) copy behind
                self.deregister(half)
            raise StoreError(f"copy {copy_id} of {source.id} from {source_region} to {self.where} failed "
                             f"and was deregistered: {exc}", transient=True) from None

    def share(self, image_id: str, accounts: list[str]) -> None:
        self._call("modify_image_attribute", ImageId=image_id,
                   LaunchPermission={"Add": [{"UserId": account} for account in accounts]})

    # --- Release channels: one SSM parameter each; SSM keeps every value's version (history) ---

    @functools.cached_property
    def ssm(self):
        return self.client(max_attempts=5, service="ssm")

    def _ssm(self, op: str, name: str, call):
        try:
            return call()
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            if aws_error_code(exc) == "ParameterNotFound":
                return None
            raise StoreError(f"SSM {op} {name} on {self.where} failed ({aws_error_code(exc)}): {exc}",
                             transient=aws_error_is_transient(exc)) from None

    def channel_get(self, image: str, channel: str) -> str | None:
        name = channel_parameter(image, channel)
        found = self._ssm("GetParameter", name, lambda: self.ssm.get_parameter(Name=name))
        return found["Parameter"]["Value"] if found else None

    def channel_values(self, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """GetParameters, ten names a call (SSM's limit): `outdated` over 1,000 images made 1,000
        GetParameter calls (~5 s on the sandbox) where 100 do; a missing name is simply not returned."""
        by_name = {channel_parameter(*pair): pair for pair in pairs}
        names, found = list(by_name), {}
        for i in range(0, len(names), 10):
            batch = names[i:i + 10]
            got = self._ssm("GetParameters", batch[0], lambda: self.ssm.get_parameters(Names=batch))
            found.update({by_name[p["Name"]]: p["Value"] for p in (got or {}).get("Parameters", [])})
        return found

    def channel_set(self, image: str, channel: str, image_id: str) -> None:
        name = channel_parameter(image, channel)
        self._ssm("PutParameter", name, lambda: self.ssm.put_parameter(
            Name=name, Value=image_id, Type="String", Overwrite=True,
            Description=f"image-assets: the {image} image on channel {channel}"))

    def channel_history(self, image: str, channel: str) -> list[ChannelEntry]:
        name = channel_parameter(image, channel)
        pages = self._ssm("GetParameterHistory", name, lambda: list(
            self.ssm.get_paginator("get_parameter_history").paginate(Name=name)))
        versions = sorted((p for page in pages or [] for p in page["Parameters"]), key=lambda p: p["Version"])
        return [ChannelEntry(p["Value"], p["LastModifiedDate"].astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
                for p in versions]

    # --- What a dead build left behind (issue: crash) ---

    def describe_all(self, operation: str, key: str, **kwargs) -> list[dict]:
        """Every item of a describe call, through all its pages: EC2 (and the sandbox, after 100
        reservations) returns one page at a time, and an item on page two is as real as on page one."""
        return [item for page in self.ec2.get_paginator(operation).paginate(**kwargs) for item in page[key]]

    def _instances(self, filters: list[dict]) -> list[dict]:
        return [i for r in self.describe_all("describe_instances", "Reservations", Filters=filters) for i in r["Instances"]]

    def _live_instances(self, filters: list[dict]) -> list[dict]:
        return self._instances(filters + [{"Name": "instance-state-name", "Values": LIVE_INSTANCE_STATES}])

    def runs_with_leftovers(self, name: str) -> set[str]:
        """Run ids that still hold a live instance, a volume or an unfinished image of this image."""
        found = [_tags(i) for i in self._live_instances(_image_filters(name))]
        found += [_tags(v) for v in self.describe_all("describe_volumes", "Volumes", Filters=_image_filters(name))]
        found += [i.tags for i in self.managed_images(ImageName=name) if not i.available]
        return {t["DagsterRunId"] for t in found if t.get("DagsterRunId")}

    def remove_leftovers(self, name: str, run_id: str, log=print) -> list[str]:
        """Delete what build `run_id` of `name` left; call only for a run known to be dead.

        Packer's temporary key pair and security group (`packer_<uuid>`) carry no tags in 1.6.6; they
        are found through the tagged instance they were made for, so nothing else is ever touched.
        """
        removed: list[str] = []
        filters = _image_filters(name) + [{"Name": "tag:DagsterRunId", "Values": [run_id]}]
        instances = self._live_instances(filters)
        # Terminated instances too: a packer stopped mid-cleanup (its output pipe gone with the dead
        # step) may have terminated the instance but not yet deleted its key pair and security group.
        every = self._instances(filters)
        groups = {g["GroupId"] for i in every for g in i.get("SecurityGroups", []) if g["GroupName"].startswith("packer_")}
        keys = {i["KeyName"] for i in every if i.get("KeyName", "").startswith("packer_")}
        groups &= {g["GroupId"] for g in self.describe_all("describe_security_groups", "SecurityGroups")}
        keys &= {k["KeyName"] for k in self.ec2.describe_key_pairs()["KeyPairs"]}
        if instances:
            ids = [i["InstanceId"] for i in instances]
            self._call("terminate_instances", InstanceIds=ids)
            self.ec2.get_waiter("instance_terminated").wait(
                InstanceIds=ids, WaiterConfig={"Delay": 1 if self.endpoint else 10, "MaxAttempts": 120})
            removed += ids
        for group in groups:
            self._call("delete_security_group", GroupId=group)
            removed.append(group)
        for key in keys:
            self._call("delete_key_pair", KeyName=key)
            removed.append(key)
        # Images: unfinished ones tagged with the run, and untagged ones packer named for it (AMI tags
        # are added only once the AMI is available). A finished, tagged image stays: it is reusable.
        tagged = [i for i in self._images(Owners=["self"], Filters=filters) if i.get("State") != "available"]
        named = [i for i in self._images(Owners=["self"], Filters=[{"Name": "name", "Values": [f"{name}-*.{run_id[:8]}"]}])
                 if "ManagedBy" not in _tags(i)]
        for image in {i["ImageId"]: record(i) for i in tagged + named}.values():
            removed += [image.id, *self.deregister(image)]
        in_use = {s for i in self._images(Owners=["self"]) for s in _snapshots(i)}
        for snap in self.describe_all("describe_snapshots", "Snapshots", OwnerIds=["self"], Filters=filters):
            if snap["SnapshotId"] not in in_use:
                self._call("delete_snapshot", SnapshotId=snap["SnapshotId"])
                removed.append(snap["SnapshotId"])
        for volume in self.describe_all("describe_volumes", "Volumes", Filters=filters):
            if volume["State"] == "available":
                self._call("delete_volume", VolumeId=volume["VolumeId"])
                removed.append(volume["VolumeId"])
        if removed:
            log(f"{name}: removed what dead build {run_id} left: {' '.join(removed)}")
        return removed


def _image_filters(name: str) -> list[dict]:
    return [{"Name": "tag:ManagedBy", "Values": [MANAGED_BY]}, {"Name": "tag:ImageName", "Values": [name]}]


@functools.lru_cache(maxsize=8)
def _cached(target: str, region: str, endpoint: str | None) -> Ec2Store:
    """One client per target, region and sandbox endpoint per process (creating one costs ~0.15 s)."""
    return Ec2Store(target, region)


def connect(target: str, region: str) -> Ec2Store:
    """A cached store; for the sandbox, (re)started first if it is not running."""
    if target != "sandbox":
        return _cached(target, region, None)
    try:
        endpoint = sandbox.ensure_running()
    except RuntimeError as exc:  # e.g. the port is held by something else: say which endpoint
        raise StoreError(f"the sandbox EC2 endpoint {sandbox.endpoint()} is unusable: {exc}") from None
    return _cached(target, region, endpoint)
