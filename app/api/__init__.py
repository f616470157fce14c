"""Transports: thin HTTP and gRPC frontends over InferenceService."""
