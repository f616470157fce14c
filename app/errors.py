"""Every error onnx-serve raises, in one tree; a ServingError carries one ErrorCode.

The tree (tests/unit/test_error_tree.py checks that it draws every exception class defined
under app/, each under its base):

    OnnxServeError
    ├── ServingError            what a request gets; `code` -> HTTP and gRPC (api/status.py)
    │   ├── ClientRefusal       the request is refused as it stands (4xx; Unsupported: 501)
    │   │   ├── InvalidInput
    │   │   │   └── SharedMemoryError       (this and the other two in app/shm/errors.py)
    │   │   │       └── UnknownRegion
    │   │   ├── ModelNotFound
    │   │   ├── RequestTooLarge
    │   │   ├── Unsupported
    │   │   ├── Unauthenticated
    │   │   ├── PermissionDenied
    │   │   ├── UnsupportedEncoding
    │   │   └── SequenceConflict
    │   ├── Unavailable         the same request may succeed later
    │   │   ├── ModelNotReady
    │   │   ├── ShuttingDown
    │   │   ├── Overloaded
    │   │   ├── DeadlineExceeded
    │   │   └── SharedMemoryUnavailable (FAILED_PRECONDITION: CUDA shared memory, no GPU)
    │   └── InternalError       the server failed a valid request (500 / INTERNAL)
    │       └── InferenceFailed
    ├── LoadFailure             why a model version is UNAVAILABLE (its state's reason)
    │   ├── UnsupportedModel
    │   ├── ConfigError
    │   ├── TritonConfigError   (also a ValueError)
    │   ├── LoadFailed
    │   ├── PathRefused
    │   ├── NotOnnx             (also a ValueError)
    │   ├── GraphError          (also a ValueError)
    │   ├── ObjectStoreError    (also an OSError: to the watcher, "the repository is away")
    │   └── CredentialError     (also an OSError, for the same reason)
    ├── StartupFailure          the server cannot start (the CLI exits with the message)
    │   ├── KeysError           (also a ValueError)
    │   ├── TritonFlagError     (also a ValueError)
    │   ├── BindError
    │   └── StartupError
    └── WireError               (also a ValueError) a gRPC message's framing is broken;
                                protobuf's own parser then words the client's error

models/ort_errors.py maps onnxruntime's exceptions onto this tree.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.Enum):
    """What went wrong, independent of HTTP or gRPC (api/status.py maps each to both)."""

    INVALID_INPUT = "invalid_input"
    NOT_FOUND = "not_found"
    UNAVAILABLE = "unavailable"
    OVERLOADED = "overloaded"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    TOO_LARGE = "too_large"
    UNSUPPORTED = "unsupported"
    UNSUPPORTED_MEDIA = "unsupported_media"
    UNAUTHENTICATED = "unauthenticated"
    PERMISSION_DENIED = "permission_denied"
    CONFLICT = "conflict"
    #: the server cannot do this in its present state (CUDA shared memory without a GPU)
    FAILED_PRECONDITION = "failed_precondition"
    INTERNAL = "internal"


class OnnxServeError(Exception):
    """The root: every exception class onnx-serve defines derives from it."""


# ---- what a request gets ---------------------------------------------------------------
class ServingError(OnnxServeError):
    """Base of every error the server reports to a client; `str(err)` is the client's message."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ClientRefusal(ServingError):
    """The request is refused as it stands: the client must change it (a 4xx)."""

    code = ErrorCode.INVALID_INPUT  # each subclass states its own (tests/unit/test_status.py)


class Unavailable(ServingError):
    """The server cannot serve the request now; the same request may succeed later."""

    code = ErrorCode.UNAVAILABLE  # each subclass states its own


class InternalError(ServingError):
    """The server failed while handling a valid request (500 / INTERNAL)."""

    code = ErrorCode.INTERNAL


class InvalidInput(ClientRefusal):
    """The request is malformed or does not match the model's signature."""

    code = ErrorCode.INVALID_INPUT


class ModelNotFound(ClientRefusal):
    """No such model, or no such version of it."""

    code = ErrorCode.NOT_FOUND


class RequestTooLarge(ClientRefusal):
    """The request body or message exceeds a configured limit."""

    code = ErrorCode.TOO_LARGE


class Unsupported(ClientRefusal):
    """The request asks for a feature this server does not implement."""

    code = ErrorCode.UNSUPPORTED


class Unauthenticated(ClientRefusal):
    """No API key, or one that is not valid (authentication is on)."""

    code = ErrorCode.UNAUTHENTICATED


class PermissionDenied(ClientRefusal):
    """A valid API key that may not use the API group the request belongs to."""

    code = ErrorCode.PERMISSION_DENIED


class UnsupportedEncoding(ClientRefusal):
    """The request body is encoded in a way the server cannot read (Content-Encoding)."""

    code = ErrorCode.UNSUPPORTED_MEDIA


class SequenceConflict(ClientRefusal):
    """A sequence_start for a sequence that is already active."""

    code = ErrorCode.CONFLICT


class ModelNotReady(Unavailable):
    """The model exists but cannot serve now (loading, failed, or the server is draining)."""

    code = ErrorCode.UNAVAILABLE


class ShuttingDown(Unavailable):
    """The server is stopping and its grace period for in-flight requests has run out."""

    code = ErrorCode.UNAVAILABLE


class Overloaded(Unavailable):
    """The queue is full; the client should retry later."""

    code = ErrorCode.OVERLOADED


class DeadlineExceeded(Unavailable):
    """The request's deadline passed before it could run."""

    code = ErrorCode.DEADLINE_EXCEEDED


class InferenceFailed(InternalError):
    """The model raised while running a valid request."""

    code = ErrorCode.INTERNAL


# ---- why a version is UNAVAILABLE ----------------------------------------------------------
class LoadFailure(OnnxServeError):
    """A model version cannot be served; the message becomes its state's reason."""


class UnsupportedModel(LoadFailure):
    """The model declares something the server cannot serve (a reason for UNAVAILABLE)."""


class ConfigError(LoadFailure):
    """A config file that cannot be read or does not validate; the message names the key."""


class TritonConfigError(LoadFailure, ValueError):
    """The message parsed but asks for something we do not do; the text names the field."""


class LoadFailed(LoadFailure):
    """A version that cannot be loaded; the message is for clients (no absolute paths)."""


class PathRefused(LoadFailure):
    """A file a model would use leads outside the repository; the message is for clients."""


class NotOnnx(LoadFailure, ValueError):
    """The file is not a well-formed ONNX ModelProto (truncated, or another format)."""


class GraphError(LoadFailure, ValueError):
    """The steps do not form a valid pipeline; the message names the step and the tensor."""


class ObjectStoreError(LoadFailure, OSError):
    """The bucket cannot be read (missing, access denied, unreachable): an OSError, so the
    watcher and the index treat it as "the repository is away", never "every model left"."""


class CredentialError(LoadFailure, OSError):
    """The credentials named for a bucket cannot be read: an OSError, as the bucket is away."""


# ---- why the server cannot start -----------------------------------------------------------
class StartupFailure(OnnxServeError):
    """The server cannot start; the CLI prints the message and exits."""


class KeysError(StartupFailure, ValueError):
    """The keys file or ONNX_SERVE_AUTH__KEYS cannot be used (the message never holds a key)."""


class TritonFlagError(StartupFailure, ValueError):
    """A Triton flag or value onnx-serve does not support (the CLI exits 2 with it)."""


class BindError(StartupFailure):
    """A listener could not bind its address (the port is taken, or the host is not local)."""


class StartupError(StartupFailure):
    """The server cannot start or stopped itself while starting (a missing extra, or
    exit_on_error and a model failed)."""


# ---- internal signals ----------------------------------------------------------------------
class WireError(OnnxServeError, ValueError):
    """The bytes are not a well-formed message (protobuf's own parser then says why)."""
