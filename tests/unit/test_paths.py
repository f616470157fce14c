"""Paths in model configs, links in the repository, the cache directory, and paths in messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.errors import ConfigError, PathRefused
from app.repository.config import load_config
from app.repository.file_options import check_accelerator_options, check_session_options
from app.repository.paths import (
    VersionFiles,
    first_link_outside,
    is_file_name,
    without_absolute_paths,
)
from app.repository.scan import scan_repository
from app.settings import Settings

ROOT = Path("/srv/models")


@pytest.mark.parametrize("name, ok", [
    ("model.onnx", True), (".hidden.onnx", True), ("a b.onnx", True),
    ("", False), (".", False), ("..", False), ("../x", False), ("a/b", False), ("/etc/x", False),
    ("a\\b", False), ("a\0b", False), ("x" * 256, False),
])
def test_file_names(name: str, ok: bool) -> None:
    assert is_file_name(name) is ok


def test_messages_name_repository_files_relative_to_the_root() -> None:
    files = VersionFiles(ROOT / "m" / "1" / "model.onnx", Path("/var/cache/onnx-serve"))
    assert files.for_clients("Load model from /srv/models/m/1/model.onnx failed: x") == \
        "Load model from m/1/model.onnx failed: x"
    assert files.for_clients('allowed directory: "/srv/models/m/1"') == 'allowed directory: "m/1"'
    assert files.for_clients("open /var/cache/onnx-serve/m/1/o.onnx: denied") == \
        "open <cache_dir>/m/1/o.onnx: denied"
    assert files.for_clients("/srv/models2/m/1/x.onnx") == "x.onnx", "a prefix is not a folder"
    assert (files.model, files.version, files.relative(files.folder)) == ("m", "1", "m/1")


def test_a_relative_root_is_recognised_in_every_spelling() -> None:
    files = VersionFiles(Path("model_repository/m/1/model.onnx"))
    cwd = Path.cwd()
    for text in ("from model_repository/m/1/model.onnx failed",
                 f"from {cwd}/model_repository/m/1/model.onnx failed"):
        assert files.for_clients(text) == "from m/1/model.onnx failed"


@pytest.mark.parametrize("text, expected", [
    ("Status Message: /onnxruntime_src/onnxruntime/core/math/element_wise_ops.h:563 void f()",
     "Status Message: element_wise_ops.h:563 void f()"),
    ("resolved path: \"/etc/secret.bin\"", "resolved path: \"secret.bin\""),
    ("see http://example.com/a/b, a/b/c, ratio 1/2 and 3 by 4",
     "see http://example.com/a/b, a/b/c, ratio 1/2 and 3 by 4"),
])
def test_other_absolute_paths_keep_only_their_last_component(text: str, expected: str) -> None:
    assert without_absolute_paths(text) == expected


@pytest.mark.parametrize("parameters, message", [
    ({"optimized_model_filepath": "/tmp/x.onnx"}, "'optimized_model_filepath' must be a file"),
    ({"optimized_model_filepath": "../x.onnx"}, "'optimized_model_filepath' must be a file"),
    ({"session.collect_node_memory_stats_to_file": "/x"}, "collect_node_memory_stats_to_file"),
    ({"session.node_partition_config_file": "p.json"}, "is refused"),
    ({"session.model_external_initializers_file_folder_path": "/w"}, "is refused"),
    ({"session.debug_layout_transformation": "1"}, "is refused"),
    ({"session.some_future_file_path": "x"}, "'session.some_future_file_path' is refused"),
])
def test_session_options_that_name_files(parameters: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_session_options(parameters)


def test_session_options_that_do_not_name_files_pass() -> None:
    check_session_options({"optimized_model_filepath": "model.opt.onnx",
                           "session.optimized_model_external_initializers_file_name": "w.bin",
                           "session.intra_op.allow_spinning": "0", "enable_mem_arena": "1"})


@pytest.mark.parametrize("name, parameters, message", [
    ("tensorrt", {"trt_engine_cache_path": "/cache"}, "'trt_engine_cache_path' must be"),
    ("tensorrt", {"trt_timing_cache_path": "a/b"}, "'trt_timing_cache_path' must be"),
    ("tensorrt", {"trt_engine_cache_prefix": "../x"}, "'trt_engine_cache_prefix' must be"),
    ("tensorrt", {"int8_calibration_table_name": "/etc/t"}, "'int8_calibration_table_name'"),
    ("tensorrt", {"trt_extra_plugin_lib_paths": "/x.so"}, "is refused"),
    ("tensorrt", {"trt_engine_decryption_lib_path": "/x.so"}, "is refused"),
    ("tensorrt", {"trt_dump_subgraphs": "1"}, "is refused"),
    ("tensorrt", {"trt_dump_ep_context_model": "1"}, "is refused"),
    ("cuda", {"some_plugin_lib": "/x.so"}, "'some_plugin_lib' is refused"),
])
def test_accelerator_options_that_name_files(name: str, parameters: dict[str, object],
                                             message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_accelerator_options(name, parameters)


def test_accelerator_options_that_do_not_name_files_pass() -> None:
    check_accelerator_options("tensorrt", {
        "trt_engine_cache_enable": "1", "trt_engine_cache_path": "engines",
        "int8_calibration_table_name": "calib.flatbuffers",
        "trt_int8_use_native_calibration_table": "1", "precision_mode": "FP16"})
    check_accelerator_options("cuda", {"cudnn_conv_use_max_workspace": "1"})


def test_links_out_of_the_root_are_found_and_loops_end(tmp_path: Path) -> None:
    root, outside = tmp_path / "repo", tmp_path / "outside"
    (root / "m" / "1" / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "m" / "1" / "loop").symlink_to(root / "m", target_is_directory=True)
    (root / "m" / "1" / "sub" / "inside").symlink_to(root / "m" / "1" / "loop")
    assert first_link_outside(root / "m" / "1", root) is None
    (root / "m" / "1" / "sub" / "w.bin").symlink_to(outside / "nothing-here.bin")
    assert first_link_outside(root / "m" / "1", root) == root / "m" / "1" / "sub" / "w.bin"
    files = VersionFiles(root / "m" / "1" / "model.onnx")
    with pytest.raises(PathRefused) as caught:
        files.check_links()
    assert str(caught.value) == "'m/1/sub/w.bin' links outside the repository"


def test_scans_do_not_walk_outside_or_forever(tmp_path: Path) -> None:
    root, outside = tmp_path / "repo", tmp_path / "outside"
    (root / "m" / "1").mkdir(parents=True)
    (outside / "2").mkdir(parents=True)
    (outside / "2" / "model.onnx").write_bytes(b"x")
    (root / "m" / "1" / "model.onnx").write_bytes(b"y")
    (root / "m" / "1" / "loop").symlink_to(root / "m" / "1", target_is_directory=True)
    (root / "m" / "2").symlink_to(outside / "2", target_is_directory=True)
    source = scan_repository(root)["m"]
    assert sorted(source.versions) == [1, 2]  # listed, so the load can refuse it by name
    assert [label for label, _, _ in source.fingerprints[1]] == ["model.onnx"]
    assert [label for label, _, _ in source.fingerprints[2]] == ["."]  # the link, not its files


def test_a_config_file_linking_outside_is_refused(tmp_path: Path) -> None:
    (tmp_path / "repo" / "m").mkdir(parents=True)
    (tmp_path / "elsewhere.yaml").write_text("max_batch_size: 4\n")
    (tmp_path / "repo" / "m" / "config.yaml").symlink_to(tmp_path / "elsewhere.yaml")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "repo" / "m" / "config.yaml")
    assert str(caught.value) == "config.yaml: links outside the repository"


def test_cache_dir_default_setting_and_place(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert Settings().repository.cache_dir == tmp_path / "xdg" / "onnx-serve"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert Settings().repository.cache_dir == Path.home() / ".cache" / "onnx-serve"
    monkeypatch.setenv("ONNX_SERVE_REPOSITORY__CACHE_DIR", str(tmp_path / "c"))
    assert Settings().repository.cache_dir == tmp_path / "c"
    assert not (tmp_path / "c").exists(), "created when first needed, not before"
    monkeypatch.setenv("ONNX_SERVE_REPOSITORY__PATH", str(tmp_path))
    with pytest.raises(ValueError, match="cache_dir must lie outside the model repository"):
        Settings()
