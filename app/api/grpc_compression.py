"""gRPC response compression: Triton's level (or an algorithm), small answers left as they are."""

from __future__ import annotations

from typing import Any

from app.settings import GrpcSettings

#: Triton's --grpc-infer-response-compression-level -> gRPC core's grpc_compression_level;
#: core then picks the algorithm from those the client accepts (low gzip, high deflate).
LEVELS = {"low": 1, "medium": 2, "high": 3}


def compression_options(settings: GrpcSettings) -> list[tuple[str, int]]:
    """The channel argument of the level, when one is set (requests a client compressed
    are accepted whatever it is: gRPC core undoes grpc-encoding gzip and deflate)."""
    level = LEVELS.get(settings.response_compression_level)
    return [] if level is None else [("grpc.default_compression_level", level)]


class SmallAnswers:
    """Leaves answers under response_compression_min_bytes uncompressed (when compression is
    on at all), where compressing costs more than it saves."""

    def __init__(self, settings: GrpcSettings) -> None:
        compressing = (settings.response_compression != "none"
                       or settings.response_compression_level != "none")
        self._min_bytes = settings.response_compression_min_bytes if compressing else 0

    def __call__(self, context: Any, size: int) -> None:
        if size < self._min_bytes:
            context.disable_next_message_compression()
