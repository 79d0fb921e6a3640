"""Item 7: a target that is not the sandbox fails clearly, naming the endpoint, before packer starts."""

import socket
import threading

import dagster as dg
from conftest import materialize
from faultkit import inventory, write_fault_catalog

from image_assets.catalog import load_catalog


def test_port_held_by_another_server_fails_before_packer(tmp_path, work_dir, instance, cloud, monkeypatch):
    catalog = load_catalog(write_fault_catalog(tmp_path / "p"))
    before = inventory(cloud)
    # A plain TCP server that accepts and hangs up: listening, but not an EC2 API.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    monkeypatch.setenv("IMAGE_ASSETS_SANDBOX_PORT", str(port))
    try:
        for selection in ("*", "fault-image"):  # via the vendor step, and via the built step's lookup
            result = materialize(catalog, instance, selection=selection, raise_on_error=False)
            assert not result.success
            failures = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
            assert len(failures) == 1  # a permanent error: no retry, no second step attempt
            message = failures[0].step_failure_data.error.message
            assert f"http://127.0.0.1:{port}" in message and "not the moto sandbox" in message, message
    finally:
        server.close()
    assert not work_dir.exists()  # packer never started: not even a work directory
    assert inventory(cloud) == before
    assert instance.get_latest_materialization_event(dg.AssetKey(["fault-image"])) is None
