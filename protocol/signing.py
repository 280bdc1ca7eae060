"""Ed25519 keys and signatures for what the centre sends (configs, commands) and for the audit log.

A key id is the first 16 hex digits of the SHA-256 of the raw public key: short enough to print,
long enough that two keys never share one by accident. Private keys live in PEM files created
0600; public keys travel as base64 of the 32 raw bytes.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from probes.files import private_file


class KeyFileError(ValueError):
    """A key file that cannot be used (missing, unreadable, not an Ed25519 key)."""


def key_id(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class PublicKey:
    raw: bytes

    @property
    def id(self) -> str:
        return key_id(self.raw)

    @property
    def text(self) -> str:
        """How a public key is written in config files and messages."""
        return base64.b64encode(self.raw).decode()

    @classmethod
    def from_text(cls, text: str) -> PublicKey:
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except ValueError:
            raise KeyFileError("a public key is 44 characters of base64 (32 bytes)") from None
        if len(raw) != 32:
            raise KeyFileError(f"a public key is 32 bytes, this one is {len(raw)}")
        return cls(raw)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PublicKey:
        try:
            return cls.from_text(Path(path).read_text(encoding="utf-8").split()[0])
        except (OSError, IndexError) as e:
            raise KeyFileError(f"public key {path}: cannot read it: {e}") from None

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, data)
        except (InvalidSignature, ValueError):
            return False
        return True


class SigningKey:
    """A private Ed25519 key. Never logged; its repr shows the key id only."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public = PublicKey(
            key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )

    def __repr__(self) -> str:
        return f"SigningKey(id={self.public.id})"

    @property
    def id(self) -> str:
        return self.public.id

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the private key (PEM, 0600) and the public one beside it (``.pub``)."""
        p = private_file(path, sqlite=False)
        p.write_bytes(
            self._key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        p.with_name(p.name + ".pub").write_text(self.public.text + "\n")
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SigningKey:
        try:
            key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as e:
            raise KeyFileError(f"signing key {path}: cannot load it: {type(e).__name__}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"signing key {path}: not an Ed25519 key")
        return cls(key)

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> SigningKey:
        p = Path(path)
        if p.exists():
            return cls.load(p)
        key = cls.generate()
        key.save(p)
        return key
