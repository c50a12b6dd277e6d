"""TLS contexts: the server's, from its certificate and key, and the client's, which
trusts the system's store plus a given certificate (the servers of a cluster that share
one self-signed certificate trust each other that way); a self-signed certificate for the
Web API door, and the fingerprints clients pin."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import ssl
from pathlib import Path

from crdtmds.errors import ClusterError


def server_ssl_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """A context serving `cert` with `key`; None when neither is given."""
    if not cert and not key:
        return None
    if not cert or not key:
        raise ClusterError("TLS needs both a certificate and its key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def client_ssl_context(extra_ca: str | None = None) -> ssl.SSLContext:
    """The system's trust store, plus `extra_ca` (a certificate file) when given."""
    context = ssl.create_default_context()
    if extra_ca:
        context.load_verify_locations(extra_ca)
    return context


def ssl_for_url(url: str, extra_ca: str | None = None) -> ssl.SSLContext | None:
    """The client context for dialing `url`: None unless it is a `wss:` URL."""
    return client_ssl_context(extra_ca) if url.startswith("wss:") else None


def certificate_fingerprints(cert: str | Path) -> dict[str, str]:
    """SHA-1 and SHA-256 of the first (leaf) certificate in the PEM file `cert`, as
    uppercase hex without colons (how Check Point's Python SDK pins a server)."""
    text = Path(cert).read_text()
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    start = text.find(begin)
    stop = text.find(end, start)
    if start < 0 or stop < 0:
        raise ClusterError(f"{cert} holds no PEM certificate")
    der = ssl.PEM_cert_to_DER_cert(text[start : stop + len(end)] + "\n")
    return {
        "sha1": hashlib.sha1(der).hexdigest().upper(),
        "sha256": hashlib.sha256(der).hexdigest().upper(),
    }


def make_self_signed(cert: Path, key: Path, hosts: list[str], *, days: int = 3650) -> None:
    """Write a new self-signed certificate for `hosts` (names or addresses) and its key;
    the key file is created with mode 0600. Both files must not exist yet."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private_key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(h for h in [*hosts, "localhost", "127.0.0.1", "::1"] if h):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else "crdtmds")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(private_key, hashes.SHA256())
    )
    key_bytes = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_new(key, key_bytes)
    _write_new(cert, certificate.public_bytes(serialization.Encoding.PEM))


def _write_new(path: Path, data: bytes) -> None:
    """A new file readable by its owner only, whatever the umask (like the rest of a data
    directory)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)
