"""Settings of one TCP target: where to connect and, optionally, what to send and expect."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator, model_validator

from probes.base import ByteSize, ProbeConfig

_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{2}|[rnt0\\])")
_SIMPLE = {"r": b"\r", "n": b"\n", "t": b"\t", "0": b"\0", "\\": b"\\"}


def decode_escapes(text: str) -> bytes:
    r"""``"QUIT\r\n"`` written in single quotes or plain YAML -> the bytes ``QUIT`` CR LF.

    Understands ``\r \n \t \0 \\ \xHH``; everything else is sent as UTF-8. (YAML double-quoted
    strings have already turned escapes into characters, which pass through unchanged.)
    """
    out = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(text):
        out += text[pos : m.start()].encode("utf-8")
        code = m.group(1)
        out += bytes([int(code[1:], 16)]) if code[0] == "x" else _SIMPLE[code]
        pos = m.end()
    out += text[pos:].encode("utf-8")
    return bytes(out)


class TcpConfig(ProbeConfig):
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(ge=1, le=65535)
    send: bytes | None = Field(None, description="sent after connecting; \\r \\n \\t \\xHH escapes allowed")
    expect: re.Pattern[str] | None = Field(None, description="regex the reply must match (re.search)")
    expect_text: str | None = Field(None, min_length=1, description="plain text the reply must contain")
    read_bytes: ByteSize = Field(4096, ge=1, le=1024 * 1024, description="stop reading the reply after this many")
    tls: bool = False
    verify_tls: bool = Field(True, description="with tls: check the certificate chain and host name")

    @field_validator("send", mode="before")
    @classmethod
    def _escapes(cls, v: Any) -> Any:
        if isinstance(v, str):
            if not v:
                raise ValueError("send cannot be empty; leave it out to only connect")
            return decode_escapes(v)
        return v

    @model_validator(mode="after")
    def _one_expectation(self) -> TcpConfig:
        if self.expect is not None and self.expect_text is not None:
            raise ValueError("give either expect (a regex) or expect_text (plain text), not both")
        return self

    @property
    def reads(self) -> bool:
        """Whether a reply is awaited: when something is sent or something is expected."""
        return self.send is not None or self.expect is not None or self.expect_text is not None

    def matches(self, reply: str) -> bool:
        """Whether ``reply`` satisfies the expectation (any reply does when none is set)."""
        if self.expect is not None:
            return self.expect.search(reply) is not None
        if self.expect_text is not None:
            return self.expect_text in reply
        return bool(reply)
