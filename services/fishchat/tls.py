"""Optional TLS: for the client listeners (gateway and access TCP, access WebSocket, the HTTP API)
and for the internal gRPC between roles, with certificates read from PEM files (in Kubernetes, a
Secret the operator mounts).

`[tls]` in the TOML file (or `FISHCHAT_TLS_*`): with `cert_file` and `key_file` set, the client
listeners speak TLS (`clients = false` keeps them plain, e.g. behind a TLS-terminating proxy); with
`grpc = true` the roles' gRPC servers do too and their clients verify them against `ca_file`. Pods
are dialed by IP, so gRPC clients may expect one `grpc_server_name` in every role's certificate
instead of the address they dial.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fishchat.config import ConfigError


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"tls.{what}: cannot read {path}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class TlsSettings:
    #: The certificate chain (PEM) and its private key.
    cert_file: str = ""
    key_file: str = ""
    #: CA bundle (PEM) gRPC clients verify the roles' certificates with.
    ca_file: str = ""
    #: Client listeners use TLS when a certificate is set.
    clients: bool = True
    #: Internal gRPC uses TLS (needs cert_file, key_file and ca_file).
    grpc: bool = False
    #: The name gRPC clients expect in the servers' certificate; empty: the host they dial.
    grpc_server_name: str = ""

    def __post_init__(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("tls.cert_file and tls.key_file go together")
        if self.grpc and not (self.cert_file and self.ca_file):
            raise ValueError("tls.grpc needs tls.cert_file, tls.key_file and tls.ca_file")

    @property
    def for_clients(self) -> bool:
        return bool(self.cert_file) and self.clients

    def client_listener_context(self) -> ssl.SSLContext | None:
        """The server-side context of the client listeners, or None when they are plain."""
        if not self.for_clients:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        _read(self.cert_file, "cert_file")  # a clear error before ssl's own
        _read(self.key_file, "key_file")
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(
                f"tls: {self.cert_file} / {self.key_file} are not a certificate and its key: {exc}"
            ) from None
        context.set_alpn_protocols(["http/1.1"])
        return context

    def grpc_server_credentials(self) -> Any:
        """`grpc.ssl_server_credentials` for the roles' gRPC servers, or None (plain)."""
        if not self.grpc:
            return None
        import grpc

        return grpc.ssl_server_credentials(
            [(_read(self.key_file, "key_file"), _read(self.cert_file, "cert_file"))]
        )

    def grpc_channel_credentials(self) -> Any:
        """`grpc.ssl_channel_credentials` for the roles' gRPC clients, or None (plain)."""
        if not self.grpc:
            return None
        import grpc

        return grpc.ssl_channel_credentials(root_certificates=_read(self.ca_file, "ca_file"))
