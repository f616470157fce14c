"""Request tracing: Triton's trace extension and OpenTelemetry spans (the [tracing] extra)."""
