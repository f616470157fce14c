"""The response cache: which requests share a key, LRU eviction by bytes, private copies."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from app.batching.stats import ModelStats
from app.batching.unbatched import UnbatchedScheduler
from app.cache import ENTRY_OVERHEAD_BYTES, ResponseCache, cache_key
from app.models.version import LoadedModel
from app.repository.config import ModelConfig
from app.service import InferenceService
from app.settings import CacheSettings
from app.types import Array, ModelKey
from tests.unit.test_batcher import FakeRunner


def key(inputs: Mapping[str, Array], datatypes: Mapping[str, str] | None = None,
        outputs: tuple[str, ...] = ("y",), version: str = "1", load_id: int = 1) -> bytes:
    types = datatypes or {name: "FP32" for name in inputs}
    return cache_key("m", version, load_id, inputs, types, outputs)


X = np.arange(6, dtype=np.float32).reshape(2, 3)


def test_equal_requests_share_a_key_whatever_their_memory_layout_or_order() -> None:
    same = [
        key({"x": X}),
        key({"x": X.copy()}),
        key({"x": np.asfortranarray(X)}),  # same values, other layout
        key({"x": np.repeat(X, 2, axis=1)[:, ::2]}),  # a strided view
    ]
    assert len(set(same)) == 1
    two = {"a": X, "b": X + 1}
    assert key(two) == key(dict(reversed(two.items())))
    assert key({"x": X}, outputs=("y", "z")) == key({"x": X}, outputs=("z", "y", "z"))


@pytest.mark.parametrize("other", [
    {"inputs": {"x": X + np.float32(1e-7)}},                      # one value
    {"inputs": {"x": X.reshape(3, 2)}},                            # same bytes, other shape
    {"inputs": {"x": X.view(np.int32)}, "datatypes": {"x": "INT32"}},  # same bytes, other type
    {"inputs": {"x": X.astype(">f4")}},                            # other byte order
    {"inputs": {"z": X}, "datatypes": {"z": "FP32"}},              # other input name
    {"outputs": ("y", "z")},                                       # other outputs asked for
    {"version": "2"},
    {"load_id": 2},                                                # the version was reloaded
])
def test_anything_that_changes_the_answer_changes_the_key(other: dict[str, object]) -> None:
    arguments: dict[str, object] = {"inputs": {"x": X}} | other
    assert key(**arguments) != key({"x": X})  # type: ignore[arg-type]


def test_bytes_elements_are_framed() -> None:
    def strings(*values: object) -> bytes:
        return key({"s": np.array(values, dtype=object)}, {"s": "BYTES"})

    assert strings("ab", "c") != strings("a", "bc")
    assert strings(b"ab") != strings("ab")
    assert strings("ab", "c") == strings("ab", "c")


def entry(value: float, rows: int = 10) -> dict[str, Array]:
    return {"y": np.full((rows,), value, np.float32)}


def size_of(outputs: Mapping[str, Array]) -> int:
    probe = ResponseCache(1 << 30)
    probe.put(b"k", outputs)
    return probe.nbytes


def test_eviction_keeps_the_bytes_bound_least_recently_used_first() -> None:
    one = size_of(entry(0))
    assert one > ENTRY_OVERHEAD_BYTES + 40  # the data and the bookkeeping both count
    cache = ResponseCache(2 * one + one // 2)  # room for two entries, not three
    cache.put(b"a", entry(1))
    cache.put(b"b", entry(2))
    assert cache.get(b"a") is not None  # "a" is now the most recently used
    cache.put(b"c", entry(3))
    assert cache.get(b"b") is None  # the least recently used went
    assert cache.get(b"a") is not None and cache.get(b"c") is not None
    assert (len(cache), cache.nbytes, cache.evictions) == (2, 2 * one, 1)
    for index in range(100):
        cache.put(bytes([index]), entry(index))
        assert cache.nbytes <= cache.capacity_bytes
    assert (cache.hits, cache.misses) == (3, 1)


def test_an_answer_larger_than_the_cache_is_not_stored() -> None:
    cache = ResponseCache(size_of(entry(0)))
    assert cache.put(b"small", entry(0))
    assert not cache.put(b"big", entry(0, rows=11))
    assert (len(cache), cache.get(b"small") is not None) == (1, True)


def test_a_replaced_key_is_counted_once() -> None:
    cache = ResponseCache(1 << 20)
    cache.put(b"a", entry(1))
    cache.put(b"a", entry(2))
    assert (len(cache), cache.nbytes) == (1, size_of(entry(0)))


def test_cached_arrays_are_private_read_only_copies() -> None:
    cache = ResponseCache(1 << 20)
    batch = np.arange(1000, dtype=np.float32)
    row = batch[:10]  # a view into a batch's output
    cache.put(b"a", {"y": row})
    batch[:] = -1
    cached = cache.get(b"a")
    assert cached is not None
    np.testing.assert_array_equal(cached["y"], np.arange(10, dtype=np.float32))
    assert cached["y"].base is None or cached["y"].base is not batch
    with pytest.raises(ValueError, match="read-only"):
        cached["y"][0] = 5


@pytest.mark.parametrize("given, expected", [
    (1048576, 1048576), ("4096", 4096), ("local,size=1048576", 1048576),
    ("local, size = 2048", 2048), (0, 0)])
def test_the_size_setting_takes_tritons_spelling(given: object, expected: int) -> None:
    assert CacheSettings.model_validate({"size_bytes": given}).size_bytes == expected


@pytest.mark.parametrize("given, message", [
    ("redis,host=localhost", "cache 'redis' is not supported"),
    ("local,capacity=5", "'capacity' is not supported"),
    ("local,size=-1", "greater than or equal to 0"),
])
def test_other_caches_and_settings_are_refused_by_name(given: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CacheSettings.model_validate({"size_bytes": given})


class Stateful(UnbatchedScheduler):
    """A scheduler whose answers depend on earlier requests (as a sequence batcher's do)."""

    @property
    def stateless(self) -> bool:
        return False


@pytest.mark.parametrize("scheduler, enable, size, expected", [
    (UnbatchedScheduler, True, 1024, True),
    (Stateful, True, 1024, False),      # never for a stateful model
    (UnbatchedScheduler, False, 1024, False),  # the model does not ask for it
    (UnbatchedScheduler, True, 0, False),      # the server has no cache
])
async def test_only_stateless_models_that_ask_are_cached(
        scheduler: type[UnbatchedScheduler], enable: bool, size: int, expected: bool) -> None:
    config = ModelConfig.model_validate({"response_cache": {"enable": enable}})
    model = LoadedModel(ModelKey("m", "1"), None, None,  # type: ignore[arg-type]
                        scheduler(FakeRunner(), ModelStats(), "m", max_waiting=1), config, None)
    service = InferenceService(None, cache=ResponseCache(size))  # type: ignore[arg-type]
    assert service.caches(model) is expected
