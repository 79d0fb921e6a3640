"""The default executor's settings: the step limit follows the packer pool, an unknown executor name is
refused (runs on each executor, with real builds: tests/test_executor.py)."""

import dagster as dg
import pytest

from image_assets.orchestration import executor


def test_the_step_limit_follows_the_packer_pool(tmp_path):
    overrides = {"concurrency": {"pools": {"default_limit": 3}}}
    with dg.instance_for_test(temp_dir=str(tmp_path), overrides=overrides) as instance:
        assert executor.steps_at_once(instance, 8) == 3  # the default limit, pool not claimed yet
        assert executor.steps_at_once(instance, 2) == 2
        instance.event_log_storage.set_concurrency_slots("packer", 5)  # dagster instance concurrency set
        assert executor.steps_at_once(instance, 8) == 5
        instance.event_log_storage.set_concurrency_slots("packer", 12)
        assert executor.steps_at_once(instance, 8) == 8
    (tmp_path / "unlimited").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "unlimited")) as instance:
        assert executor.steps_at_once(instance, 8) == 8


def test_an_unknown_executor_name_is_refused(monkeypatch):
    monkeypatch.setenv("IMAGE_ASSETS_EXECUTOR", "threads")
    with pytest.raises(ValueError, match="IMAGE_ASSETS_EXECUTOR='threads': choose one of auto, multiprocess, in_process"):
        executor.executor()
