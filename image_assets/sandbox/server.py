"""The sandbox's moto server: `python -m image_assets.sandbox.server --port N`.

Started detached by `image_assets.sandbox.start()`; serves until SIGTERM. Besides moto's EC2 API
it answers POST /image-assets/publish-vendor-image (see publish_vendor_image), and
EnableImageDeprecation / DisableImageDeprecation, which moto lacks. It serves Debian's AMIs backed by
container images, and instances of backed AMIs are containers (sandbox_instances does the docker part).
"""

import argparse
import datetime
import ipaddress
import json
import queue
import subprocess
import threading

from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.responses import ActionResult
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models import ec2_backends
from moto.ec2.models import key_pairs as moto_key_pairs
from moto.ec2.models.amis import Ami, AmiBackend
from moto.ec2.models.core import TaggedEC2Resource
from moto.ec2.models.instances import Instance, InstanceBackend
from moto.ec2.responses.amis import AmisResponse
from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix, random_ami_id
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

from image_assets.sandbox import instances as sandbox_instances
from image_assets.sandbox import ssm as sandbox_ssm
from image_assets.sandbox import state as sandbox_state

_moto_create_image = AmiBackend.create_image
_moto_load_amis = AmiBackend._load_amis
_moto_deregister_image = AmiBackend.deregister_image
_moto_run_instances = InstanceBackend.run_instances
_moto_instance_start, _moto_instance_stop = Instance.start, Instance.stop
_moto_instance_terminate, _moto_instance_reboot = Instance.terminate, Instance.reboot
_moto_public_dns, _moto_private_dns = Instance.public_dns_name, Instance.private_dns_name
_moto_rsa_key_pair = moto_key_pairs.random_rsa_key_pair
_spare_rsa_keys: queue.Queue = queue.Queue(maxsize=1)
_debian_amis: list[dict] = []  # Ami keyword arguments, set once at start (sandbox_instances.configure)


def _create_image_ebs(self, instance_id, *args, **kwargs):
    # moto 5.2.5 gives images made by CreateImage RootDeviceType "standard" (instance-store)
    # and root device /dev/sda1 whatever the instance had; packer 1.6.6 refuses such a source
    # image ("invalid root device type"), so no layer could be built on a built layer. On AWS
    # an image created from an EBS-backed instance is EBS-backed with the instance's root
    # device; moto already gives every Ami a root snapshot in its block device mapping.
    ami = _moto_create_image(self, instance_id, *args, **kwargs)
    ami.root_device_type = "ebs"
    ami.root_device_name = self.get_instance(instance_id).root_device_name
    try:
        _in_docker(f"CreateImage of {instance_id}", sandbox_instances.commit_instance, instance_id, ami.id)
    except EC2ClientError:
        _moto_deregister_image(self, ami.id)  # no AMI without its image
        raise
    return ami


def _in_docker(what: str, action, *args):
    """A docker step of an EC2 call; its failure is the call's error, naming what failed."""
    try:
        return action(*args)
    except (RuntimeError, subprocess.SubprocessError) as exc:
        raise EC2ClientError("SandboxContainerError", f"sandbox: {what} failed in docker: {exc}") from None


def _make_spare_rsa_key() -> None:
    try:
        _spare_rsa_keys.put_nowait(_moto_rsa_key_pair())
    except queue.Full:
        pass


def _rsa_key_pair_made_ahead():
    # CreateKeyPair: moto makes a 2048-bit RSA key inside the call, on a build's critical path.
    # One is made ahead in a thread (the key generation leaves the GIL), and the next after each
    # use; each key is handed out once.
    try:
        key = _spare_rsa_keys.get_nowait()
    except queue.Empty:
        key = _moto_rsa_key_pair()
    threading.Thread(target=_make_spare_rsa_key, daemon=True).start()
    return key


def _load_amis_and_debian(self) -> None:
    _moto_load_amis(self)
    for ami in _debian_amis:
        self.amis[ami["ami_id"]] = Ami(self, **ami)


def _deregister_image(self, ami_id: str) -> None:
    _moto_deregister_image(self, ami_id)
    sandbox_instances.forget_image(ami_id)


def _run_instances_in_containers(self, image_id, count, user_data, security_group_names, **kwargs):
    reservation = _moto_run_instances(self, image_id, count, user_data, security_group_names, **kwargs)
    backed = [i for i in reservation.instances if sandbox_instances.is_backed(i.image_id)]
    key = self.key_pairs.get(kwargs.get("key_name") or "")
    try:
        for instance in backed:
            address = sandbox_instances.start_instance(instance.id, instance.image_id, key.public_key if key else "")
            _give_address(instance, address)
    except (RuntimeError, subprocess.SubprocessError) as exc:
        for instance in reservation.instances:
            instance.terminate()
        raise EC2ClientError("SandboxContainerError",
                             f"sandbox: RunInstances of {image_id} failed in docker: {exc}") from None
    return reservation


def _give_address(instance: Instance, address: str) -> None:
    """The container's loopback address replaces moto's invented private and public ones."""
    nic = instance.nics[0]
    if nic.subnet is not None:  # moto's address goes back to the subnet's pool
        nic.subnet.del_subnet_ip(nic.private_ip_address)
    instance._private_ips.discard(nic.private_ip_address)
    nic.private_ip_address = address
    nic.private_ip_addresses = [{"Primary": True, "PrivateIpAddress": address}]
    nic.public_ip, nic.public_ip_auto_assign = address, False  # kept across stop and start


def _loopback_or(moto_dns: property, ip_attribute: str) -> property:
    """A backed instance's DNS names are its address: nothing outside this machine may be asked."""
    def name(self):
        ip = getattr(self, ip_attribute)
        return ip if ip and ipaddress.ip_address(ip).is_loopback else moto_dns.fget(self)
    return property(name)


def _instance_start(self):
    previous = _moto_instance_start(self)
    _in_docker(f"StartInstances of {self.id}", sandbox_instances.resume_instance, self.id)
    return previous


def _instance_stop(self):
    previous = _moto_instance_stop(self)
    _in_docker(f"StopInstances of {self.id}", sandbox_instances.stop_instance, self.id)
    return previous


def _instance_reboot(self):
    _moto_instance_reboot(self)
    _in_docker(f"RebootInstances of {self.id}", sandbox_instances.reboot_instance, self.id)


def _instance_terminate(self):
    previous = _moto_instance_terminate(self)
    _in_docker(f"TerminateInstances of {self.id}", sandbox_instances.remove_instance, self.id)
    return previous


def _tags_of_resource(self) -> list[dict[str, str]]:
    # moto 5.2.5 finds one resource's tags by matching a regex against every tag of every resource
    # (describe_tags with a resource-id filter), and every tag filter and every described resource
    # asks for them: a DescribeInstances or DescribeImages with tag filters grew with everything
    # the sandbox ever tagged (21 ms after 50 builds, 244 ms after 200: bench/bench_sandbox_tags.py).
    # The backend keeps the tags by resource id: the same entries, read directly.
    if not self.id:
        return []
    kind = EC2_PREFIX_TO_RESOURCE.get(get_prefix(self.id), "")
    return [{"resource_id": self.id, "key": key, "value": value, "resource_type": kind}
            for key, value in self.ec2_backend.tags.get(self.id, {}).items()]


def _aws_time(value) -> str:
    """EC2's DeprecationTime form: 2026-12-06T19:42:00.000Z (boto3 sends DeprecateAt as ISO 8601)."""
    if not isinstance(value, datetime.datetime):
        value = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if value.tzinfo is not None:
        value = value.astimezone(datetime.timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _enable_image_deprecation(self) -> ActionResult:
    # moto 5.2.6 has no EnableImageDeprecation (HTTP 500): revocation on the sandbox sets the
    # deprecation time as on AWS. DescribeImages returns an Ami's `deprecation_time` as DeprecationTime.
    image_id, when = self._get_param("ImageId"), self._get_param("DeprecateAt")
    self.error_on_dryrun()
    ami = self.ec2_backend.describe_images(ami_ids=[image_id])[0]  # InvalidAMIID.NotFound as on AWS
    ami.deprecation_time = _aws_time(when)
    return ActionResult({"Return": True})


def _disable_image_deprecation(self) -> ActionResult:
    image_id = self._get_param("ImageId")
    self.error_on_dryrun()
    self.ec2_backend.describe_images(ami_ids=[image_id])[0].deprecation_time = None
    return ActionResult({"Return": True})


def patch_moto(debian_amis: list[dict] = ()) -> None:
    _debian_amis[:] = debian_amis
    AmiBackend._load_amis = _load_amis_and_debian
    AmiBackend.deregister_image = _deregister_image
    InstanceBackend.run_instances = _run_instances_in_containers
    Instance.start, Instance.stop, Instance.terminate = _instance_start, _instance_stop, _instance_terminate
    Instance.reboot = _instance_reboot
    Instance.public_dns_name = _loopback_or(_moto_public_dns, "public_ip")
    Instance.private_dns_name = _loopback_or(_moto_private_dns, "private_ip")
    AmiBackend.create_image = _create_image_ebs
    TaggedEC2Resource.get_tags = _tags_of_resource
    moto_key_pairs.random_rsa_key_pair = _rsa_key_pair_made_ahead
    threading.Thread(target=_make_spare_rsa_key, daemon=True).start()
    AmisResponse.enable_image_deprecation = _enable_image_deprecation
    AmisResponse.disable_image_deprecation = _disable_image_deprecation
    sandbox_ssm.patch_moto()  # SSM Run Command runs in the instance's container


PUBLISH_PATH = "/image-assets/publish-vendor-image"


def publish_vendor_image(region: str, owners: list[str], pattern: str) -> dict:
    """A vendor's new release: an image like the newest one matching (owners, name pattern), owned
    like it, public and EBS-backed, named by the pattern and strictly newer by CreationDate.

    Measured on moto 5.2.5: RegisterImage through the EC2 API cannot do this (the image is owned
    by the caller's account 123456789012, private, RootDeviceType "standard", no architecture),
    and MOTO_AMIS_PATH is read once at start; sandbox_state keeps a published image across restarts.
    """
    backend = ec2_backends[DEFAULT_ACCOUNT_ID][region]
    current = backend.describe_images(owners=owners, filters={"name": [pattern], "state": ["available"]})
    if not current:
        raise LookupError(f"no image in {region} matches owners={owners} name={pattern!r}")
    newest = max(current, key=lambda ami: (ami.creation_date, ami.name or ""))
    # CreationDate has 1-second resolution: a release in the same second as the newest would tie.
    created = max(datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None, microsecond=0),
                  newest.creation_date.replace(microsecond=0) + datetime.timedelta(seconds=1))
    name = pattern.replace("*", created.strftime("%Y%m%d.%H%M%S")).replace("?", "0")
    ami_id = random_ami_id()
    backend.amis[ami_id] = Ami(
        backend, ami_id, name=name, description=f"{name} (published on the sandbox)",
        owner_id=newest.owner_id, owner_alias=newest.owner_alias, public=newest.is_public,
        virtualization_type=newest.virtualization_type, architecture=newest.architecture,
        creation_date=created, platform=newest.platform, image_location=f"{newest.owner_id}/{name}",
        hypervisor=newest.hypervisor, root_device_type="ebs", root_device_name=newest.root_device_name,
        sriov=newest.sriov, boot_mode=newest.boot_mode,
    )
    sandbox_instances.back_like(ami_id, newest.id)  # a Debian release runs as the one before it
    return {"ImageId": ami_id, "Name": name, "OwnerId": newest.owner_id,
            "CreationDate": created.strftime("%Y-%m-%dT%H:%M:%S.000Z"), "Previous": newest.id}


def with_publish_endpoint(app):
    """WSGI: POST PUBLISH_PATH with JSON {region, owners, name} publishes; the rest goes to moto."""
    def dispatch(environ, start_response):
        if environ.get("PATH_INFO") != PUBLISH_PATH:
            return app(environ, start_response)
        status, body = "200 OK", {}
        try:
            if environ["REQUEST_METHOD"] != "POST":
                raise ValueError("use POST")
            length = int(environ.get("CONTENT_LENGTH") or 0)
            query = json.loads(environ["wsgi.input"].read(length) or b"{}")
            body = publish_vendor_image(query["region"], list(query["owners"]), query["name"])
        except (ValueError, KeyError, TypeError) as exc:
            status, body = "400 Bad Request", {"error": f"bad request: {exc!r}"}
        except LookupError as exc:
            status, body = "404 Not Found", {"error": str(exc)}
        data = json.dumps(body).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]
    return dispatch


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m image_assets.sandbox.server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    # The images built before this start come back (sandbox_state), with their committed container images.
    patch_moto(sandbox_instances.configure(args.port, keep=sandbox_state.backings(args.port)))
    for line in sandbox_state.restore(args.port):
        print(f"sandbox: {line}", flush=True)
    app = sandbox_state.saving(with_publish_endpoint(DomainDispatcherApplication(create_backend_app)), (PUBLISH_PATH,))
    server = make_server(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)
    print(f"moto sandbox serving on http://{args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
