"""TLS certificates for a SuperLink and key pairs for Flower's SuperNode authentication.

For trying TLS and node authentication (and for the tests): a self-signed CA that signs one
server certificate whose subject alternative names are the SuperLink's host names and IP
addresses, and ECDSA P-384 key pairs in OpenSSH format (what ``flower-supernode
--auth-supernode-private-key`` and ``flwr supernode register`` read). In production use your
organisation's CA; the files play the same roles:

=====================  =============================================================
``ca.crt``             CA certificate: ``flower-superlink --ssl-ca-certfile``,
                       ``flower-supernode --root-certificates``, ``flwr`` connection
                       ``root-certificates``
``server.pem`` / .key  ``flower-superlink --ssl-certfile`` / ``--ssl-keyfile``
``<name>`` / .pub      SuperNode private key (``--auth-supernode-private-key``) / public
                       key (``flwr supernode register <name>.pub``)
=====================  =============================================================

Uses the ``cryptography`` package (a dependency of ``flwr``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from fissionvae.federation.flower.commands import TLSFiles


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if private:
        os.chmod(path, 0o600)
    return path


def generate_certificates(
    out_dir: str | Path, hosts: Sequence[str] = ("127.0.0.1", "localhost"), days: int = 365
) -> TLSFiles:
    """Write ``ca.crt``, ``ca.key``, ``server.pem``, ``server.key`` for a SuperLink reachable as ``hosts``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    out = Path(out_dir)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fissionvae Flower CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else "superlink")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    pem = serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    plain = serialization.NoEncryption()
    _write(out / "ca.key", ca_key.private_bytes(pem, pkcs8, plain), private=True)
    files = TLSFiles(
        ca_cert=_write(out / "ca.crt", ca_cert.public_bytes(pem)),
        server_cert=_write(out / "server.pem", server_cert.public_bytes(pem)),
        server_key=_write(out / "server.key", server_key.private_bytes(pem, pkcs8, plain), private=True),
    )
    return files


def generate_node_keys(out_dir: str | Path, name: str = "supernode") -> tuple[Path, Path]:
    """Write an ECDSA P-384 key pair ``<name>`` (OpenSSH private key) and ``<name>.pub``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    out = Path(out_dir)
    key = ec.generate_private_key(ec.SECP384R1())
    private = _write(
        out / name,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ),
        private=True,
    )
    public = _write(
        out / f"{name}.pub",
        key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b"\n",
    )
    return private, public
