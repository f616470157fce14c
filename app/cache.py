"""The response cache: answers of models that enable it, keyed by their inputs, LRU by bytes."""

from __future__ import annotations

import collections
import hashlib
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from app.types import Array

#: What an entry costs beyond its tensors' data: the key, the dict and the array headers.
#: Approximate (the bound is on what the cache holds, not on Python's allocator).
ENTRY_OVERHEAD_BYTES = 256
ARRAY_OVERHEAD_BYTES = 112
#: Inputs at least this large are hashed off the event loop (hashlib releases the GIL).
HASH_OFF_LOOP_BYTES = 1 << 20


def _frame(hasher: hashlib.blake2b, data: bytes | memoryview) -> None:
    """Length-prefixed, so ("ab", "c") and ("a", "bc") never hash alike."""
    hasher.update(struct.pack("<Q", len(data)))
    hasher.update(data)


def _element(value: object) -> bytes:
    if isinstance(value, bytes):
        return b"b" + value
    if isinstance(value, str):
        return b"s" + value.encode("utf-8", "surrogatepass")
    return b"r" + repr(value).encode()  # a BYTES tensor holds str or bytes: never reached


def _array(hasher: hashlib.blake2b, array: Array) -> None:
    _frame(hasher, array.dtype.str.encode())  # kind, size and byte order
    _frame(hasher, struct.pack(f"<{array.ndim}q", *array.shape))
    if array.dtype == object:
        for value in array.ravel():
            _frame(hasher, _element(value))
    else:
        _frame(hasher, np.ascontiguousarray(array).data.cast("B"))


def input_bytes(inputs: Mapping[str, Array]) -> int:
    """How much hashing the inputs costs, roughly (object arrays count by pointer)."""
    return sum(int(array.nbytes) for array in inputs.values())


def cache_key(model: str, version: str, load_id: int, inputs: Mapping[str, Array],
              datatypes: Mapping[str, str], outputs: Iterable[str]) -> bytes:
    """A digest of everything that decides the answer: the model version (and which load
    of it: a reloaded version is a new model), every input's name, datatype, shape and
    bytes, and which outputs were asked for. Nothing else changes the values (binary_data
    flags, priority, timeout and the request id change how or when they travel, not what
    they are), so it is left out: requests differing only there share an entry."""
    hasher = hashlib.blake2b(digest_size=32)
    for part in (model, version, str(load_id)):
        _frame(hasher, part.encode())
    names = sorted(set(outputs))
    _frame(hasher, struct.pack("<Q", len(names)))
    for name in names:
        _frame(hasher, name.encode())
    for name in sorted(inputs):
        _frame(hasher, name.encode())
        _frame(hasher, datatypes.get(name, "").encode())
        _array(hasher, inputs[name])
    return hasher.digest()


def _size(array: Array) -> int:
    size = ARRAY_OVERHEAD_BYTES + int(array.nbytes)
    if array.dtype == object:
        size += sum(len(_element(value)) + 33 for value in array.ravel())  # str/bytes headers
    return size


@dataclass(frozen=True, slots=True)
class Entry:
    """One cached answer: output name -> array (read-only copies the cache owns)."""

    outputs: Mapping[str, Array]
    nbytes: int


class ResponseCache:
    """One LRU for every model of the server, bounded by `capacity_bytes` (0: no cache).

    Event-loop only (no locks): `get` and `put` are O(1) plus the size of what they store.
    Stored arrays are private read-only copies, so a batch's output never stays alive
    through a cached row, and nobody can change an answer after it was cached.
    """

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self._entries: collections.OrderedDict[bytes, Entry] = collections.OrderedDict()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self.insertions = 0
        self.evictions = 0

    @property
    def enabled(self) -> bool:
        return self.capacity_bytes > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> Mapping[str, Array] | None:
        """The cached outputs for `key` (now the most recently used), or None."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry.outputs

    def put(self, key: bytes, outputs: Mapping[str, Array]) -> bool:
        """Store `outputs` under `key`, evicting the least recently used entries to stay
        within the bound; an answer larger than the whole cache is not stored (False)."""
        size = ENTRY_OVERHEAD_BYTES + sum(_size(a) for a in outputs.values())
        if size > self.capacity_bytes:
            return False
        old = self._entries.pop(key, None)
        if old is not None:  # two identical requests missed together: keep one answer
            self.nbytes -= old.nbytes
        while self._entries and self.nbytes + size > self.capacity_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.nbytes -= evicted.nbytes
            self.evictions += 1
        copies = {}
        for name, array in outputs.items():
            copy = np.array(array, copy=True)
            copy.flags.writeable = False
            copies[name] = copy
        self._entries[key] = Entry(copies, size)
        self.nbytes += size
        self.insertions += 1
        return True
