"""gRPC's part of the drain: the calls the server holds (in our handlers, in gRPC's core)."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import time
from typing import Any, Protocol

import grpc

log = logging.getLogger(__name__)


class GrpcCalls:
    """The calls in our handlers, counted two ways: `inside` while a handler runs, `active`
    until gRPC has sent the call's status too; and (`in_core`) the calls gRPC's core holds
    for this server, counted from the moment a call's stream opens, so calls no handler has
    taken yet too.

    The drain needs the difference. grpc.aio takes calls from the core one at a time; under
    load the core queues the rest, and its shutdown cancels those (CANCELLED, though they
    arrived before it began) and can lose one being handed over (it hangs, then UNAVAILABLE).
    So the server begins gRPC's shutdown only once every call the core holds is inside a
    handler of ours (`settled`). After that, `in_core` no longer falls to 0 (the calls the shutdown
    refused stay counted): `active` says when the drain is over.

    The core's count comes from channelz, which gRPC keeps by default; through grpcio's
    private `_cython.cygrpc` module, as the grpcio-channelz package does. Without it
    (`in_core` None), the drain goes by our own count only.
    """

    def __init__(self, channelz_id: int | None) -> None:
        self.inside = 0
        self.active = 0
        self.finished = 0  # calls whose status has been sent, ever
        self._channelz_id = channelz_id

    def enter(self, context: Any) -> None:
        """A handler begins (it decrements `inside` when it ends); the call counts as
        `active` until gRPC has sent its status."""
        self.inside += 1
        self.active += 1
        context.add_done_callback(self._finished)

    def _finished(self, _: Any) -> None:
        self.active -= 1
        self.finished += 1

    def in_core(self) -> int | None:
        """Calls the core holds: started and not yet finished; None when unknown."""
        if self._channelz_id is None:
            return None
        try:
            data = json.loads(_cygrpc().channelz_get_server(self._channelz_id))["server"]
        except (ValueError, KeyError, AttributeError, TypeError):  # gone, or grpcio changed
            return None
        counts = data.get("data", {})
        return (int(counts.get("callsStarted", 0)) - int(counts.get("callsSucceeded", 0))
                - int(counts.get("callsFailed", 0)))

    def settled(self) -> bool:
        """Whether every call the core holds is inside a handler of ours, and none has
        left one without its status being sent yet. (The core also counts calls answered
        but not yet finished, so this errs on the side of waiting.)"""
        if self.active != self.inside:
            return False
        in_core = self.in_core()
        return in_core is None or in_core <= self.inside


#: How often the drain looks again at the calls in flight: neither gRPC nor uvicorn tells
#: when a call or a connection ends (uvicorn's own shutdown looks every 100 ms).
DRAIN_POLL_S = 0.005


class IdleStreams(Protocol):
    def end_idle_streams(self) -> None:
        """End the streams waiting for their client's next request."""


class GrpcFrontend:
    """The gRPC server, and its part of the drain (GrpcCalls says why it waits)."""

    def __init__(self, server: grpc.aio.Server, inference: IdleStreams,
                 calls: GrpcCalls) -> None:
        self.server = server
        self.inference = inference
        self.calls = calls
        self._stopping: asyncio.Task[None] | None = None

    async def stop_accepting(self, deadline: float, hurry: asyncio.Event) -> None:
        """Begin gRPC's shutdown: the listener closes and clients get a GOAWAY, so they send
        no new calls here; calls in flight go on, idle ModelStreamInfer streams end."""
        self.inference.end_idle_streams()
        begun = asyncio.Event()
        self._stopping = asyncio.create_task(self._shutdown(deadline, hurry, begun),
                                             name="grpc-shutdown")
        await begun.wait()
        self.inference.end_idle_streams()  # streams opened meanwhile

    async def _shutdown(self, deadline: float, hurry: asyncio.Event,
                        begun: asyncio.Event) -> None:
        """The shutdown cancels every call the core holds that no handler has taken yet
        (GrpcCalls), and those that reach it before its GOAWAY reaches their
        client. So it begins at a quiet moment: every call is inside a handler, twice in a
        row DRAIN_POLL_S apart, and none was answered in between (a client just answered
        may be sending its next call). Calls are served meanwhile; `deadline` or `hurry`
        end the wait. The last look and the shutdown's start happen in one step, so that
        no call can slip in between; `close` cuts what remains (the long grace is only a
        bound)."""
        last: int | None = None
        while True:  # polled: nothing tells when calls arrive or end
            mark = self.calls.finished if self.calls.settled() else None
            if (mark is not None and mark == last) or time.monotonic() >= deadline \
                    or hurry.is_set():
                break
            last = mark
            await asyncio.sleep(DRAIN_POLL_S)
        begun.set()
        await self.server.stop(3600)  # runs up to the core's shutdown call before it yields

    def busy(self) -> bool:
        """Whether a call is still in flight (once `stop_accepting` has returned, every
        call is in a handler of ours)."""
        return self.calls.active > 0

    async def close(self) -> None:
        """Close every connection now. Called once no call is in flight: gRPC's own shutdown
        would wait for each client to acknowledge its GOAWAY, up to 20 s for one that never
        does (an idle TCP connection)."""
        await self.server.stop(0)
        if self._stopping is not None:
            await self._stopping


def channelz_ids() -> set[int] | None:
    """The channelz ids of the process's gRPC servers (None when channelz is unavailable)."""
    ids: set[int] = set()
    start = 0
    try:
        while True:
            page = json.loads(_cygrpc().channelz_get_servers(start))
            found = [int(s["ref"]["serverId"]) for s in page.get("server", [])]
            ids.update(found)
            if page.get("end", True) or not found:
                return ids
            start = max(found) + 1
    except (ValueError, KeyError, AttributeError, TypeError, ImportError):
        return None


def new_channelz_id(before: set[int] | None) -> int | None:
    """The id of the one server created since `channelz_ids()` gave `before`; None when
    that is not exactly one (servers created meanwhile on other threads) or unknown."""
    after = channelz_ids()
    new = after - before if after is not None and before is not None else set()
    if len(new) != 1:
        log.debug("no channelz id for the gRPC server; the drain counts its own calls only")
        return None
    return new.pop()


def _cygrpc() -> Any:
    return importlib.import_module("grpc._cython.cygrpc")
