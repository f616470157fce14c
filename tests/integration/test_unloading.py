"""A retired version is UNLOADING (index and metrics can see it) until its requests finish."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.models.loader import ServerDefaults
from app.models.manager import ModelManager
from app.models.version import ModelState
from tests.support import onnx_models


async def states(manager: ModelManager, name: str) -> list[tuple[str, str]]:
    return [(s.key.version, s.state.value) for s in manager.statuses(name)]


async def until(manager: ModelManager, name: str, want: list[tuple[str, str]]) -> None:
    """Wait (bounded) for the manager's state change that makes `name` look like `want`."""
    async with asyncio.timeout(30):
        while await states(manager, name) != want:
            await manager.wait_for_change()


@pytest.mark.asyncio
async def test_an_unloaded_version_is_unloading_until_its_last_request(tmp_path: Path) -> None:
    onnx_models.write(tmp_path, "m", onnx_models.plus_one())
    manager = ModelManager(tmp_path, ServerDefaults(), 64)
    try:
        await manager.start(None)
        assert await states(manager, "m") == [("1", "READY")]
        lease = manager.acquire("m", None)  # a request in flight
        await manager.unload("m")
        assert await states(manager, "m") == [("1", ModelState.UNLOADING.value)]
        assert "in-flight" in manager.statuses("m")[0].reason
        lease.release()
        await until(manager, "m", [("1", "UNAVAILABLE")])
    finally:
        await manager.close()


@pytest.mark.asyncio
async def test_a_removed_model_is_listed_as_unloading_while_it_drains(tmp_path: Path) -> None:
    onnx_models.write(tmp_path, "m", onnx_models.plus_one())
    manager = ModelManager(tmp_path, ServerDefaults(), 64)
    try:
        await manager.start(None)
        lease = manager.acquire("m", "1")
        await manager.reconcile({}, set())  # the model's folder left the repository
        assert await states(manager, "m") == [("1", "UNLOADING")]
        lease.release()
        async with asyncio.timeout(30):
            while any(s.key.name == "m" for s in manager.statuses()):
                await manager.wait_for_change()
    finally:
        await manager.close()
