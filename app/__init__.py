"""onnx-serve: a KServe v2 / Triton-compatible model server for ONNX models."""

__version__ = "0.1.0"
