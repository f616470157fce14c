"""System shared memory: POSIX shm objects under /dev/shm, registered by name, leased per use."""

from __future__ import annotations

import contextlib
import mmap
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from app.settings import env_var
from app.shm.errors import SharedMemoryError, UnknownRegion

#: Longest region name and key accepted (NAME_MAX for the key's file name).
MAX_NAME_LENGTH = 255


def shown(text: str) -> str:
    """A client's string as a message repeats it (codecs.checks.shown, which app.codecs
    builds on this package and so cannot lend)."""
    return repr(text[:40]) + ("..." if len(text) > 40 else "")


@dataclass(frozen=True, slots=True)
class RegionStatus:
    """One registered region, as the status endpoints report it."""

    name: str
    key: str
    offset: int
    byte_size: int


class HostSpan:
    """Bytes of a mapped region: read in place (no copy), written by one copy."""

    __slots__ = ("_view", "nbytes")

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self.nbytes = view.nbytes

    def read(self) -> memoryview:
        return self._view.toreadonly()

    def write(self, data: memoryview) -> None:
        self._view[:data.nbytes] = data


class SystemRegion:
    """One registered region: its mapping, and the leases of the requests using it.

    Unregistering retires the region (no new lease); the mapping is closed when the last
    lease ends, so a request in flight reads and writes memory that is still mapped.
    """

    __slots__ = ("_leases", "_map", "_retired", "status")

    def __init__(self, status: RegionStatus, mapping: mmap.mmap) -> None:
        self.status = status
        self._map = mapping
        self._leases = 0
        self._retired = False

    def span(self, offset: int, byte_size: int, where: str) -> HostSpan:
        """`view` as ShmUse reads and writes it (as a CUDA region's DeviceSpan)."""
        return HostSpan(self.view(offset, byte_size, where))

    def view(self, offset: int, byte_size: int, where: str) -> memoryview:
        """`byte_size` bytes at `offset` within the region (refused past its end)."""
        status = self.status
        if offset < 0 or byte_size < 0:
            raise SharedMemoryError(f"{where}: shared_memory_offset and "
                                    "shared_memory_byte_size must not be negative")
        if offset + byte_size > status.byte_size:
            raise SharedMemoryError(
                f"{where}: shared_memory_offset {offset} + shared_memory_byte_size "
                f"{byte_size} is past the end of shared memory region '{status.name}' "
                f"({status.byte_size} bytes)")
        start = status.offset + offset
        return memoryview(self._map)[start:start + byte_size]

    def _close(self) -> None:
        # Arrays made from it (zero-copy inputs) may still exist: the mapping then goes with
        # the last of them, when the garbage collector frees it.
        with contextlib.suppress(BufferError):
            self._map.close()


class SystemSharedMemory:
    """The registry of system shared-memory regions that both transports share."""

    def __init__(self, directory: Path = Path("/dev/shm"),  # nosec B108 # POSIX shm's home
                 max_regions: int = 1024) -> None:
        self._directory = directory
        self._max_regions = max_regions
        self._regions: dict[str, SystemRegion] = {}
        self._lock = threading.Lock()

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        """Map `byte_size` bytes at `offset` of shm object `key` as region `name`."""
        _check_name(name)
        if offset < 0 or byte_size < 0:
            raise SharedMemoryError(f"shared memory region '{name}': offset and byte_size "
                                    "must not be negative")
        with self._lock:
            if name in self._regions:
                raise SharedMemoryError(f"shared memory region '{name}' is already "
                                        "registered; unregister it first")
            if len(self._regions) >= self._max_regions:
                raise SharedMemoryError(
                    f"{self._max_regions} shared memory regions are registered, the most "
                    f"allowed (setting {env_var('shared_memory.max_regions')})")
            mapping = _map(self._directory, name, key, offset, byte_size)
            self._regions[name] = SystemRegion(RegionStatus(name, key, offset, byte_size),
                                               mapping)

    def unregister(self, name: str | None) -> None:
        """Unregister region `name`, or every region when None; in-flight users finish."""
        with self._lock:
            if name is None:
                regions = list(self._regions.values())
                self._regions.clear()
            else:
                region = self._regions.pop(name, None)
                if region is None:
                    raise UnknownRegion(f"no shared memory region {shown(name)} is registered")
                regions = [region]
            for region in regions:
                region._retired = True
                if region._leases == 0:
                    region._close()

    def status(self, name: str | None) -> list[RegionStatus]:
        """Every region's status, or region `name`'s."""
        with self._lock:
            if name is None:
                return [r.status for r in self._regions.values()]
            return [self._get(name).status]

    def acquire(self, name: str) -> SystemRegion:
        """Lease region `name` for one request (`release` it after)."""
        with self._lock:
            region = self._get(name)
            region._leases += 1
            return region

    def release(self, region: SystemRegion) -> None:
        with self._lock:
            region._leases -= 1
            if region._leases == 0 and region._retired:
                region._close()

    def _get(self, name: str) -> SystemRegion:
        region = self._regions.get(name)
        if region is None:
            raise UnknownRegion(f"no shared memory region {shown(name)} is registered "
                                "(register it first: /v2/systemsharedmemory/region/<name>/"
                                "register)")
        return region


def _check_name(name: str) -> None:
    if not name or len(name) > MAX_NAME_LENGTH:
        raise SharedMemoryError(f"a shared memory region's name must have 1 to "
                                f"{MAX_NAME_LENGTH} characters, got {shown(name)}")


def key_path(directory: Path, key: str) -> Path:
    """The file of POSIX shm key `key` ('/name' or 'name'): a plain name, never a path."""
    base = key[1:] if key.startswith("/") else key
    if not base or len(base) > MAX_NAME_LENGTH or "/" in base or "\0" in base \
            or base in (".", ".."):
        raise SharedMemoryError(f"shared memory key {shown(key)} is not a POSIX shared "
                                "memory name ('/name': one leading slash, no other)")
    return directory / base


def _map(directory: Path, name: str, key: str, offset: int, byte_size: int) -> mmap.mmap:
    """The whole shm object, mapped read-write, once its size is known to hold the region."""
    path = key_path(directory, key)
    where = f"shared memory region '{name}'"
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SharedMemoryError(f"{where}: shared memory key {shown(key)} does not exist "
                                f"(no {path}); create it (shm_open) before registering") \
            from None
    except OSError as err:  # a symlink (ELOOP), no permission, ...
        raise SharedMemoryError(f"{where}: cannot open shared memory key {shown(key)}: "
                                f"{err.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SharedMemoryError(f"{where}: shared memory key {shown(key)} is not a "
                                    "shared memory object")
        if offset + byte_size > info.st_size or info.st_size == 0:
            raise SharedMemoryError(
                f"{where}: offset {offset} + byte_size {byte_size} is past the end of shared "
                f"memory key {shown(key)} ({info.st_size} bytes)")
        return mmap.mmap(fd, info.st_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)
