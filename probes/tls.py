"""TLS helpers shared by the http and tcp probes: client contexts and certificate expiry."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509


def client_context(*, verify: bool = True, ca_file: str | Path | None = None) -> ssl.SSLContext:
    """A client context; with ``verify`` off the handshake still completes and the peer
    certificate can still be read (its expiry matters even on self-signed portals)."""
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def cert_days_left(der: bytes, *, now: datetime | None = None) -> float:
    """Days until the DER certificate's notAfter (negative once expired)."""
    cert = x509.load_der_x509_certificate(der)
    now = now or datetime.now(UTC)
    return (cert.not_valid_after_utc - now).total_seconds() / 86400.0


def peer_cert_days_left(ssl_object: Any) -> float | None:
    """Days left on the peer's certificate of an ``ssl.SSLObject``/``SSLSocket``, or None.

    ``getpeercert()`` returns an empty dict when verification is off, so the DER form is parsed
    with ``cryptography`` instead — the same path whether or not the chain was checked.
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
