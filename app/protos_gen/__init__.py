"""Code generated from protos/inference.proto by `make protos`; do not edit."""
