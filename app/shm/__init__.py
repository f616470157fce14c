"""Triton's shared-memory extensions: system (POSIX) regions, and CUDA regions with a GPU."""
