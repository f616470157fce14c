"""Which runs of a model go inline on the event loop: those of models measured to be tinier
than the thread hop that would carry them."""

from __future__ import annotations

#: consecutive short runs on the instance's thread before a run is tried on the loop
WINDOW = 32
#: a run on the thread is short when its CPU time is under this many times the limit: the
#: thread's time is inflated by the hand-off around it (caches, wake-ups), so it only says
#: that a try on the loop is worth it; the loop's own measurement decides
TRY_FACTOR = 4


class InlineRuns:
    """The measured exception to "never block the event loop" (README, Inline runs).

    Handing a run to the instance's thread and its answer back costs ~70 us of CPU here
    (two thread wake-ups and the loop's self-pipe), measured beside a do-nothing gRPC
    server; onnxruntime runs a tiny model in ~5 us. So a model runs on its thread until
    WINDOW runs in a row were short there; then its runs (assembly, the run, the split:
    everything the thread would do) go on the loop for as long as each takes under
    `max_us` there: the CPU time of the loop's thread (a run onnxruntime split across its
    intra-op threads could take longer in wall time; runs this small it does not split).
    One at or over it sends the model back to its thread for at least WINDOW runs. So the
    loop is never blocked by a run that was not measured short on the thread, and at most
    once by one over the limit before the model leaves.

    Thread-safety: `record` is called from instance threads and the loop; a lost update
    only shifts the decision by a run (a heuristic, never a correctness matter).
    """

    __slots__ = ("_limit_ns", "_short", "now")

    def __init__(self, max_us: int) -> None:
        self._limit_ns = max_us * 1000
        self._short = 0  # consecutive short runs on the thread
        #: whether the next run goes inline
        self.now = False

    def record(self, elapsed_ns: int, inline: bool) -> None:
        """One run's CPU time, on the loop (`inline`) or on the instance's thread."""
        if inline:
            if elapsed_ns >= self._limit_ns:
                self.now = False
                self._short = 0
        elif elapsed_ns < self._limit_ns * TRY_FACTOR:
            self._short += 1
            self.now = self._short >= WINDOW
        else:
            self._short = 0
