"""Run Command on the sandbox: SSM SendCommand of AWS-RunShellScript to an instance that is a
container (sandbox_instances) runs the commands in that container, as SSM's agent runs them on an
EC2 instance, and GetCommandInvocation reports them as SSM does.

What SSM does, and so the sandbox: the document's `commands` are one shell script run by /bin/sh as
root, in `workingDirectory` when given, killed with its process group after `executionTimeout`
seconds (default 3600); the invocation is Pending, then InProgress, then Success (exit 0), Failed
(any other exit) or TimedOut (StatusDetails ExecutionTimedOut, ResponseCode 137 as the Linux agent
reports it); GetCommandInvocation returns the first 24,000 characters of stdout and 8,000 of stderr.
SendCommand's TimeoutSeconds is SSM's delivery timeout: delivery here is immediate. An instance with
no running container is not a managed instance: InvalidInstanceId, as SSM answers for an instance
whose agent has not registered.

Commands run in a thread of the server and SendCommand answers at once (Pending), as on AWS. A
GetCommandInvocation of a running command waits up to ANSWER_WAIT seconds for it to end before it
answers, so a short command is done when the client's waiter first asks (it would otherwise sleep its
Delay before asking again), and a longer one is InProgress to the waiter, as on AWS.

The sandbox creates INSTANCE_PROFILE at start, so a test instance is launched with a profile as on
AWS (where it must carry AmazonSSMManagedInstanceCore).
"""

from __future__ import annotations

import datetime
import subprocess
import threading
import time

from image_assets import dockerd
from image_assets.sandbox import instances as sandbox_instances

INSTANCE_PROFILE = "image-assets-sandbox-ssm"
DOCUMENT = "AWS-RunShellScript"
STDOUT_LIMIT, STDERR_LIMIT = 24000, 8000  # GetCommandInvocation's StandardOutputContent / StandardErrorContent
DEFAULT_EXECUTION_TIMEOUT = 3600
TIMED_OUT_CODE = 137  # the Linux agent's code for a command it stopped (128 + SIGKILL)
ANSWER_WAIT = 1.0

_moto_send_command = _moto_get_command_invocation = None
_ended: dict[tuple[str, str], threading.Event] = {}  # (command id, instance id) -> set once it ended


def _iso(when: datetime.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _client_error(code: str, message: str):
    from moto.ssm.exceptions import SSMException

    return SSMException(code, message)


def _container(instance_id: str) -> sandbox_instances.Container | None:
    container = sandbox_instances._containers.get(instance_id)
    if container is None:
        return None
    running = dockerd.docker("inspect", "--format", "{{.State.Running}}", container.name, check=False, timeout=30)
    return container if running.stdout.strip() == "true" else None


def _send_command(self, **kwargs):
    """SendCommand: moto's bookkeeping, then each container instance runs the script in a thread."""
    requested = list(dict.fromkeys(kwargs.get("instance_ids") or []))  # moto extends the list it is given
    command = _moto_send_command(self, **kwargs)
    if not kwargs.get("targets"):  # moto 5.2.6 adds every instance of the region when Targets is empty
        command.instance_ids = requested
        command.invocations = [i for i in command.invocations if i["InstanceId"] in command.instance_ids]
        command.completed_count = command.target_count = len(command.instance_ids)
    containers = {i: _container(i) for i in command.instance_ids}
    problem = None
    if any(containers.values()) and kwargs.get("document_name") != DOCUMENT:
        problem = _client_error("InvalidDocument", f"sandbox: only {DOCUMENT} runs on an instance's container, "
                                                   f"not {kwargs.get('document_name')!r}")
    elif missing := [i for i, c in containers.items() if c is None]:
        problem = _client_error("InvalidInstanceId", f"sandbox: {', '.join(missing)} not managed by SSM here: "
                                                     "no running container behind the instance")
    if problem:
        self._commands.remove(command)
        raise problem
    command.status = command.status_details = "Pending"
    parameters = command.parameters or {}
    script = "\n".join(parameters.get("commands") or [])
    workdir = (parameters.get("workingDirectory") or [""])[0]
    try:
        limit = int((parameters.get("executionTimeout") or [DEFAULT_EXECUTION_TIMEOUT])[0])
    except ValueError:
        self._commands.remove(command)
        raise _client_error("InvalidParameters", f"executionTimeout {parameters['executionTimeout']!r} is not "
                                                 "a number of seconds") from None
    for invocation in command.invocations:
        invocation.update(Status="Pending", StatusDetails="Pending", ResponseCode=-1,
                          ExecutionStartDateTime="", ExecutionEndDateTime="", ExecutionElapsedTime="")
        _ended[(command.command_id, invocation["InstanceId"])] = threading.Event()
        threading.Thread(target=_invoke, daemon=True, name=f"ssm-{command.command_id}",
                         args=(command, invocation, containers[invocation["InstanceId"]], script, workdir,
                               limit)).start()
    return command


def _get_command_invocation(self, command_id: str, instance_id: str, plugin_name: str | None):
    ended = _ended.get((command_id, instance_id))
    if ended is not None:
        ended.wait(ANSWER_WAIT)
    return _moto_get_command_invocation(self, command_id, instance_id, plugin_name)


def _invoke(command, invocation: dict, container: sandbox_instances.Container, script: str, workdir: str,
            limit: int) -> None:
    try:
        _run(command, invocation, container, script, workdir, limit)
    finally:  # whatever happened, a client waiting on the invocation gets its answer
        _ended.pop((command.command_id, invocation["InstanceId"])).set()


def _run(command, invocation: dict, container: sandbox_instances.Container, script: str, workdir: str,
         limit: int) -> None:
    started = datetime.datetime.now(datetime.timezone.utc)
    invocation.update(Status="InProgress", StatusDetails="InProgress", ExecutionStartDateTime=_iso(started))
    command.status = command.status_details = "InProgress"
    # coreutils' timeout (Essential in every Debian) runs the script in a process group of its own
    # and kills the whole group, as the agent does: killing `docker exec` would leave it running.
    args = ["exec", "-u", "root", *(["-w", workdir] if workdir else []), container.name,
            "timeout", "-s", "KILL", str(limit), "/bin/sh", "-c", script]
    t0 = time.monotonic()
    try:
        done = dockerd.docker(*args, check=False, timeout=limit + 60)
        code, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired:
        code, stdout, stderr = TIMED_OUT_CODE, "", f"sandbox: docker exec in {container.name} did not return"
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        code, stdout, stderr = 1, "", f"sandbox: docker exec in {container.name} failed: {exc}"
    seconds = time.monotonic() - t0
    if code == TIMED_OUT_CODE and seconds >= limit:
        status, details = "TimedOut", "ExecutionTimedOut"
    else:
        status = details = "Success" if code == 0 else "Failed"
    ended = datetime.datetime.now(datetime.timezone.utc)
    invocation.update(
        ResponseCode=code, Status=status, StatusDetails=details,
        StandardOutputContent=stdout[:STDOUT_LIMIT], StandardErrorContent=stderr[:STDERR_LIMIT],
        ExecutionEndDateTime=_iso(ended), ExecutionElapsedTime=f"PT{seconds:.3f}S")
    statuses = {i["Status"] for i in command.invocations}
    if not statuses & {"Pending", "InProgress"}:  # the command's status once every invocation ended
        command.status = command.status_details = next(
            (s for s in ("TimedOut", "Failed") if s in statuses), "Success")
        command.error_count = sum(i["Status"] != "Success" for i in command.invocations)


def _create_profile() -> None:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.iam.models import iam_backends

    iam = iam_backends[DEFAULT_ACCOUNT_ID]["aws"]
    if iam.instance_profiles.get(INSTANCE_PROFILE):
        return
    trust = ('{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},'
             '"Action":"sts:AssumeRole"}]}')
    iam.create_role(INSTANCE_PROFILE, trust, "/", None, "image-assets: image tests on the sandbox", [], None)
    iam.create_instance_profile(INSTANCE_PROFILE, "/", [INSTANCE_PROFILE])


def patch_moto() -> None:
    """Called by the sandbox server at start."""
    global _moto_send_command, _moto_get_command_invocation
    from moto.ssm.models import SimpleSystemManagerBackend

    if _moto_send_command is None:
        _moto_send_command = SimpleSystemManagerBackend.send_command
        _moto_get_command_invocation = SimpleSystemManagerBackend.get_command_invocation
    SimpleSystemManagerBackend.send_command = _send_command
    SimpleSystemManagerBackend.get_command_invocation = _get_command_invocation
    _create_profile()
