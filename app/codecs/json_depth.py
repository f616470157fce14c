"""How deeply a JSON text nests, measured on the raw bytes before anything is parsed."""

from __future__ import annotations

import numpy as np

from app.errors import RequestTooLarge
from app.settings import env_var

#: Every byte except the four brackets and the quote: deleted before counting.
_NOT_STRUCTURAL = bytes(b for b in range(256) if b not in b'[]{}"')
#: Structural bytes examined per step, so the temporary arrays stay small for any body.
_CHUNK = 1 << 20


def nesting_depth(raw: bytes | memoryview, chunk: int = _CHUNK) -> int:
    """The deepest nesting of arrays and objects in `raw` (0 for a scalar).

    Exact for valid JSON; for invalid JSON it is some number, and the parser refuses the
    text anyway. Runs at C speed (bytes.translate, then numpy over what remains, in chunks),
    so a 64 MiB body costs tens of milliseconds: cheap enough to run before the parser,
    which would otherwise build the deep structure first.
    """
    text = bytes(raw)
    if b"\\" in text:
        # Escapes first, in JSON's left-to-right order: an escaped backslash cannot escape
        # the quote after it. Other escapes (\n, \u...) keep no structural byte.
        text = text.replace(b"\\\\", b"").replace(b'\\"', b"")
    structural = text.translate(None, _NOT_STRUCTURAL)
    in_string = False
    depth = deepest = 0
    for start in range(0, len(structural), chunk):
        codes = np.frombuffer(structural, np.uint8, min(chunk, len(structural) - start), start)
        quote = codes == ord('"')
        # A bracket is inside a string when an odd number of quotes precede it.
        inside = np.logical_xor.accumulate(quote) ^ in_string
        in_string = bool(inside[-1])
        brackets = codes[~inside & ~quote]
        if brackets.size:
            steps = np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1)
            levels = np.cumsum(steps, dtype=np.int64) + depth
            deepest = max(deepest, int(levels.max()))
            depth = int(levels[-1])
    return deepest


def check_depth(raw: bytes | memoryview, max_depth: int) -> None:
    """Refuse a body nested deeper than `max_depth` (Settings.http.max_json_depth)."""
    text = bytes(raw)
    if _openers(text) <= max_depth:
        return  # too few brackets to nest that deep: the common case, at memory speed
    depth = nesting_depth(text)
    if depth > max_depth:
        raise RequestTooLarge(
            f"the JSON body nests {depth} levels deep, more than the limit of {max_depth} "
            f"(setting {env_var('http.max_json_depth')})"
        )


def _openers(text: bytes) -> int:
    """How many '[' and '{' bytes `text` holds; numpy counts large bodies ~4x faster than
    two bytes.count scans (13 vs 51 us for a 90 KB image request)."""
    if len(text) < 4096:
        return text.count(b"[") + text.count(b"{")
    codes = np.frombuffer(text, np.uint8)
    return int(np.count_nonzero((codes == ord("[")) | (codes == ord("{"))))
