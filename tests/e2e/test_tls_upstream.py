"""An HTTPS upstream: the gateway verifies its certificate against the configured CA."""

import datetime
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mcp import Client

from conftest import mcp_http_transport, server_http, toml_str

pytestmark = pytest.mark.anyio


def write_ca_and_server_cert(tmp_path):
    """A private CA and a certificate for 127.0.0.1 signed by it (PEM files)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "toolgate test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


async def test_an_https_upstream_with_a_trusted_ca_is_relayed(gateway_factory, fixture_http, tmp_path):
    pem = write_ca_and_server_cert(tmp_path)
    upstream = fixture_http("--tls-cert", str(pem["cert"]), "--tls-key", str(pem["key"]))
    url = upstream.url.replace("http://", "https://")
    gw = gateway_factory(server_http("secure", url, ca_file=toml_str(str(pem["ca"]))))
    async with Client(mcp_http_transport(gw.url), mode="legacy") as client:
        result = await client.call_tool("add", {"a": 20, "b": 22})
    assert not result.is_error
    assert "42" in result.content[0].text


async def test_an_https_upstream_with_an_untrusted_certificate_is_refused(gateway_factory, fixture_http, tmp_path):
    pem = write_ca_and_server_cert(tmp_path)
    (tmp_path / "other").mkdir()
    other = write_ca_and_server_cert(tmp_path / "other")
    upstream = fixture_http("--tls-cert", str(pem["cert"]), "--tls-key", str(pem["key"]))
    url = upstream.url.replace("http://", "https://")
    gw = gateway_factory(server_http("secure", url, ca_file=toml_str(str(other["ca"])), startup_timeout='"3s"'))
    async with Client(mcp_http_transport(gw.url), mode="legacy") as client:
        result = await client.call_tool("add", {"a": 1, "b": 2})
    assert result.is_error
    text = result.content[0].text
    assert "secure" in text and "certificate" in text.lower(), text
