"""`onnx-serve inspect PATH`: what the server would make of each model version, by running the
loader itself (the same checks, real onnxruntime sessions, nothing written beside the files).

Exit codes: 0 every version found would be served; 1 one would be refused (or none found);
2 usage error (no such PATH, not an .onnx file, bad flags).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.errors import ConfigError, LoadFailed, NotOnnx
from app.models import compat, custom_ops
from app.models.loader import ServerDefaults, build_version
from app.models.onnx_file import OnnxHeader, read_header
from app.models.threads import ThreadBudget, available_cpus
from app.repository.config import ModelConfig, load_config
from app.repository.paths import VersionFiles
from app.repository.scan import ModelSource
from app.repository.view import RepositoryView, detect, problem
from app.settings import Settings
from app.types import TensorSpec

SERVABLE, REFUSED, USAGE = 0, 1, 2


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="onnx-serve inspect",
        description="Describe what the server would serve from PATH (a repository, a model "
        "folder or an .onnx file): inputs, outputs, IR and opsets, producer, metadata, "
        "external data, the derived configuration, and every reason a version would be "
        "refused. Exit 0: all servable; 1: something would be refused; 2: usage error.")
    parser.add_argument("path", metavar="PATH", type=Path)
    parser.add_argument("--json", action="store_true", help="one JSON document, for tools")
    args = parser.parse_args(argv)
    path: Path = args.path
    wrong = f"'{path}' does not exist" if not path.exists() else problem(path, detect(path))
    if wrong is not None:
        print(f"onnx-serve inspect: error: {wrong}", file=sys.stderr)
        return USAGE
    logging.getLogger("app").setLevel(logging.CRITICAL)  # every refusal is in the report
    report = inspect(RepositoryView(path, detect(path)))
    print(json.dumps(report, indent=2) if args.json else _text(report))
    return SERVABLE if report["servable"] else REFUSED


def inspect(view: RepositoryView) -> dict[str, Any]:
    """{"path", "layout", "onnxruntime", "servable", "models": [...]}; blocking."""
    support = compat.supported()
    settings = Settings()
    # Files the loader writes (optimized models, caches) go to a folder thrown away after.
    with tempfile.TemporaryDirectory(prefix="onnx-serve-inspect-") as cache:
        defaults = ServerDefaults(
            intra_op_threads=1, cache_dir=Path(cache),
            max_queue_size=settings.batching.default_max_queue_size,
            onnxruntime_extensions=settings.repository.onnxruntime_extensions)
        models = [_model(view, source, defaults, settings.batching.default_max_batch_size)
                  for source in view.scan().values()]
    servable = bool(models) and all(m["servable"] for m in models)
    return {"path": str(view.path), "layout": view.layout, "servable": servable,
            "onnxruntime": {"version": support.onnxruntime, "ir_version": support.ir_version,
                            "opsets": support.opsets},
            "models": models}


def _model(view: RepositoryView, source: ModelSource, defaults: ServerDefaults,
           default_max_batch_size: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": source.name, "reasons": [], "versions": []}
    try:
        config = load_config(source.config_path)
    except ConfigError as err:
        entry["reasons"].append(f"configuration refused: {err}")
        entry["servable"] = False
        return entry
    wanted = config.version_policy.select(list(source.versions))
    if not wanted:
        entry["reasons"].append("no version folder (a numbered folder such as 1/) matches "
                                "the version policy")
    for version in wanted:
        files = view.version_files(source, version, config.default_model_filename,
                                   defaults.cache_dir)
        entry["versions"].append(_version(files.model_file, files, config, defaults,
                                          default_max_batch_size, f"{source.name}:{version}",
                                          version))
    entry["servable"] = not entry["reasons"] and all(v["servable"] for v in entry["versions"])
    return entry


def _version(path: Path, files: VersionFiles, config: ModelConfig, defaults: ServerDefaults,
             default_max_batch_size: int, key: str, version: int) -> dict[str, Any]:
    report: dict[str, Any] = {"version": version, "file": files.relative(path), "reasons": []}
    support = compat.supported()
    header: OnnxHeader | None = None
    if path.is_file():
        try:
            header = read_header(path)
        except NotOnnx as err:
            report["reasons"].append(str(err))
    if header is not None:
        report.update(_header(header, support))
        report["custom_domains"] = custom_ops.providers(
            header, config.model_operations.op_library_filename, defaults.onnxruntime_extensions)
    try:
        built = build_version(files, config, defaults, ThreadBudget(available_cpus(), 1),
                              default_max_batch_size)
    except LoadFailed as err:  # the loader's own words: what the server would say
        report["reasons"].append(str(err))
    else:
        signature = built.signature
        report["inputs"] = [_tensor(s) for s in signature.inputs]
        report["outputs"] = [_tensor(s) for s in signature.outputs]
        policy = built.policy
        report["config"] = {
            "max_batch_size": signature.max_batch_size,
            "dynamic_batching": signature.max_batch_size > 0,
            "preferred_batch_size": list(policy.preferred_batch_sizes),
            "max_queue_delay_microseconds": round(policy.max_queue_delay_s * 1e6),
            "instances": [list(p.names) for p in built.placements],
        }
        if built.sequence is not None:  # a stateful model: its scheduler is the sequence one
            report["config"]["dynamic_batching"] = False
            report["config"]["sequence_batching"] = dict(built.sequence.described)
        report["parameters"] = built.parameters
    report["servable"] = not report["reasons"]
    return report


def _header(header: OnnxHeader, support: compat.Support) -> dict[str, Any]:
    opsets = {domain: {"version": version, "supported_up_to": support.opsets.get(domain),
                       "supported": version <= support.opsets.get(domain, version)}
              for domain, version in sorted(header.opsets.items())}
    return {
        "ir_version": {"version": header.ir_version, "supported_up_to": support.ir_version,
                       "supported": header.ir_version <= support.ir_version},
        "opsets": opsets,
        "producer": {"name": header.producer_name, "version": header.producer_version},
        "domain": header.domain, "model_version": header.model_version,
        "doc_string": header.doc_string, "graph_name": header.graph_name,
        "metadata_props": header.metadata_props,
        "external_data": sorted(set(header.external_data.values())),
    }


def _tensor(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}


def _text(report: dict[str, Any]) -> str:
    runtime = report["onnxruntime"]
    lines = [f"{report['path']} ({report['layout']}); onnxruntime {runtime['version']}: IR up "
             f"to {runtime['ir_version']}, opsets {runtime['opsets']}"]
    for model in report["models"]:
        lines.append(f"model {model['name']}: {'servable' if model['servable'] else 'REFUSED'}")
        lines += [f"  refused: {reason}" for reason in model["reasons"]]
        for v in model["versions"]:
            lines.append(f"  version {v['version']} ({v['file']}): "
                         f"{'servable' if v['servable'] else 'REFUSED'}")
            if "ir_version" in v:
                ir = v["ir_version"]
                lines.append(f"    IR {ir['version']} ({'ok' if ir['supported'] else 'too new'})"
                             + "".join(f", {d} opset {o['version']}"
                                       f" ({'ok' if o['supported'] else 'too new'})"
                                       for d, o in v["opsets"].items()))
                lines.append(f"    producer {v['producer']['name']} {v['producer']['version']}"
                             f"; graph {v['graph_name']}; model_version {v['model_version']}")
                if v["doc_string"]:
                    lines.append(f"    doc: {v['doc_string']}")
                lines += [f"    metadata {k} = {val}" for k, val in v["metadata_props"].items()]
                lines += [f"    custom operators: {domain} (provided by {who})"
                          for domain, who in v["custom_domains"].items()]
                if v["external_data"]:
                    lines.append(f"    external data: {', '.join(v['external_data'])}")
            for role in ("inputs", "outputs"):
                lines += [f"    {role[:-1]} {t['name']}: {t['datatype']} {t['shape']}"
                          for t in v.get(role, [])]
            if "config" in v:
                c = v["config"]
                lines.append(f"    max_batch_size {c['max_batch_size']}, dynamic batching "
                             f"{'on' if c['dynamic_batching'] else 'off'}, instances "
                             f"{c['instances']}")
            lines += [f"    refused: {reason}" for reason in v["reasons"]]
    if not report["models"]:
        lines.append("no model found")
    return "\n".join(lines)
