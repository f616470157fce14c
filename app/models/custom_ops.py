"""Custom operators: Triton's model_operations libraries (inside the model's folder only) and
onnxruntime-extensions' operators (the `extensions` extra), registered on the session options.

Which custom domains a model needs is read from its own opset imports (onnx_file.py): ONNX
requires every operator domain a graph uses to be imported there, so a model that needs
onnxruntime-extensions is told apart before onnxruntime is asked, and refused by name when
the package is missing or switched off (rather than with onnxruntime's "not a registered
function/op" after a failed load).
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort

from app.errors import UnsupportedModel
from app.models.onnx_file import OnnxHeader
from app.repository.paths import VersionFiles, leads_outside
from app.settings import env_var

log = logging.getLogger(__name__)

#: Operator domains onnxruntime implements itself (onnx's, its contrib ops, its internal
#: layout and training domains); any other domain in a model is a custom one.
BUILTIN_DOMAINS = frozenset({
    "ai.onnx", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview.training",
    "com.microsoft", "com.microsoft.nchwc", "com.microsoft.experimental",
    "com.ms.internal.nhwc", "com.microsoft.dml", "org.pytorch.aten",
})
#: The domains onnxruntime-extensions' library registers (its default_opset_domain() first).
EXTENSIONS_DOMAINS = ("ai.onnx.contrib", "com.microsoft.extensions")
EXTENSIONS_PACKAGE = "onnxruntime_extensions"
_LIBRARY = "_extensions_pydll"  # the operator library inside the package
EXTRA = "pip install 'onnx-serve[extensions]'"
SETTING = "repository.onnxruntime_extensions"
#: Who provides a custom domain, as inspect and refusals say it.
BY_EXTENSIONS, BY_LIBRARIES, BY_NOBODY = "onnxruntime-extensions", "model_operations", "unknown"


def custom_domains(header: OnnxHeader) -> list[str]:
    """The operator domains the model imports that onnxruntime does not implement itself."""
    return sorted(domain for domain in header.opsets if domain not in BUILTIN_DOMAINS)


@functools.cache
def extensions_library() -> Path | None:
    """onnxruntime-extensions' operator library, or None when the package is not installed.

    Found without importing the package: its import sets PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION
    =python in os.environ (onnxruntime_extensions/cvt.py), which every process started later
    would inherit, and it pulls in onnx. The library is the package's `_extensions_pydll`
    extension module (what its own get_library_path() returns)."""
    try:
        spec = importlib.util.find_spec(EXTENSIONS_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            library = Path(folder) / f"{_LIBRARY}{suffix}"
            if library.is_file():
                return library
    return None


def providers(header: OnnxHeader, libraries: Sequence[str],
              extensions: bool) -> dict[str, str]:
    """domain -> who provides it: the model's own libraries when it lists any (they then
    answer for every custom domain), else onnxruntime-extensions for its domains when it is
    installed and `extensions` is on, else nobody."""
    found: dict[str, str] = {}
    for domain in custom_domains(header):
        if libraries:
            found[domain] = BY_LIBRARIES
        elif domain in EXTENSIONS_DOMAINS and extensions and extensions_library() is not None:
            found[domain] = BY_EXTENSIONS
        else:
            found[domain] = BY_NOBODY
    return found


def register(options: ort.SessionOptions, header: OnnxHeader | None, libraries: Sequence[str],
             files: VersionFiles, extensions: bool) -> None:
    """Register what the model needs on `options`; refuse a model whose onnxruntime-extensions
    domains nobody provides. Other unknown domains are left for onnxruntime to judge."""
    for path in library_paths(libraries, files):
        options.register_custom_ops_library(str(path))
    if header is None:  # unreadable: onnxruntime's own refusal follows
        return
    found = providers(header, libraries, extensions)
    wanted = [d for d, who in found.items() if who == BY_NOBODY and d in EXTENSIONS_DOMAINS]
    if wanted:
        raise UnsupportedModel(_missing_extensions(wanted, extensions))
    library = extensions_library()
    if BY_EXTENSIONS in found.values() and library is not None:  # providers() checked both
        options.register_custom_ops_library(str(library))


def _missing_extensions(domains: Sequence[str], extensions: bool) -> str:
    named = ", ".join(f"'{d}'" for d in domains)
    if not extensions:
        why = f"which this server does not register ({env_var(SETTING)}=false)"
    else:
        why = f"which is not installed ({EXTRA})"
    return (f"the model uses operators of domain {named}, from onnxruntime-extensions, "
            f"{why}")


def library_paths(libraries: Sequence[str], files: VersionFiles) -> list[Path]:
    """model_operations.op_library_filename entries -> files inside the model's folder.

    The config schema already refused absolute paths and '..'; here a link that leads out
    of the folder, and a file that is not there, refuse the version."""
    folder = files.folder if files.single else files.folder.parent
    paths = []
    for name in libraries:
        path = folder / name
        if leads_outside(path, folder):
            raise UnsupportedModel(f"model_operations library '{name}' links outside the "
                                   "model's folder")
        if not path.is_file():
            raise UnsupportedModel(f"model_operations library '{name}' not found in the "
                                   "model's folder")
        paths.append(path)
    return paths
