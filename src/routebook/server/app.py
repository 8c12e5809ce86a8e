"""Assemble the gRPC server: Router service, health, reflection, size limits, graceful stop.

The server is grpc's thread-pool server: every call does blocking work (the model, FAISS, SQL),
so threads are the honest model, and `maximum_concurrent_rpcs` sheds load with
RESOURCE_EXHAUSTED instead of queueing without bound.
"""

from __future__ import annotations

import errno
import logging
import signal
import socket
import ssl
import threading
from concurrent import futures
from dataclasses import dataclass
from types import FrameType
from wsgiref.simple_server import WSGIServer

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from routebook.config import Settings
from routebook.errors import ConfigError
from routebook.server.admin import AdminServicer
from routebook.server.auth import Authenticator
from routebook.server.interceptors import ServiceInterceptor
from routebook.server.router import RouterServicer
from routebook.v1 import admin_pb2, admin_pb2_grpc, router_pb2, router_pb2_grpc
from routebook.wiring import App

log = logging.getLogger("routebook.server")

ROUTER_SERVICE = router_pb2.DESCRIPTOR.services_by_name["Router"].full_name
ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name


@dataclass(slots=True)
class RunningServer:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    app: App
    metrics_http: WSGIServer | None = None

    @property
    def metrics_port(self) -> int | None:
        return self.metrics_http.server_port if self.metrics_http is not None else None

    def stop(self, grace: float | None) -> threading.Event:
        """Turn health NOT_SERVING, then let in-flight calls finish for up to `grace` seconds."""
        self.health.enter_graceful_shutdown()
        self.app.follower.stop()
        self.app.drift_keeper.stop()
        self.app.text_sweeper.stop()
        self.app.history_sweeper.stop()
        if self.metrics_http is not None:
            self.metrics_http.shutdown()
            self.metrics_http.server_close()
        return self.server.stop(grace)


def _why_not_bound(host: str, port: int) -> str:
    """Why grpc could not bind, which it does not say: every failure read "is the port in
    use?", even for a host that does not resolve. Found again with a plain socket."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"host {host!r} does not resolve ({exc.strerror}); check the host setting (--host)"
    for family, kind, protocol, _name, address in addresses:
        try:
            with socket.socket(family, kind, protocol) as probe:
                probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} is in use; choose another (--port)"
            if exc.errno == errno.EADDRNOTAVAIL:
                return f"{host} is not an address of this machine; check the host setting (--host)"
            return f"{exc.strerror}; check the host and port settings (--host, --port)"
    return "grpc could not bind it"


def build_server(app: App, host: str | None = None, port: int | None = None) -> RunningServer:
    settings = app.settings
    host = settings.host if host is None else host
    port = settings.port if port is None else port
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=settings.workers, thread_name_prefix="rpc", initializer=app.prepare_thread
        ),
        interceptors=[
            ServiceInterceptor(
                Authenticator(
                    settings.admin_token,
                    settings.router_api_keys,
                    settings.default_namespace,
                    settings.evidence_levels,
                    settings.default_evidence,
                    settings.api_key_tenants,
                ),
                # reflection streams: enough for tooling, never most of the workers
                stream_slots=max(1, settings.workers // 4),
            )
        ],
        options=options,
        maximum_concurrent_rpcs=settings.max_concurrent_calls or settings.workers * 16,
    )
    router_pb2_grpc.add_RouterServicer_to_server(  # type: ignore[no-untyped-call]
        RouterServicer(app.routing, app.outcomes, settings.snippet_chars), server
    )
    admin_pb2_grpc.add_AdminServicer_to_server(AdminServicer(app), server)  # type: ignore[no-untyped-call]
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (ROUTER_SERVICE, ADMIN_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    tls = settings.tls_cert_file is not None or settings.tls_key_file is not None
    # Checked before binding: grpc reports unusable PEM as a failed bind, like a busy port.
    credentials = _tls_credentials(settings) if tls else None
    try:
        if credentials is not None:
            bound = server.add_secure_port(address, credentials)
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError:  # grpcio raises where older versions returned 0
        bound = 0
    if bound == 0:
        also = " (or grpc refused the TLS certificate and key)" if tls else ""
        raise ConfigError(f"cannot listen on {address}: {_why_not_bound(host, port)}{also}")
    metrics_http = None
    if settings.metrics_port is not None:
        try:
            metrics_http, _thread = start_http_server(
                settings.metrics_port, addr=settings.metrics_host, registry=app.telemetry.registry
            )
        except OSError as exc:
            server.stop(0)
            raise ConfigError(
                f"cannot serve metrics on {settings.metrics_host}:{settings.metrics_port}: "
                f"{exc.strerror or exc}; is the port in use?"
            ) from None
    app.drift_keeper.start()  # before the first call: a restart compares with the stored one
    server.start()
    app.follower.start()
    app.text_sweeper.start()
    app.history_sweeper.start()
    for service in ("", ROUTER_SERVICE):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    # Without admin_token every Admin call is refused ("the Admin API is disabled"): a probe of
    # the Admin service must not read SERVING. It stays registered, so reflection still lists it.
    serving, not_serving = (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )
    health_servicer.set(ADMIN_SERVICE, serving if settings.admin_token else not_serving)
    return RunningServer(server, bound, health_servicer, app, metrics_http)


def _tls_credentials(settings: Settings) -> grpc.ServerCredentials:
    """The server's TLS credentials, after checking that the files are a PEM certificate chain
    and its unencrypted private key: grpc itself only logs why it refused them."""
    cert_file, key_file = settings.tls_cert_file, settings.tls_key_file
    if cert_file is None or key_file is None:
        raise ConfigError("TLS needs both tls_cert_file and tls_key_file")
    try:
        key = key_file.read_bytes()
        cert = cert_file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the TLS files: {exc}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cafile=cert_file)
    except ssl.SSLError:
        raise ConfigError(
            f"tls_cert_file {str(cert_file)!r} is not a PEM certificate "
            "(-----BEGIN CERTIFICATE-----): give the server's certificate chain"
        ) from None
    try:
        # A callable password: an encrypted key fails here instead of prompting on the tty.
        context.load_cert_chain(cert_file, key_file, password=lambda: b"")
    except ssl.SSLError as exc:
        why = (
            "it is the key of another certificate"
            if exc.reason == "KEY_VALUES_MISMATCH"
            else "it is not PEM, or it is encrypted"
        )
        raise ConfigError(
            f"tls_key_file {str(key_file)!r} is not the unencrypted PEM private key of "
            f"tls_cert_file {str(cert_file)!r}: {why}"
        ) from None
    return grpc.ssl_server_credentials([(key, cert)])


def serve_forever(running: RunningServer, grace: float) -> None:
    """Block until SIGTERM or SIGINT, then stop gracefully."""
    stopped = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: stopping, grace %.1fs", signum, grace)
        running.stop(grace).wait()
        stopped.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stopped.is_set():
        stopped.wait(0.5)
