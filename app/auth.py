"""API keys: which key may call which API group; keys from a file (re-read live) and the env."""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from app.errors import KeysError, PermissionDenied, Unauthenticated
from app.settings import env_var

if TYPE_CHECKING:
    from app.settings import AuthSettings

log = logging.getLogger(__name__)


class ApiGroup(enum.Flag):
    """The API groups a key may use. Health (live, ready, model ready) needs no key."""

    INFERENCE = enum.auto()
    METADATA = enum.auto()
    REPOSITORY = enum.auto()
    STATISTICS = enum.auto()
    METRICS = enum.auto()


#: Group names as written in keys files (and as the REST routes' OpenAPI tags).
GROUPS: dict[str, ApiGroup] = {
    "inference": ApiGroup.INFERENCE,
    "metadata": ApiGroup.METADATA,
    "repository": ApiGroup.REPOSITORY,
    "statistics": ApiGroup.STATISTICS,
    "metrics": ApiGroup.METRICS,
}
ALL = (ApiGroup.INFERENCE | ApiGroup.METADATA | ApiGroup.REPOSITORY | ApiGroup.STATISTICS
       | ApiGroup.METRICS)
#: What a request outside every known API group needs: any valid key, whatever its groups.
ANY_KEY = ApiGroup(0)

#: RFC 6750's b64token: base64, base64url and hex keys all fit; whitespace, ';' and '#' do
#: not, so they can separate entries and start comments.
_KEY = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
MIN_KEY_LENGTH = 16


def group_names(scopes: ApiGroup) -> str:
    return ", ".join(name for name, scope in GROUPS.items() if scope & scopes)


@dataclass(frozen=True)
class KeyTable:
    """SHA-256 digests of the valid keys, each with the groups it may use (ApiGroup values:
    plain ints, as enum.Flag arithmetic costs about a microsecond an operation)."""

    entries: tuple[tuple[bytes, int], ...] = ()

    def scopes_of(self, key: bytes) -> int | None:
        """The groups `key` may use (a ApiGroup value), or None for an unknown key.

        Digests are compared, in constant time, against every entry with no early exit, so
        neither the time taken nor a key's length tells which entry (if any) matched.
        """
        digest = hashlib.sha256(key).digest()
        found = 0
        matched = False
        for entry, scopes in self.entries:
            equal = hmac.compare_digest(digest, entry)
            matched |= equal
            found |= scopes * equal
        return found if matched else None

    def __add__(self, other: KeyTable) -> KeyTable:
        return KeyTable(self.entries + other.entries)


def parse_keys(text: str, source: str) -> KeyTable:
    """Entries separated by newlines or ';': `KEY [GROUP[,GROUP...]]`; `#` starts a comment.

    A key without groups (or with `*`) may use every group. Errors name the line, never the key.
    """
    entries: list[tuple[bytes, int]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        for entry in line.split("#", 1)[0].split(";"):
            fields = entry.split()
            if not fields:
                continue
            key, groups = fields[0], ",".join(fields[1:])
            if len(key) < MIN_KEY_LENGTH or not _KEY.fullmatch(key):
                raise KeysError(
                    f"{source}, line {number}: a key must be at least {MIN_KEY_LENGTH} "
                    "characters of A-Z a-z 0-9 - . _ ~ + / (then optional '=' padding), "
                    "e.g. from `openssl rand -hex 32`")
            entries.append((hashlib.sha256(key.encode()).digest(),
                            _scopes(groups, f"{source}, line {number}").value))
    return KeyTable(tuple(entries))


def _scopes(text: str, where: str) -> ApiGroup:
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    if not names or "*" in names:
        return ALL
    scopes = ApiGroup(0)
    for name in names:
        if name not in GROUPS:
            raise KeysError(f"{where}: unknown API group '{name}' (expected "
                            f"{', '.join(GROUPS)} or *)")
        scopes |= GROUPS[name]
    return scopes


def bearer_key(authorization: bytes | None) -> bytes | None:
    """The key of an `Authorization: Bearer <key>` value (scheme case-insensitive), else None."""
    if authorization is None:
        return None
    scheme, _, key = authorization.strip().partition(b" ")
    key = key.strip()
    return key if scheme.lower() == b"bearer" and key else None


_MISSING = ("authentication required: send the header 'Authorization: Bearer <API key>' "
            "(gRPC: metadata 'authorization')")
_INVALID = "the API key is not valid (unknown, revoked or malformed)"


class Authenticator:
    """Decides whether an `Authorization` value may use an API group.

    `check` runs on the event loop and never blocks: at most every `reload_interval_s` it
    starts a look at the keys file in a worker thread, and the new keys apply once read.
    A key that is not in the table waits (a bounded time) for a read of the file that
    starts after it arrived, so a key just added works on its first request; those reads
    happen at most every `unknown_key_reload_interval_ms`, one at a time, each answering
    every request that waits for it. A keys file that cannot be read or parsed at start is
    an error; later, the last good keys stay in force and the problem is logged (once per
    problem), as they do when the file turns up empty.
    """

    def __init__(self, settings: AuthSettings) -> None:
        env = settings.keys.get_secret_value() if settings.keys is not None else ""
        self._env = parse_keys(env, env_var("auth.keys"))
        self._path = settings.keys_file
        self._interval = settings.reload_interval_s
        self._stamp: tuple[int, ...] | None = None
        self._table = self._env
        if self._path is not None:
            self._stamp, table = _load(self._path)
            self._table = self._env + table
        self._next_look = time.monotonic() + self._interval
        self._looking: asyncio.Future[None] | None = None
        self._last_error = ""
        self._lock = threading.Lock()  # one read at a time: a later read is never undone
        # Reads for unknown keys: the one requests wait for (not started yet), the one in
        # progress, and when the next may start.
        self._fresh_interval = settings.unknown_key_reload_interval_ms / 1000
        self._fresh: asyncio.Task[None] | None = None
        self._reading: asyncio.Future[None] | None = None
        self._fresh_at = 0.0
        #: (protocol, "unauthenticated" | "permission_denied") -> refused requests
        self.refusals: dict[tuple[str, str], int] = {}
        sources = [str(self._path)] if self._path is not None else []
        sources += [env_var("auth.keys")] if settings.keys is not None else []
        log.info("authentication on: %d API keys from %s", len(self._table.entries),
                 " and ".join(sources))
        if not self._table.entries:
            log.warning("no API keys yet: every request but health checks is refused")

    async def check(self, authorization: bytes | None, needed: ApiGroup,
                    protocol: str = "http") -> None:
        """Return if the bearer key in `authorization` may use every group in `needed`
        (ANY_KEY: any valid key); raise Unauthenticated or PermissionDenied otherwise, and
        count the refusal (a metric, not a log line: a flood must not fill the logs).
        Suspends only for a key that is not in the table (see the class)."""
        try:
            self._maybe_reload()
            bearer = bearer_key(authorization)
            if bearer is None:
                raise Unauthenticated(_MISSING if authorization is None else _INVALID)
            scopes = self._table.scopes_of(bearer)
            if scopes is None and self._path is not None:
                await self._fresh_read()
                scopes = self._table.scopes_of(bearer)
            if scopes is None:
                raise Unauthenticated(_INVALID)
            self._permit(scopes, needed)
        except (Unauthenticated, PermissionDenied) as err:
            key = (protocol, err.code.value)
            self.refusals[key] = self.refusals.get(key, 0) + 1
            raise

    @staticmethod
    def _permit(scopes: int, needed: ApiGroup) -> None:
        if needed.value & ~scopes:
            raise PermissionDenied(f"this API key may not use the '{group_names(needed)}' API "
                                   f"group (it may use: {group_names(ApiGroup(scopes)) or 'none'})")

    def _maybe_reload(self) -> None:
        if self._path is None:
            return
        now = time.monotonic()
        if now < self._next_look or (self._looking is not None and not self._looking.done()):
            return
        self._next_look = now + self._interval
        self._looking = asyncio.get_running_loop().run_in_executor(None, self._reload)

    async def _fresh_read(self) -> None:
        """Wait for a read of the keys file that starts after now; give up after the
        interval and a second (a hung file system must not hang requests)."""
        if self._fresh is None:
            self._fresh = asyncio.get_running_loop().create_task(self._read_fresh())
        try:
            await asyncio.wait_for(asyncio.shield(self._fresh), self._fresh_interval + 1.0)
        except asyncio.TimeoutError:  # not TimeoutError before Python 3.11
            log.warning("the API keys file %s is slow to read; refusing a key not yet known",
                        self._path)
        except Exception:  # the key is refused (401), never a 500
            log.exception("reading the API keys file %s failed", self._path)

    async def _read_fresh(self) -> None:
        loop = asyncio.get_running_loop()
        if self._reading is not None and not self._reading.done():
            await asyncio.wait([self._reading])  # one read at a time
        delay = self._fresh_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)  # the rate limit, not a synchronisation
        self._fresh = None  # requests from now on need a read that starts after them
        self._fresh_at = time.monotonic() + self._fresh_interval
        self._reading = loop.run_in_executor(None, self._reload, True)
        await self._reading

    def _reload(self, always: bool = False) -> None:
        """In a worker thread: re-read the file if its identity or modification time changed
        (or `always`: a change within the clock's granularity keeps the stamp)."""
        with self._lock:
            self._reload_locked(always)

    def _reload_locked(self, always: bool) -> None:
        path = self._path
        if path is None:
            return
        try:
            if not always and _stamp(path) == self._stamp:
                return
            stamp, table = _load(path)
            if not table.entries:
                # Editors and shell redirections truncate before they write: an empty file
                # is far more often half-written than meant. Revoke by writing a new key.
                raise KeysError(f"the API keys file {path} holds no keys")
        except (OSError, KeysError) as err:
            if str(err) != self._last_error:  # once per problem, not once a second
                self._last_error = str(err)
                log.error("keeping the previous API keys: %s", err)
            return
        self._last_error = ""
        fresh = self._env + table
        if stamp == self._stamp and fresh == self._table:
            return  # read for an unknown key: nothing changed
        self._stamp, self._table = stamp, fresh  # readers see old or new, whole
        log.info("API keys reloaded from %s: %d keys", self._path, len(table.entries))


def _stamp(path: Path) -> tuple[int, ...]:
    """Changes whenever the file is rewritten or, as Kubernetes does, replaced by a new one."""
    status = os.stat(path)
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns


def _load(path: Path) -> tuple[tuple[int, ...], KeyTable]:
    """The file's stamp (taken first: a change while reading is seen next time) and keys."""
    try:
        stamp = _stamp(path)
        data = path.read_bytes()
    except OSError as err:
        raise KeysError(f"cannot read the API keys file {path}: {err.strerror}") from err
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise KeysError(f"the API keys file {path} is not UTF-8 text") from None
    return stamp, parse_keys(text, str(path))
