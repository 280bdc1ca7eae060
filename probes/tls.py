"""TLS helpers shared by the http and tcp probes: client contexts and certificate expiry."""

from __future__ import annotations

import functools
import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def client_context(*, verify: bool = True, ca_file: str | Path | None = None) -> ssl.SSLContext:
    """A client context; with ``verify`` off the handshake still completes and the peer
    certificate can still be read (its expiry matters even on self-signed portals)."""
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def shared_client_context(*, verify: bool = True, ca_file: str | Path | None = None) -> ssl.SSLContext:
    """One context per (verify, CA file as it is on disk now), shared by every probe that asks: each
    context holds its own parsed copy of the CA store (about 0.8 MB), and a context is safe to use
    for many connections at once. A CA file rewritten on disk gets a fresh context."""
    mtime = Path(ca_file).stat().st_mtime_ns if ca_file else 0
    return _context(verify, str(ca_file) if ca_file else None, mtime)


@functools.lru_cache(maxsize=8)
def _context(verify: bool, ca_file: str | None, _mtime_ns: int) -> ssl.SSLContext:
    return client_context(verify=verify, ca_file=ca_file)


def _tlv(der: bytes, i: int) -> tuple[int, int, int]:
    """The DER element at ``i``: (tag, start of its content, end of its content)."""
    tag, n = der[i], der[i + 1]
    i += 2
    if n & 0x80:
        k = n & 0x7F
        if not 1 <= k <= 4:
            raise ValueError("bad DER length")
        n = int.from_bytes(der[i : i + k], "big")
        i += k
    if i + n > len(der):
        raise ValueError("DER element runs past the end")
    return tag, i, i + n


def not_after(der: bytes) -> datetime:
    """A DER certificate's notAfter, read straight from the TBSCertificate (RFC 5280 4.1): the
    certificate's validity is all a probe needs, and parsing it here spares the agent loading
    ``cryptography``'s X.509 module (about 15 MB of RSS)."""
    tag, i, _ = _tlv(der, 0)  # Certificate
    tag2, i, end = _tlv(der, i)  # tbsCertificate
    if tag != 0x30 or tag2 != 0x30:
        raise ValueError("not a DER certificate")
    if der[i] == 0xA0:  # [0] EXPLICIT version
        i = _tlv(der, i)[2]
    for expect in (0x02, 0x30, 0x30):  # serialNumber, signature, issuer
        t, _, nxt = _tlv(der, i)
        if t != expect:
            raise ValueError("unexpected element in TBSCertificate")
        i = nxt
    t, i, _ = _tlv(der, i)  # validity
    if t != 0x30:
        raise ValueError("no validity in TBSCertificate")
    i = _tlv(der, i)[2]  # notBefore
    t, a, b = _tlv(der, i)
    text = der[a:b].decode("ascii")
    if t == 0x17 and len(text) == 13 and text.endswith("Z"):  # UTCTime YYMMDDHHMMSSZ, 1950-2049
        year = int(text[:2])
        text = f"{year + (1900 if year >= 50 else 2000)}{text[2:]}"
    elif not (t == 0x18 and len(text) == 15 and text.endswith("Z")):  # GeneralizedTime YYYYMMDDHHMMSSZ
        raise ValueError("notAfter is not a UTCTime or GeneralizedTime in Z form")
    return datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=UTC)


def cert_days_left(der: bytes, *, now: datetime | None = None) -> float:
    """Days until the DER certificate's notAfter (negative once expired)."""
    try:
        expires = not_after(der)
    except (ValueError, IndexError):  # an odd encoding: let the full parser judge it
        from cryptography import x509

        expires = x509.load_der_x509_certificate(der).not_valid_after_utc
    now = now or datetime.now(UTC)
    return (expires - now).total_seconds() / 86400.0


def peer_cert_days_left(ssl_object: Any) -> float | None:
    """Days left on the peer's certificate of an ``ssl.SSLObject``/``SSLSocket``, or None.

    ``getpeercert()`` returns an empty dict when verification is off, so the DER form is parsed
    instead — the same path whether or not the chain was checked.
    """
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return cert_days_left(der) if der else None


def describe_tls_error(e: ssl.SSLError, *, ca_hint: bool = False) -> str:
    """What went wrong in a handshake, in words an operator can act on."""
    if isinstance(e, ssl.SSLCertVerificationError):
        fix = (
            "fix the certificate, set ca_file, or set verify_tls: false"
            if ca_hint
            else ("fix the certificate or set verify_tls: false")
        )
        return f"TLS certificate not trusted: {e.verify_message} — {fix}"
    return f"TLS handshake failed: {e.reason or e}"
