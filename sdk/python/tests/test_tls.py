"""TLS: https:// endpoints are verified against the system's CA roots, or the CA given to the client."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from fake_server import API_KEY, FakeServer

import aiprod

ONCE = aiprod.RetryPolicy(max_attempts=1)  # a failed handshake is UNAVAILABLE: no need to retry it here


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes, Path]:
    """A self-signed certificate for localhost: (key PEM, cert PEM, cert path)."""
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return (d / "key.pem").read_bytes(), (d / "cert.pem").read_bytes(), d / "cert.pem"


@pytest.fixture
def tls_server(cert: tuple[bytes, bytes, Path]) -> Iterator[FakeServer]:
    server = FakeServer(tls=(cert[0], cert[1]))
    yield server
    server.stop()


def test_custom_ca(tls_server: FakeServer, cert: tuple[bytes, bytes, Path]) -> None:
    assert tls_server.endpoint.startswith("https://localhost:")
    with aiprod.Client(tls_server.endpoint, API_KEY, root_certificates=cert[1]) as client:
        assert len(client.presets.list_presets().presets) == 3


def test_system_roots_do_not_trust_a_private_ca(tls_server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with aiprod.Client(tls_server.endpoint, API_KEY, retry=ONCE) as client, pytest.raises(aiprod.AiprodError) as info:
        client.presets.list_presets(timeout=5)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE


def test_system_roots_are_the_os_bundle(
    tls_server: FakeServer, cert: tuple[bytes, bytes, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # SSL_CERT_FILE names the system bundle, as for any OpenSSL client (grpcio alone ignores it).
    monkeypatch.setenv("SSL_CERT_FILE", str(cert[2]))
    assert aiprod.system_root_certificates() == cert[1]
    with aiprod.Client(tls_server.endpoint, API_KEY) as client:
        assert len(client.presets.list_presets().presets) == 3
    monkeypatch.delenv("SSL_CERT_FILE")
    roots = aiprod.system_root_certificates()
    assert roots is None or b"BEGIN CERTIFICATE" in roots
