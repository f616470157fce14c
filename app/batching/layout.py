"""How requests become one batch and back: shape buckets, concatenation, padding, splitting."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from app.types import Array


@dataclass(frozen=True, slots=True)
class Padding:
    """One input padded to the longest request in the batch along `axes` (all >= 1)."""

    axes: tuple[int, ...]
    value: float = 0.0
    length_input: str | None = None  # model input that receives each row's original length
    length_dtype: str = "int64"
    length_rank: int = 1  # [B] or [B, 1]
    slice_outputs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BatchLayout:
    """The model version's batching geometry; pure numpy, safe to call from worker threads.

    Inputs without padding batch only with requests of the same shape (the bucket); padded
    inputs batch across lengths and are filled with `value` up to the longest one.
    """

    padding: Mapping[str, Padding] = field(default_factory=dict)

    def bucket(self, feed: Mapping[str, Array]) -> Hashable:
        """Requests with equal buckets may share a batch."""
        if not self.padding:
            if len(feed) == 1:
                return next(iter(feed.values())).shape[1:]
            return tuple(sorted((name, array.shape[1:]) for name, array in feed.items()))
        key = []
        for name, array in feed.items():
            shape = array.shape[1:]
            pad = self.padding.get(name)
            if pad is not None:
                shape = tuple(-1 if axis + 1 in pad.axes else d for axis, d in enumerate(shape))
            key.append((name, shape))
        return tuple(sorted(key))

    def assemble(self, feeds: Sequence[Mapping[str, Array]]) -> dict[str, Array]:
        """One feed holding every request's rows, in order (padded where configured)."""
        if len(feeds) == 1 and not self.padding:
            return dict(feeds[0])
        batch: dict[str, Array] = {}
        for name in feeds[0]:
            arrays = [feed[name] for feed in feeds]
            pad = self.padding.get(name)
            if pad is None:
                batch[name] = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
                continue
            batch[name] = _pad_concatenate(arrays, pad)
            if pad.length_input is not None:
                batch[pad.length_input] = _lengths(arrays, pad)
        return batch

    def split(self, outputs: Sequence[Array], names: Sequence[str],
              feeds: Sequence[Mapping[str, Array]]) -> list[list[Array]]:
        """Each request's rows of each output (views, no copies), cut back to its own
        lengths where an output is listed in `slice_outputs`."""
        cuts = self._cuts(names)
        results: list[list[Array]] = [[] for _ in feeds]
        start = 0
        for request, feed in enumerate(feeds):
            rows = next(iter(feed.values())).shape[0]
            for output_name, output in zip(names, outputs, strict=True):
                part = output[start:start + rows]
                source = cuts.get(output_name)
                if source is not None:
                    input_name, pad = source
                    lengths = feed[input_name].shape
                    cut = [slice(0, lengths[axis]) if axis in pad.axes else slice(None)
                           for axis in range(1, part.ndim)]
                    part = part[tuple([slice(None), *cut])]
                results[request].append(part)
            start += rows
        return results

    def _cuts(self, names: Sequence[str]) -> dict[str, tuple[str, Padding]]:
        return {output: (input_name, pad) for input_name, pad in self.padding.items()
                for output in pad.slice_outputs if output in names}


def _pad_concatenate(arrays: Sequence[Array], pad: Padding) -> Array:
    longest = [max(a.shape[axis] for a in arrays) for axis in range(arrays[0].ndim)]
    rows = sum(a.shape[0] for a in arrays)
    first = arrays[0]
    fill = pad.value if first.dtype != object else ""
    batch = np.full([rows, *longest[1:]], fill, dtype=first.dtype)
    start = 0
    for array in arrays:
        region = [slice(0, d) for d in array.shape[1:]]
        batch[tuple([slice(start, start + array.shape[0]), *region])] = array
        start += array.shape[0]
    return batch


def _lengths(arrays: Sequence[Array], pad: Padding) -> Array:
    axis = pad.axes[0]
    lengths = np.concatenate([np.full(a.shape[0], a.shape[axis]) for a in arrays])
    lengths = lengths.astype(pad.length_dtype)
    return lengths.reshape(-1, 1) if pad.length_rank == 2 else lengths
