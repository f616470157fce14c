"""A throwaway CA, server and client certificates for TLS tests (cryptography, in memory)."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Pem:
    cert: Path
    key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(folder: Path, name: str, cert: x509.Certificate,
           key: ec.EllipticCurvePrivateKey) -> Pem:
    pem = Pem(folder / f"{name}.crt", folder / f"{name}.key")
    pem.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return pem


def issue(folder: Path) -> tuple[Pem, Pem, Pem]:
    """(CA, server for 127.0.0.1/localhost, client) as PEM files in `folder`."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, ca_name = _key(), x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))

    def leaf(name: str, serial: int, san: list[x509.GeneralName]) -> Pem:
        key = _key()
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                   .issuer_name(ca_name).public_key(key.public_key()).serial_number(serial)
                   .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1)))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return _write(folder, name, builder.sign(ca_key, hashes.SHA256()), key)

    server = leaf("server", 2, [x509.DNSName("localhost"),
                                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    client = leaf("client", 3, [])
    return _write(folder, "ca", ca, ca_key), server, client
