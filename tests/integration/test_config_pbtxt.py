"""Triton-style config.pbtxt files (tests/data/pbtxt/): served unchanged, or refused by name."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import json_format, text_format
from google.protobuf.message import Message

from app.protos_gen import model_config_pb2 as pb
from app.repository.triton_config import to_json, without_reported
from tests.integration.test_batching import padded
from tests.support import onnx_models
from tests.support.runs import infer_body
from tests.support.server import Endpoints, running_server, wait_for

CORPUS = Path(__file__).resolve().parents[1] / "data" / "pbtxt"
VERSIONS = (1, 2, 3)  # version v of a model adds v, so an answer tells which one served


class Case(NamedTuple):
    model: str = "plus"  # which model the folder holds (see _write_model)
    ready: tuple[int, ...] = (3,)
    config: dict[str, Any] | None = None  # what /config must show (a deep subset)
    instances: int | None = None  # instances in all, over every instance group
    refused: str = ""  # a refused model's reason contains this
    #: whether the reason names config.pbtxt (the file is refused as it is parsed; a
    #: config that parses but disagrees with the model is refused per version instead)
    names_file: bool = True
    #: other files of the model's folder: (name, text)
    files: tuple[tuple[str, str], ...] = ()


CASES: dict[str, Case] = {
    "minimal": Case(),
    "backend_only": Case(config={"max_batch_size": 16, "backend": "onnxruntime"}),
    "batching_explicit": Case(config={
        "max_batch_size": 8, "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}],
        "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [4]}]}),
    "no_batching": Case("fixed", config={"max_batch_size": 0,
                                         "input": [{"name": "x", "dims": [4]}]}),
    "instance_group_list": Case(config={"max_batch_size": 4}, instances=2),
    "instance_group_blocks": Case(config={"max_batch_size": 4}, instances=3),
    "version_all": Case(ready=(1, 2, 3), config={"version_policy": {"all": {}}}),
    "version_specific": Case(ready=(1, 3),
                             config={"version_policy": {"specific": {"versions": [1, 3]}}}),
    "version_latest": Case(ready=(2, 3),
                           config={"version_policy": {"latest": {"num_versions": 2}}}),
    "dynamic_batching": Case(config={"max_batch_size": 8, "dynamic_batching": {
        "preferred_batch_size": [2, 4], "max_queue_delay_microseconds": 100,
        "preserve_ordering": True}}),
    "dynamic_batching_priorities": Case(config={"dynamic_batching": {
        "max_queue_delay_microseconds": 500, "priority_levels": 2, "default_priority_level": 1,
        "default_queue_policy": {"timeout_action": "DELAY",
                                 "default_timeout_microseconds": 100000,
                                 "allow_timeout_override": True, "max_queue_size": 8},
        "priority_queue_policy": {"2": {"timeout_action": "REJECT", "max_queue_size": 4}}}}),
    "reshape": Case("grid", config={
        "input": [{"name": "x", "dims": [4], "reshape": {"shape": [2, 2]}}],
        "output": [{"name": "y", "dims": [4], "reshape": {"shape": [2, 2]}}]}),
    "image_format": Case("image", config={
        "max_batch_size": 0,
        "input": [{"name": "x", "format": "FORMAT_NCHW", "dims": [1, 2, 2],
                   "reshape": {"shape": [1, 1, 2, 2]}}]}),
    "warmup": Case(config={"max_batch_size": 4, "model_warmup": [
        {"name": "zeros", "batch_size": 2, "count": 3,
         "inputs": {"x": {"data_type": "TYPE_FP32", "dims": [4], "zero_data": True}}},
        {"name": "random", "batch_size": 1, "count": 1,
         "inputs": {"x": {"data_type": "TYPE_FP32", "dims": [4], "random_data": True}}}]}),
    "ort_parameters": Case(config={"parameters": {
        "intra_op_thread_count": {"string_value": "1"},
        "inter_op_thread_count": {"string_value": "1"},
        "execution_mode": {"string_value": "0"}, "enable_mem_arena": {"string_value": "1"}}}),
    "tensorrt_accelerator": Case(config={"max_batch_size": 4, "optimization": {
        "execution_accelerators": {"gpu_execution_accelerator": [{
            "name": "tensorrt", "parameters": {"precision_mode": "FP16",
                                               "max_workspace_size_bytes": "1073741824"}}]}}}),
    "default_model_filename": Case("named_file",
                                   config={"default_model_filename": "net.onnx"}),
    "text_variations": Case(config={"max_batch_size": 2,
                                    "dynamic_batching": {"preferred_batch_size": [1, 2]},
                                    "input": [{"name": "x", "dims": [4]}]}),
    "explicit_defaults": Case(config={"optimization": {
        "graph": {"level": 1}, "input_pinned_memory": {"enable": True},
        "output_pinned_memory": {"enable": False}}}),
    "response_cache": Case(config={"response_cache": {"enable": True}}),
    "label_filename": Case(config={"output": [{"name": "y", "label_filename": "labels.txt"}]},
                           files=(("labels.txt", "a\nb\nc\nd\n"),)),
    # the server's batching.default_max_batch_size (64; Triton's backend: 4, which
    # --backend-config=onnxruntime,default-max-batch-size=4 sets)
    "partial_io": Case(config={"max_batch_size": 64, "dynamic_batching": {},
                               "output": [{"name": "y", "data_type": "TYPE_FP32",
                                           "dims": [4]}]}),
    "no_autocomplete_needed": Case(config={"max_batch_size": 0}),
    # refused: the reason names the field (or the tensor)
    "refuse_sequence_batching": Case(refused="sequence_batching.iterative_sequence"),
    "refuse_ensemble": Case(refused="ensemble_scheduling"),
    "refuse_name": Case(refused="name: 'another_model' does not match the model's folder"),
    "refuse_platform": Case(refused="platform: 'tensorrt_plan' is not supported"),
    "refuse_backend": Case(refused="backend: 'python' is not supported"),
    "refuse_repository_agents": Case(refused="model_repository_agents"),
    "refuse_decoupled": Case(refused="model_transaction_policy.decoupled"),
    "refuse_batch_input": Case(refused="batch_input"),
    "refuse_host_policy": Case(refused="instance_group.host_policy"),
    "refuse_cc_model_filenames": Case(refused="cc_model_filenames"),
    "refuse_latest_zero": Case(refused="version_policy.latest.num_versions: 0 selects no"),
    "refuse_unknown_field": Case(refused='no field named "max_batchsize"'),
    "refuse_bad_value": Case(refused="max_batch_size"),
    "refuse_dims": Case(refused="model 'refuse_dims', tensor 'x': the model expects dims "
                        "[-1,4] but the model configuration specifies [-1,5]", names_file=False),
    "refuse_datatype": Case(refused="unable to load model 'refuse_datatype', configuration "
                            "expects datatype TYPE_INT64 for input 'x', model provides "
                            "TYPE_FP32", names_file=False),
    "refuse_tensor_name": Case(refused="model 'refuse_tensor_name': configuration output "
                               "'probabilities' is not one of the model's outputs: y",
                               names_file=False),
    "refuse_batching": Case("fixed", refused="model 'refuse_batching': max_batch_size is 8 "
                            "but not every input and output has a dynamic first dimension",
                            names_file=False),
    "refuse_model_filename_path": Case(refused="default_model_filename"),
}


def _write_model(root: Path, name: str, kind: str) -> None:
    for version in VERSIONS:
        model = {"plus": onnx_models.plus_one(value=version),
                 "named_file": onnx_models.plus_one(value=version),
                 "fixed": onnx_models.plus_one(dims=(4,), value=version),
                 "grid": onnx_models.plus_one(dims=("batch", 2, 2), value=version),
                 "image": onnx_models.plus_one(dims=(1, 1, 2, 2), value=version)}[kind]
        path = onnx_models.write(root, name, model, version)
        if kind == "named_file":
            path.rename(path.with_name("net.onnx"))


def _input(kind: str) -> np.ndarray:
    shape = {"fixed": (4,), "image": (1, 2, 2)}.get(kind, (1, 4))
    return np.arange(4, dtype=np.float32).reshape(shape)


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pbtxt")
    for name, case in CASES.items():
        _write_model(root, name, case.model)
        shutil.copy(CORPUS / f"{name}.pbtxt", root / name / "config.pbtxt")
        for file, text in case.files:
            (root / name / file).write_text(text)
    return root


@pytest.fixture(scope="module")
def corpus_server(corpus_root: Path) -> Iterator[Endpoints]:
    with running_server(corpus_root, repository={"strict_readiness": False}) as endpoints:
        _settled(endpoints.http, set(CASES))
        yield endpoints


def _settled(url: str, names: set[str]) -> None:
    """Wait until every model has been looked at (strict readiness is off: refusals)."""
    def done() -> bool:
        index = _index(url)
        return names <= set(index) and all(
            e["state"] in ("READY", "UNAVAILABLE") and (e["state"] == "READY" or e.get("reason"))
            for entries in index.values() for e in entries)
    wait_for(done, what="every model loaded or refused")


def test_the_corpus_is_complete() -> None:
    """Every file of the corpus has a case, and the corpus is as large as the issue asks."""
    assert sorted(p.stem for p in CORPUS.glob("*.pbtxt")) == sorted(CASES)
    assert len([c for c in CASES.values() if not c.refused]) >= 19
    assert len(CASES) >= 20


def _contains(actual: Any, expected: Any, where: str = "config") -> None:
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: {actual!r}"
        for key, value in expected.items():
            assert key in actual, f"{where}.{key} missing from {actual!r}"
            _contains(actual[key], value, f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{where}: {actual!r}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _contains(a, e, f"{where}[{i}]")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def _index(url: str) -> dict[str, list[dict[str, Any]]]:
    entries: dict[str, list[dict[str, Any]]] = {}
    for entry in httpx.post(f"{url}/v2/repository/index", json={}).json():
        entries.setdefault(entry["name"], []).append(entry)
    return entries


def _subset(written: Message, served: Message, where: str = "config") -> None:
    """Every field `written` sets is in `served` with the same value (lists entry by entry,
    maps key by key), walked by protobuf's descriptors."""
    for field, value in written.ListFields():
        path, got = f"{where}.{field.name}", getattr(served, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            for key, item in value.items():
                assert key in got, f"{path}[{key!r}] missing from {dict(got)}"
                if isinstance(item, Message):
                    _subset(item, got[key], f"{path}[{key!r}]")
                else:
                    assert got[key] == item, f"{path}[{key!r}]: {got[key]!r} != {item!r}"
        elif field.message_type is not None and field.is_repeated:
            assert len(got) == len(value), f"{path}: {list(got)} vs written {list(value)}"
            for i, (mine, theirs) in enumerate(zip(value, got, strict=True)):
                _subset(mine, theirs, f"{path}[{i}]")
        elif field.message_type is not None:
            assert served.HasField(field.name), f"{path} missing from {served}"
            _subset(value, got, path)
        else:
            same = list(got) == list(value) if field.is_repeated else got == value
            assert same, f"{path}: served {got!r}, written {value!r}"


def _served(endpoints: Endpoints, name: str) -> tuple[dict[str, Any], pb.ModelConfig]:
    """/config over HTTP (JSON) and gRPC (tritonclient's typed message, read as ours)."""
    document = httpx.get(f"{endpoints.http}/v2/models/{name}/config").json()
    with grpcclient.InferenceServerClient(endpoints.grpc) as client:
        typed = client.get_model_config(name).config
        as_json = client.get_model_config(name, as_json=True)["config"]
    message = pb.ModelConfig.FromString(typed.SerializeToString())
    assert as_json["name"] == name and int(as_json.get("max_batch_size", 0)) == \
        message.max_batch_size
    return document, message


def _in_process(root: Path, name: str, version: int, x: np.ndarray) -> np.ndarray:
    """What onnxruntime itself answers for the version's file, fed in the model's shape."""
    model = next((root / name / str(version)).glob("*.onnx"))
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    (arg,) = session.get_inputs()
    shape = [d if isinstance(d, int) else -1 for d in arg.shape]
    answer: np.ndarray = session.run(None, {arg.name: x.reshape(shape)})[0]
    return answer


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if not c.refused])
def test_served_as_written(corpus_server: Endpoints, corpus_root: Path, name: str) -> None:
    """Acceptance 1: every field the file sets is served back by /config over HTTP and gRPC
    with the same value; both transports serve one message; the expected versions are
    READY and answer as onnxruntime does in-process."""
    case, url = CASES[name], corpus_server.http
    ready = sorted(int(e["version"]) for e in _index(url)[name] if e["state"] == "READY")
    assert tuple(ready) == case.ready
    document, message = _served(corpus_server, name)
    written = text_format.Parse((CORPUS / f"{name}.pbtxt").read_text(), pb.ModelConfig())
    over_http = json_format.ParseDict(without_reported(document), pb.ModelConfig())
    _subset(written, message)  # gRPC
    _subset(written, over_http)
    # one message, two spellings (tritonclient's proto has no presence for max_batch_size)
    message.max_batch_size = message.max_batch_size
    assert without_reported(to_json(message)) == without_reported(document)
    _contains(document, case.config or {})  # and what auto-complete adds
    if case.instances is not None:
        assert sum(g["count"] for g in document["instance_group"]) == case.instances
    x = _input(case.model)
    for version in case.ready:
        response = httpx.post(f"{url}/v2/models/{name}/versions/{version}/infer",
                              json=infer_body("x", x))
        assert response.status_code == 200, response.text
        y = np.array(response.json()["outputs"][0]["data"], dtype=np.float32)
        np.testing.assert_allclose(y, _in_process(corpus_root, name, version, x).ravel())
        np.testing.assert_allclose(y, (x + version).ravel())


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.refused])
def test_refused_by_name(corpus_server: Endpoints, name: str) -> None:
    url = corpus_server.http
    entries = _index(url)[name]
    assert all(e["state"] == "UNAVAILABLE" for e in entries), entries
    reasons = " ".join(e.get("reason", "") for e in entries)
    assert CASES[name].refused in reasons, reasons
    assert ("config.pbtxt" in reasons) == CASES[name].names_file
    assert httpx.get(f"{url}/v2/models/{name}/ready").status_code != 200


def _one_model(root: Path, name: str = "m") -> Path:
    _write_model(root, name, "plus")
    return root / name


def _max_batch_size(url: str, name: str = "m") -> int:
    return int(httpx.get(f"{url}/v2/models/{name}/config").json()["max_batch_size"])


def test_model_config_name_reads_configs_folder(tmp_path: Path) -> None:
    """Triton's --model-config-name: configs/<name>.pbtxt where it exists, else config.pbtxt."""
    named = _one_model(tmp_path, "named")
    (named / "config.pbtxt").write_text("max_batch_size: 4\n")
    (named / "configs").mkdir()
    (named / "configs" / "h100.pbtxt").write_text('name: "named"\nmax_batch_size: 2\n')
    plain = _one_model(tmp_path, "plain")
    (plain / "config.pbtxt").write_text("max_batch_size: 3\n")
    with running_server(tmp_path, repository={"model_config_name": "h100"}) as endpoints:
        assert _max_batch_size(endpoints.http, "named") == 2
        assert _max_batch_size(endpoints.http, "plain") == 3
    with running_server(tmp_path) as endpoints:
        assert _max_batch_size(endpoints.http, "named") == 4


def test_config_pbtxt_and_config_yaml_together_are_refused(tmp_path: Path) -> None:
    both = _one_model(tmp_path, "both")
    (both / "config.pbtxt").write_text("max_batch_size: 4\n")
    (both / "config.yaml").write_text("max_batch_size: 4\n")
    yaml_only = _one_model(tmp_path, "yaml_only")
    (yaml_only / "config.yaml").write_text("max_batch_size: 5\n")
    with running_server(tmp_path, repository={"strict_readiness": False}) as endpoints:
        _settled(endpoints.http, {"both", "yaml_only"})
        entries = _index(endpoints.http)
        reason = entries["both"][0]["reason"]
        assert entries["both"][0]["state"] == "UNAVAILABLE"
        assert "config.pbtxt" in reason and "config.yaml" in reason, reason
        assert _max_batch_size(endpoints.http, "yaml_only") == 5  # config.yaml keeps working


def test_poll_mode_notices_a_changed_config_pbtxt(tmp_path: Path) -> None:
    folder = _one_model(tmp_path)
    (folder / "config.pbtxt").write_text("max_batch_size: 4\n")
    with running_server(tmp_path, repository={"control_mode": "poll", "poll_interval_s": 0.1,
                                               "settle_s": 0}) as endpoints:
        assert _max_batch_size(endpoints.http) == 4
        (folder / "config.pbtxt").write_text("# smaller now\nmax_batch_size: 2\n")
        wait_for(lambda: _max_batch_size(endpoints.http) == 2, what="the new config.pbtxt")


def test_load_override_takes_tritons_json(tmp_path: Path) -> None:
    """`load` with Triton's JSON form of ModelConfig; unsupported fields are refused by name;
    the config.yaml-schema JSON of before still loads."""
    _one_model(tmp_path)
    with running_server(tmp_path, repository={"control_mode": "explicit"}) as endpoints:
        url = endpoints.http

        def load(config: dict[str, Any]) -> httpx.Response:
            return httpx.post(f"{url}/v2/repository/models/m/load",
                              json={"parameters": {"config": json.dumps(config)}})

        triton = {"name": "m", "platform": "onnxruntime_onnx", "max_batch_size": 2,
                  "version_policy": {"specific": {"versions": ["1", "2"]}},
                  "instance_group": [{"kind": "KIND_CPU", "count": 2}],
                  "dynamic_batching": {"max_queue_delay_microseconds": "300"}}
        assert load(triton).status_code == 200, load(triton).text
        config = httpx.get(f"{url}/v2/models/m/config").json()
        _contains(config, {"max_batch_size": 2,
                           "version_policy": {"specific": {"versions": [1, 2]}},
                           "dynamic_batching": {"max_queue_delay_microseconds": 300}})
        assert sum(g["count"] for g in config["instance_group"]) == 2
        for bad, named in (({"name": "other"}, "name: 'other'"),
                           ({"sequence_batching": {"iterative_sequence": True}},
                            "sequence_batching.iterative_sequence"),
                           ({"output": [{"name": "y", "dims": [4],
                                         "label_filename": "../l.txt"}]},
                            "label_filename: must be a path inside the model's folder")):
            response = load(bad)
            assert response.status_code == 400 and named in response.json()["error"], \
                response.text
        ours = load({"max_batch_size": 3, "version_labels": {"stable": 1}})
        assert ours.status_code == 200, ours.text
        assert _max_batch_size(url) == 3


#: What Triton's /v2/models/m/config answers for an ONNX model like "m" (every field spelled
#: out, most at their defaults): posted back as a `load` override, it loads as written.
TRITONS_OWN_ANSWER: dict[str, Any] = {
    "name": "m", "platform": "onnxruntime_onnx", "backend": "onnxruntime", "runtime": "",
    "version_policy": {"latest": {"num_versions": 1}}, "max_batch_size": 4,
    "input": [{"name": "x", "data_type": "TYPE_FP32", "format": "FORMAT_NONE", "dims": ["4"],
               "is_shape_tensor": False, "allow_ragged_batch": False, "optional": False,
               "is_non_linear_format_io": False}],
    "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": ["4"], "label_filename": "",
                "is_shape_tensor": False, "is_non_linear_format_io": False}],
    "batch_input": [], "batch_output": [],
    "optimization": {"priority": "PRIORITY_DEFAULT",
                     "input_pinned_memory": {"enable": True},
                     "output_pinned_memory": {"enable": True},
                     "gather_kernel_buffer_threshold": 0, "eager_batching": False},
    "dynamic_batching": {"preferred_batch_size": [4], "max_queue_delay_microseconds": "0",
                         "preserve_ordering": False, "priority_levels": "0",
                         "default_priority_level": "0", "priority_queue_policy": {}},
    "instance_group": [{"name": "m_0", "kind": "KIND_CPU", "count": 2, "gpus": [],
                        "secondary_devices": [], "profile": [], "passive": False,
                        "host_policy": ""}],
    "default_model_filename": "model.onnx", "cc_model_filenames": {}, "metric_tags": {},
    "parameters": {}, "model_warmup": [],
    "model_transaction_policy": {"decoupled": False}, "response_cache": {"enable": False},
}


def test_tritons_own_config_answer_loads(tmp_path: Path) -> None:
    _one_model(tmp_path)
    with running_server(tmp_path, repository={"control_mode": "explicit"}) as endpoints:
        response = httpx.post(f"{endpoints.http}/v2/repository/models/m/load",
                              json={"parameters": {"config": json.dumps(TRITONS_OWN_ANSWER)}})
        assert response.status_code == 200, response.text
        config = httpx.get(f"{endpoints.http}/v2/models/m/config").json()
    _contains(config, {"max_batch_size": 4, "dynamic_batching": {"preferred_batch_size": [4]},
                       "input": [{"name": "x", "dims": [4]}]})
    assert sum(g["count"] for g in config["instance_group"]) == 2


ROUND_TRIP = ("warmup", "dynamic_batching_priorities", "reshape", "ort_parameters",
              "instance_group_blocks", "explicit_defaults", "tensorrt_accelerator",
              "version_specific", "partial_io")


def test_config_posted_back_as_a_load_override_gives_the_same_model(tmp_path: Path) -> None:
    """/config's JSON, posted back as a `load` override (HTTP for some models, gRPC for the
    others), loads the same model: the same /config again, over both transports."""
    for name in ROUND_TRIP:
        _write_model(tmp_path, name, CASES[name].model)
        shutil.copy(CORPUS / f"{name}.pbtxt", tmp_path / name / "config.pbtxt")
    with running_server(tmp_path, repository={"control_mode": "explicit",
                                               "load_models": ["*"]}) as endpoints:
        url = endpoints.http
        with grpcclient.InferenceServerClient(endpoints.grpc) as client:
            for i, name in enumerate(ROUND_TRIP):
                before, typed = _served(endpoints, name)
                text = json.dumps(before)
                if i % 2:
                    client.load_model(name, config=text)
                else:
                    response = httpx.post(f"{url}/v2/repository/models/{name}/load",
                                          json={"parameters": {"config": text}})
                    assert response.status_code == 200, response.text
                after, typed_after = _served(endpoints, name)
                assert after == before, name
                assert typed_after == typed, name


def test_disable_auto_complete_and_strict_model_config(tmp_path: Path) -> None:
    """--disable-auto-complete-config: a config must list the tensors and max_batch_size
    left out is 0; --strict-model-config also refuses a model without a config file."""
    _one_model(tmp_path, "bare")
    listed = _one_model(tmp_path, "listed")
    (listed / "config.pbtxt").write_text(
        'input [{name: "x", data_type: TYPE_FP32, dims: [-1, 4]}]\n'
        'output [{name: "y", data_type: TYPE_FP32, dims: [-1, 4]}]\n')
    half = _one_model(tmp_path, "half")
    (half / "config.pbtxt").write_text("max_batch_size: 4\n")
    for repository, bare in (({"auto_complete_config": False}, "lists no inputs and "
                              "auto-complete is off"),
                             ({"strict_model_config": True}, "no config.pbtxt: with "
                              "--strict-model-config")):
        with running_server(tmp_path, repository={"strict_readiness": False,
                                                   **repository}) as endpoints:
            _settled(endpoints.http, {"bare", "listed", "half"})
            index = _index(endpoints.http)
            assert _max_batch_size(endpoints.http, "listed") == 0
            assert bare in index["bare"][0]["reason"], index["bare"]
            assert "lists no inputs" in index["half"][0]["reason"], index["half"]


def test_dynamic_batching_where_triton_turns_it_on(corpus_server: Endpoints) -> None:
    """Triton's backend adds dynamic_batching when its auto-complete runs on a model that
    batches (max_batch_size > 1); a config listing every tensor skips auto-complete, and
    the model runs each request on its own (still up to max_batch_size rows)."""
    url = corpus_server.http

    def config(name: str) -> dict[str, Any]:
        return dict(httpx.get(f"{url}/v2/models/{name}/config").json())

    for name in ("instance_group_list", "partial_io", "backend_only", "minimal"):
        assert "dynamic_batching" in config(name), name
    for name in ("batching_explicit", "no_autocomplete_needed", "no_batching"):
        assert "dynamic_batching" not in config(name), name
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    response = httpx.post(f"{url}/v2/models/batching_explicit/infer", json=infer_body("x", x))
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["shape"] == [3, 4]


def test_our_own_settings_round_trip_beside_tritons(tmp_path: Path) -> None:
    """config.yaml's own settings (version_labels, max_inflight_requests,
    dynamic_batching.padding) are in /config beside Triton's fields and load back."""
    _write_model(tmp_path, "ours", "plus")
    (tmp_path / "ours" / "config.yaml").write_text(
        "version_policy: {all: {}}\nversion_labels: {stable: 1}\nmax_inflight_requests: 3\n")
    onnx_models.write(tmp_path, "padded", padded())
    (tmp_path / "padded" / "config.yaml").write_text(
        "dynamic_batching:\n"
        "  padding: [{input: tokens, value: 0, length_input: n, slice_outputs: [doubled]}]\n")
    with running_server(tmp_path, repository={"control_mode": "explicit",
                                               "load_models": ["*"]}) as endpoints:
        url = endpoints.http
        for name in ("ours", "padded"):
            before = httpx.get(f"{url}/v2/models/{name}/config").json()
            response = httpx.post(f"{url}/v2/repository/models/{name}/load",
                                  json={"parameters": {"config": json.dumps(before)}})
            assert response.status_code == 200, response.text
            assert httpx.get(f"{url}/v2/models/{name}/config").json() == before
        assert (before["dynamic_batching"]["padding"][0]["length_input"]) == "n"
        ours = httpx.get(f"{url}/v2/models/ours/config").json()
        assert (ours["version_labels"], ours["max_inflight_requests"]) == ({"stable": 1}, 3)
        x = _input("plus")
        answer = httpx.post(f"{url}/v2/models/ours/versions/stable/infer",
                            json=infer_body("x", x)).json()
        np.testing.assert_allclose(answer["outputs"][0]["data"], (x + 1).ravel())
