"""A model's own description (producer, graph, doc string, opsets, metadata_props) as the
flat parameters the metadata and config endpoints publish."""

from __future__ import annotations

from typing import Protocol

from app.models.onnx_file import OnnxHeader
from app.types import ParamValue

#: Every key starts with this, so a model's own metadata_props never clash with ours.
PREFIX = "onnx."


class _OrtModelMetadata(Protocol):
    producer_name: str
    graph_name: str
    domain: str
    description: str
    graph_description: str
    version: int
    custom_metadata_map: dict[str, str]


def model_parameters(meta: _OrtModelMetadata, header: OnnxHeader | None) -> dict[str, ParamValue]:
    """onnxruntime's `session.get_modelmeta()` for what it reads, the file's header for the
    IR version, the producer version and the opsets (onnxruntime does not report them).

    Keys: onnx.producer_name, onnx.producer_version, onnx.domain, onnx.model_version,
    onnx.doc_string, onnx.graph_name, onnx.graph_doc_string, onnx.ir_version,
    onnx.opset.<domain> (the default domain as ai.onnx) and onnx.metadata.<key> for each
    metadata_props entry. Empty strings are left out; numbers are int64 parameters."""
    values: dict[str, ParamValue] = {
        "producer_name": meta.producer_name,
        "producer_version": header.producer_version if header else "",
        "domain": meta.domain,
        # onnxruntime reports an unset model_version as INT64_MAX; the file says 0
        "model_version": header.model_version if header else int(meta.version),
        "doc_string": meta.description,
        "graph_name": meta.graph_name,
        "graph_doc_string": meta.graph_description,
    }
    if header is not None:
        values["ir_version"] = header.ir_version
        values.update({f"opset.{domain}": version
                       for domain, version in sorted(header.opsets.items())})
    values.update({f"metadata.{key}": value
                   for key, value in sorted(meta.custom_metadata_map.items())})
    return {PREFIX + key: value for key, value in values.items() if value != ""}
