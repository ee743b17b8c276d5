"""Servers that federate on loopback: a self-signed certificate, and our server with a federation TLS listener.

A server name of the form `127.0.0.1:PORT` makes a peer dial that address directly over HTTPS (no
well-known or SRV step), so the federation listener's port is part of the server's name."""

import datetime
import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.server import ServerProcess, database_config, free_port, merge

# What our server needs to federate with a self-signed loopback peer.
FEDERATION_TEST_CONFIG: dict[str, Any] = {
    "federation_verify_certificates": False,
    "trusted_key_servers": [],
}


def self_signed_cert(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """Write a certificate for `host` (an IP address or DNS name) and its key; return their paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    try:
        alt_name: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt_name = x509.DNSName(host)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([alt_name]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


class FederatingServer(ServerProcess):
    """Our server with a plain client listener and an HTTPS federation listener; its name is
    `127.0.0.1:FEDPORT`."""

    def __init__(self, directory: Path, database: dict[str, Any], overrides: dict[str, Any] | None = None) -> None:
        self.federation_port = free_port()
        self.server_name = f"127.0.0.1:{self.federation_port}"
        self.cert_path, key_path = self_signed_cert(directory)
        base = {
            **FEDERATION_TEST_CONFIG,
            "server_name": self.server_name,
            "tls_certificate_path": str(self.cert_path),
            "tls_private_key_path": str(key_path),
        }
        super().__init__(directory, database, merge(base, overrides or {}))
        self.config["listeners"].append(
            {
                "port": self.federation_port,
                "bind_addresses": ["127.0.0.1"],
                "tls": True,
                "resources": [{"names": ["federation"]}],
            }
        )
        # The default public_baseurl is built from server_name, which here already holds a port.
        self.config.setdefault("public_baseurl", self.url + "/")
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.federation_url = f"https://{self.server_name}"


@contextmanager
def federating_server(
    backend: str, directory: Path, overrides: dict[str, Any] | None = None
) -> Iterator[FederatingServer]:
    """Our server on its own database on `backend`, federating on loopback, stopped afterwards."""
    with database_config(backend, directory) as database:
        process = FederatingServer(directory, database, overrides)
        process.start()
        try:
            yield process
        finally:
            process.stop()
