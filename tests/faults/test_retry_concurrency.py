"""Items 3 and 4: a retry never yields a second image; two concurrent runs of one image run one build.
The instances are containers: each image is one committed container image, and no container stays."""

import dagster as dg
from conftest import latest, materialize
from faultkit import IMAGE, cli_env, docker_inventory, inventory, start_cli, write_fault_catalog
from test_crash import wait_for

from image_assets import build as buildmod
from image_assets import stores
from image_assets.catalog import load_catalog
from image_assets.errors import StoreError
from image_assets.packer import PackerCli


def test_retry_after_the_image_was_made_reuses_it(docker_daemon, tmp_path, work_dir, instance, cloud, monkeypatch):
    catalog = load_catalog(write_fault_catalog(tmp_path / "p"))
    materialize(catalog, instance, selection="debian-11")
    before, docker_before = inventory(cloud), docker_inventory()
    real = stores.Store.require_available
    calls = []

    def flaky(cloud_, image_id, role):
        # Packer built the AMI, then verifying it hits a transient error: Dagster retries the step.
        if role.startswith("built") and not calls:
            calls.append(image_id)
            raise StoreError(f"EC2 DescribeImages failed (RequestLimitExceeded) for {image_id}", transient=True)
        return real(cloud_, image_id, role)

    monkeypatch.setattr(stores.Store, "require_available", flaky)
    result = materialize(catalog, instance, selection=IMAGE)
    assert result.success and calls
    retried = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert len(retried) == 1
    meta = latest(instance, IMAGE)
    assert meta["image_id"] == calls[0] and meta["reused"] is True
    assert inventory(cloud)["images"] - before["images"] == {calls[0]}  # one image for the run
    assert docker_inventory() == {"containers": docker_before["containers"],
                                  "committed": docker_before["committed"] | {calls[0]}}

    # The same run again with changed inputs (a retry after a catalog edit): the first attempt's
    # image was built from other inputs, so it is not adopted; the retry builds anew.
    monkeypatch.setattr(stores.Store, "require_available", real)
    changed = load_catalog(write_fault_catalog(tmp_path / "q", {"payload": "changed"}))
    parent = buildmod.Parent(meta["parent_image_id"], meta["root_image_id"])
    again = buildmod.build_image(changed, IMAGE, parent, result.run_id, PackerCli())
    assert again.image_id != calls[0] and not again.reused and again.fingerprint != meta["fingerprint"]
    assert inventory(cloud)["images"] - before["images"] == {calls[0], again.image_id}
    assert inventory(cloud)["instances"] == before["instances"]
    assert docker_inventory() == {"containers": docker_before["containers"],
                                  "committed": docker_before["committed"] | {calls[0], again.image_id}}


def test_two_concurrent_runs_of_one_image_run_one_build(docker_daemon, tmp_path, work_dir, cloud):
    before, docker_before = inventory(cloud), docker_inventory()
    catalog = write_fault_catalog(tmp_path / "p", {"sleep_seconds": 5})
    outs = [tmp_path / "a.out", tmp_path / "b.out"]
    first = start_cli("*", cli_env(tmp_path / "home-a", catalog), outs[0])
    wait_for(lambda: b"building-now" in outs[0].read_bytes(), 180, "the first build to be mid-way")
    second = start_cli("*", cli_env(tmp_path / "home-b", catalog), outs[1])
    assert first.wait(timeout=300) == 0 and second.wait(timeout=300) == 0
    texts = [o.read_text() + "".join(p.read_text() for p in (tmp_path / h).rglob("compute_logs/*"))
             for o, h in zip(outs, ("home-a", "home-b"))]
    assert "building-now" in texts[0] and "building-now" not in texts[1]  # one packer build
    assert "reusing" in texts[1]
    ids = []
    for home in ("home-a", "home-b"):
        with dg.DagsterInstance.from_config(str(tmp_path / home)) as instance:
            ids.append(latest(instance, IMAGE)["image_id"])
    assert ids[0] == ids[1]
    assert inventory(cloud)["images"] - before["images"] == {ids[0]}
    assert docker_inventory() == {"containers": docker_before["containers"],
                                  "committed": docker_before["committed"] | {ids[0]}}
