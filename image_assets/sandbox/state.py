"""What the sandbox keeps across restarts: the images it made, in its state dir.

moto holds everything in memory, so a restarted sandbox used to have none of the images built on it
and every recorded image id was gone. The server now writes, after each call that changes them, the
AMIs it made (CreateImage, CopyImage, RegisterImage, and vendor releases published on it) with their
tags, deprecation, launch permissions and root snapshot id, and the SSM parameters release channels
use (every version, so channel history survives; SecureString values are never written), to
state_file(port) (JSON), each AMI with the container image behind it. A server starting on that port
restores them before it serves, and sandbox_instances keeps the committed container images of the AMIs
kept and backs them again, so a child build still starts from its parent's filesystem. Instances,
volumes, key pairs and security groups are not kept: a build running when the sandbox stopped is lost
with it (and its container removed).
`python -m image_assets.sandbox reset` forgets it all (state file and committed images).
"""

from __future__ import annotations

import datetime
import io
import json
import os
import threading
import urllib.parse
from pathlib import Path

PUBLISHED = "(published on the sandbox)"  # the description's end of a vendor release published on it
_CHANGES = ("Image", "Tags", "Snapshot", "Parameter")  # calls whose names hold one of these may change state
_READS = ("Describe", "Get", "List")
_lock = threading.Lock()
_port: int | None = None


def state_file(port: int) -> Path:
    from image_assets import sandbox  # the state dir's one definition

    return sandbox.state_dir() / f"sandbox-{port}-state.json"


def read(port: int) -> dict:
    """The kept state of the sandbox on `port`: {"amis": [...], "parameters": [...]} (empty when none)."""
    try:
        state = json.loads(state_file(port).read_text())
    except (OSError, ValueError):
        return {"amis": [], "parameters": []}
    return {"amis": state.get("amis", []), "parameters": state.get("parameters", [])}


def image_ids(port: int) -> set[str]:
    """The AMI ids kept for the sandbox on `port` (their committed container images are kept too)."""
    return set(backings(port))


def backings(port: int) -> dict[str, str]:
    """Each kept AMI of the sandbox on `port` -> the container image that backed it ("" for none)."""
    return {ami["id"]: ami.get("backing", "") for ami in read(port)["amis"]}


def forget(port: int) -> None:
    state_file(port).unlink(missing_ok=True)


def _time(value) -> str:
    return value.isoformat() if isinstance(value, datetime.datetime) else str(value)


def _kept_amis() -> list[dict]:
    from moto.core import DEFAULT_ACCOUNT_ID  # moto only in the server: the CLI reads the file alone
    from moto.ec2.models import ec2_backends

    from image_assets.sandbox import instances as sandbox_instances

    amis = []
    for region, backend in list(ec2_backends[DEFAULT_ACCOUNT_ID].items()):  # only the regions in use
        for ami in list(backend.amis.values()):
            if ami.owner_id != DEFAULT_ACCOUNT_ID and not (ami.description or "").endswith(PUBLISHED):
                continue  # moto's and Debian's own images come back by themselves
            snapshot = ami.ebs_snapshot
            amis.append({
                "region": region, "id": ami.id, "name": ami.name, "description": ami.description,
                "owner_id": ami.owner_id, "owner_alias": ami.owner_alias, "state": ami.state,
                "virtualization_type": ami.virtualization_type, "architecture": ami.architecture,
                "creation_date": _time(ami.creation_date), "platform": ami.platform,
                "image_location": ami.image_location, "hypervisor": ami.hypervisor,
                "root_device_type": ami.root_device_type, "root_device_name": ami.root_device_name,
                "sriov": ami.sriov, "boot_mode": ami.boot_mode, "source_instance_id": ami.instance_id,
                "launch_permissions": list(ami.launch_permissions),
                "deprecation_time": getattr(ami, "deprecation_time", None),
                "backing": sandbox_instances.backing(ami.id),  # its container image, if a machine runs it
                "tags": dict(backend.tags.get(ami.id, {})),
                "snapshot": {"id": snapshot.id, "description": snapshot.description,
                             "tags": dict(backend.tags.get(snapshot.id, {}))},
            })
    return amis


def _kept_parameters() -> list[dict]:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ssm.models import ssm_backends

    parameters = []
    for region, backend in list(ssm_backends[DEFAULT_ACCOUNT_ID].items()):
        for name, versions in list(backend._parameters.items()):
            if name.startswith("/aws/") or not versions or versions[-1].parameter_type == "SecureString":
                continue  # moto's public parameters; secrets never go to disk
            parameters.append({
                "region": region, "name": name,
                "tags": dict(backend._resource_tags.get("Parameter", {}).get(name, {})),
                "versions": [{"value": p.value, "type": p.parameter_type, "description": p.description,
                              "version": p.version, "data_type": p.data_type, "labels": list(p.labels),
                              "tier": p.tier, "last_modified_date": _time(p.last_modified_date)}
                             for p in versions],
            })
    return parameters


def save() -> None:
    """Write what is kept (atomically: a crash leaves the previous file)."""
    if _port is None:
        return
    with _lock:
        for attempt in range(5):
            try:  # another request thread may change a dict while it is read: read again
                state = {"amis": _kept_amis(), "parameters": _kept_parameters()}
                break
            except RuntimeError:
                if attempt == 4:
                    raise
        path = state_file(_port)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, path)


def restore(port: int) -> list[str]:
    """Put the kept images and parameters back into moto's backends (the server, before it serves);
    from now on save() writes this port's file. Returns a line per restored kind, for the log."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.amis import Ami
    from moto.ssm.models import Parameter, ssm_backends

    global _port
    _port = port
    state = read(port)
    for saved in state["amis"]:
        backend = ec2_backends[DEFAULT_ACCOUNT_ID][saved["region"]]  # made with the region's own images
        ami = Ami(backend, saved["id"], name=saved["name"], description=saved["description"],
                  owner_id=saved["owner_id"], owner_alias=saved["owner_alias"], state=saved["state"],
                  virtualization_type=saved["virtualization_type"], architecture=saved["architecture"],
                  creation_date=datetime.datetime.fromisoformat(saved["creation_date"]), platform=saved["platform"],
                  image_location=saved["image_location"], hypervisor=saved["hypervisor"],
                  root_device_type=saved["root_device_type"], root_device_name=saved["root_device_name"],
                  sriov=saved["sriov"], boot_mode=saved["boot_mode"], region_name=saved["region"] + "a",
                  snapshot_description=saved["snapshot"]["description"])
        ami.launch_permissions = saved["launch_permissions"]
        ami.instance_id = saved["source_instance_id"]
        ami.deprecation_time = saved["deprecation_time"]
        snapshot = backend.snapshots.pop(ami.ebs_snapshot.id)  # made anew: give it back its id
        snapshot.id = saved["snapshot"]["id"]
        backend.snapshots[snapshot.id] = snapshot
        backend.amis[ami.id] = ami
        for resource, tags in ((ami.id, saved["tags"]), (snapshot.id, saved["snapshot"]["tags"])):
            if tags:
                backend.create_tags([resource], tags)
    for saved in state["parameters"]:
        backend = ssm_backends[DEFAULT_ACCOUNT_ID][saved["region"]]
        backend._parameters[saved["name"]] = [
            Parameter(DEFAULT_ACCOUNT_ID, saved["name"], v["value"], v["type"], v["description"], None, None,
                      datetime.datetime.fromisoformat(v["last_modified_date"]), v["version"], v["data_type"],
                      labels=v["labels"], tier=v["tier"])
            for v in saved["versions"]]
        for key, value in saved["tags"].items():
            backend._resource_tags["Parameter"][saved["name"]][key] = value
    return [f"kept from before this start: {len(state['amis'])} image(s) and {len(state['parameters'])} "
            f"SSM parameter(s) ({state_file(port)}); instances, volumes and key pairs are not kept"]


def _action(environ) -> str:
    """The API call of a request: SSM's from its target header, EC2's from the form body (read and
    put back for moto)."""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        return target.rpartition(".")[2]
    if environ.get("REQUEST_METHOD") != "POST":
        return urllib.parse.parse_qs(environ.get("QUERY_STRING", "")).get("Action", [""])[0]
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    environ["wsgi.input"] = io.BytesIO(body)
    return urllib.parse.parse_qs(body.decode("utf-8", "replace")).get("Action", [""])[0]


def saving(app, extra_paths: tuple[str, ...] = ()):
    """WSGI: after each call that may change a kept image or parameter (and requests to extra_paths),
    save()."""
    def dispatch(environ, start_response):
        path = environ.get("PATH_INFO", "")
        action = "" if path in extra_paths else _action(environ)
        changes = path in extra_paths or (any(k in action for k in _CHANGES) and not action.startswith(_READS))
        result = app(environ, start_response)
        if changes:
            try:
                body = b"".join(result)  # the call is done once its response is made
            finally:
                getattr(result, "close", lambda: None)()
            save()
            return [body]
        return result
    return dispatch
