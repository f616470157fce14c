"""The grpc.aio server: options from the settings, every service registered, TLS binding."""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from app.api.grpc import InferenceServicer
from app.api.grpc_auth import AuthInterceptor
from app.api.grpc_compression import compression_options
from app.api.grpc_drain import GrpcCalls, GrpcFrontend, channelz_ids, new_channelz_id
from app.api.grpc_health import HealthServicer
from app.api.grpc_wrapping import INFER_METHODS, SERVICE_NAME, ErrorMapping
from app.auth import Authenticator
from app.errors import ServingError
from app.protos_gen import inference_pb2 as pb
from app.protos_gen import inference_pb2_grpc as pb_grpc
from app.protos_gen import model_config_pb2
from app.service import InferenceService
from app.settings import GrpcSettings

_COMPRESSION = {"none": grpc.Compression.NoCompression, "gzip": grpc.Compression.Gzip,
                "deflate": grpc.Compression.Deflate}


def create_grpc_server(service: InferenceService, settings: GrpcSettings,
                       authenticator: Authenticator | None = None) -> GrpcFrontend:
    """A grpc.aio server (not yet bound or started) with every service registered; API keys
    are checked when an authenticator is given."""

    def refused(method: str, err: ServingError) -> None:  # before the servicer saw it
        if method in INFER_METHODS:
            service.refused("grpc", None, None, err)

    interceptors = [] if authenticator is None else [AuthInterceptor(authenticator, refused)]
    existing = channelz_ids()
    server = grpc.aio.server(interceptors=interceptors, options=_server_options(settings),
                             compression=_COMPRESSION[settings.response_compression])
    calls = GrpcCalls(new_channelz_id(existing))
    inference = InferenceServicer(service, settings)
    mapped = ErrorMapping(server, calls, refused)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(  # type: ignore[no-untyped-call]
        inference, mapped
    )
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(service), mapped)
    names = (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME)
    # What reflection.enable_server_reflection does for a grpc.aio.Server, through the
    # mapping, so that its calls count for the drain too.
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        reflection.aio.ReflectionServicer(names, pool=_reflection_pool()), mapped)
    return GrpcFrontend(server, inference, calls)


def _server_options(settings: GrpcSettings) -> list[tuple[str, int]]:
    """gRPC core's channel arguments: message sizes, keepalive, connections, compression."""
    limit = settings.max_message_bytes
    # gRPC's own refusal cannot say which setting to change; up to twice the limit the
    # servicer refuses instead, with a message that names it.
    return [("grpc.max_receive_message_length", min(2 * limit, (1 << 31) - 1)),
            ("grpc.max_send_message_length", limit),
            ("grpc.keepalive_time_ms", int(settings.keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms",
             int(settings.keepalive_min_client_ping_interval_s * 1000)),
            *_connection_options(settings), *compression_options(settings)]


def _connection_options(settings: GrpcSettings) -> list[tuple[str, int]]:
    """The connection limits and timeouts (README.md), as gRPC core's channel arguments."""
    return [
        # grpcio sets SO_REUSEPORT unless told not to: a second server on a taken port would
        # start and silently take a share of the new connections.
        ("grpc.so_reuseport", int(settings.reuse_port)),
        ("grpc.max_allowed_incoming_connections", settings.max_connections),
        ("grpc.max_concurrent_streams", settings.max_concurrent_streams),
        ("grpc.server_handshake_timeout_ms", int(settings.handshake_timeout_s * 1000)),
        ("grpc.max_connection_idle_ms", int(settings.max_connection_idle_s * 1000)),
    ]


def bind(server: grpc.aio.Server, address: str, settings: GrpcSettings) -> int:
    """Listen on `address`, with TLS (and client certificates) when the settings say so."""
    if settings.tls_cert_path is None or settings.tls_key_path is None:
        return server.add_insecure_port(address)
    client_ca = settings.tls_client_ca_path
    credentials = grpc.ssl_server_credentials(
        [(settings.tls_key_path.read_bytes(), settings.tls_cert_path.read_bytes())],
        root_certificates=client_ca.read_bytes() if client_ca else None,
        require_client_auth=client_ca is not None,
    )
    return server.add_secure_port(address, credentials)


def _reflection_pool() -> descriptor_pool.DescriptorPool:
    """Our messages live in a private pool (see protos/generate.py); reflection needs them
    beside the health service's."""
    pool = descriptor_pool.DescriptorPool()
    for file in (model_config_pb2.DESCRIPTOR, pb.DESCRIPTOR, health_pb2.DESCRIPTOR,
                 reflection_pb2.DESCRIPTOR):  # model_config first: inference imports it
        pool.AddSerializedFile(file.serialized_pb)
    return pool
