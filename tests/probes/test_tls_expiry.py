"""``probes.tls.not_after`` reads a certificate's expiry without ``cryptography``: checked against
``cryptography``'s own parse of certificates it built, across both DER time encodings (UTCTime up
to 2049, GeneralizedTime from 2050, RFC 5280 4.1.2.5), with and without the explicit version."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from probes.tls import cert_days_left, not_after


def _der(expires: dt.datetime, *, long_name: bool = False) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    cn = "x" * 60 if long_name else "node"
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, cn)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(expires)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize(
    "expires",
    [
        dt.datetime(2027, 3, 4, 5, 6, 7, tzinfo=dt.UTC),  # UTCTime
        dt.datetime(2049, 12, 31, 23, 59, 59, tzinfo=dt.UTC),  # last UTCTime year
        dt.datetime(2050, 1, 1, 0, 0, 0, tzinfo=dt.UTC),  # GeneralizedTime
        dt.datetime(2021, 6, 1, 12, 0, 0, tzinfo=dt.UTC),  # already expired
    ],
    ids=["utctime", "utctime-2049", "generalized-2050", "expired"],
)
def test_not_after_matches_cryptography(expires: dt.datetime) -> None:
    der = _der(expires, long_name=expires.year == 2049)  # a long name: multi-byte DER lengths
    assert x509.load_der_x509_certificate(der).not_valid_after_utc == expires  # the oracle agrees with the input
    assert not_after(der) == expires
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert cert_days_left(der, now=now) == pytest.approx((expires - now).total_seconds() / 86400)


def test_garbage_is_refused() -> None:
    with pytest.raises((ValueError, IndexError)):
        not_after(b"\x30\x03\x02\x01\x01")
    with pytest.raises(ValueError):
        cert_days_left(b"not a certificate")  # the cryptography fallback refuses it too
