"""The BER codec for SNMP v1/v2c messages (RFC 3416 PDUs, RFC 2578 values): bytes to ``Message`` and
back, with no sockets. Lean on purpose: the fast path (fastwalk.py) decodes every polled varbind here."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from probes.snmp.session import VarBind, parse_oid


class BerError(ValueError):
    """Bytes that are not a well-formed SNMP v1/v2c message."""


# --- tags -------------------------------------------------------------------------------------

INTEGER, OCTET_STRING, NULL, OBJECT_ID, SEQUENCE = 0x02, 0x04, 0x05, 0x06, 0x30
IP_ADDRESS, COUNTER32, GAUGE32, TIMETICKS, OPAQUE, COUNTER64 = 0x40, 0x41, 0x42, 0x43, 0x44, 0x46
NO_SUCH_OBJECT, NO_SUCH_INSTANCE, END_OF_MIB_VIEW = 0x80, 0x81, 0x82

GET, GETNEXT, RESPONSE, SET, GETBULK, INFORM, TRAP_V2, REPORT = 0xA0, 0xA1, 0xA2, 0xA3, 0xA5, 0xA6, 0xA7, 0xA8
#: PDUs shaped request-id / error-status / error-index / varbinds (the v1 Trap-PDU, 0xA4, is not)
_PDU_TAGS = frozenset({GET, GETNEXT, RESPONSE, SET, GETBULK, INFORM, TRAP_V2, REPORT})

TYPE_OF_TAG: dict[int, str] = {
    INTEGER: "Integer",
    OCTET_STRING: "OctetString",
    NULL: "Null",
    OBJECT_ID: "ObjectIdentifier",
    IP_ADDRESS: "IpAddress",
    COUNTER32: "Counter32",
    GAUGE32: "Gauge32",
    TIMETICKS: "TimeTicks",
    OPAQUE: "Opaque",
    COUNTER64: "Counter64",
    NO_SUCH_OBJECT: "NoSuchObject",
    NO_SUCH_INSTANCE: "NoSuchInstance",
    END_OF_MIB_VIEW: "EndOfMibView",
}
TAG_OF_TYPE: dict[str, int] = {v: k for k, v in TYPE_OF_TAG.items()}
_UNSIGNED_MAX = {COUNTER32: 2**32 - 1, GAUGE32: 2**32 - 1, TIMETICKS: 2**32 - 1, COUNTER64: 2**64 - 1}


VERSIONS = {"1": 0, "2c": 1}


# --- encoding ---------------------------------------------------------------------------------


def encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def tlv(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + encode_length(len(content)) + content


def encode_int_content(v: int) -> bytes:
    # Shortest two's complement: one sign bit more than the magnitude needs.
    return v.to_bytes((v + (v < 0)).bit_length() // 8 + 1, "big", signed=True)


def encode_oid_content(oid: str | Sequence[int]) -> bytes:
    arcs = parse_oid(oid)
    out = bytearray()
    for v in (arcs[0] * 40 + arcs[1], *arcs[2:]):
        if v < 0x80:
            out.append(v)
            continue
        chunk = []
        while v:
            chunk.append((v & 0x7F) | 0x80)
            v >>= 7
        chunk[0] &= 0x7F
        out += bytes(reversed(chunk))
    return bytes(out)


def encode_value(type_name: str, value: object) -> bytes:
    """One value as a TLV; ``value`` as the decoder returns it (int, bytes, str or None)."""
    tag = TAG_OF_TYPE[type_name]
    if tag == INTEGER:
        assert isinstance(value, int) and -(2**31) <= value < 2**31, value
        return tlv(tag, encode_int_content(value))
    if tag in _UNSIGNED_MAX:
        assert isinstance(value, int) and 0 <= value <= _UNSIGNED_MAX[tag], value
        return tlv(tag, encode_int_content(value))
    if tag in (OCTET_STRING, OPAQUE):
        assert isinstance(value, bytes | bytearray), value
        return tlv(tag, bytes(value))
    if tag == OBJECT_ID:
        assert isinstance(value, str), value
        return tlv(tag, encode_oid_content(value))
    if tag == IP_ADDRESS:
        return tlv(tag, ipaddress.IPv4Address(str(value)).packed)
    return tlv(tag, b"")  # Null and the three exceptions carry no content


def encode_message(
    version: int,
    community: bytes,
    pdu_tag: int,
    request_id: int,
    error_status: int,
    error_index: int,
    varbinds: Sequence[tuple[str, str, object]],
) -> bytes:
    """A whole v1/v2c message. For GETBULK, error_status/error_index are non-repeaters/max-repetitions."""
    vbs = b"".join(tlv(SEQUENCE, tlv(OBJECT_ID, encode_oid_content(o)) + encode_value(t, v)) for o, t, v in varbinds)
    pdu = (
        tlv(INTEGER, encode_int_content(request_id))
        + tlv(INTEGER, encode_int_content(error_status))
        + tlv(INTEGER, encode_int_content(error_index))
        + tlv(SEQUENCE, vbs)
    )
    body = tlv(INTEGER, encode_int_content(version)) + tlv(OCTET_STRING, community) + tlv(pdu_tag, pdu)
    return tlv(SEQUENCE, body)


# --- decoding ---------------------------------------------------------------------------------

_SUB = tuple(str(i) for i in range(128))
_FIRST = tuple(f"0.{v}" if v < 40 else f"1.{v - 40}" if v < 80 else f"2.{v - 80}" for v in range(128))


#: OID prefix bytes → dotted text with a trailing dot. A walk returns column after column of OIDs
#: that differ only in their last arc, so the prefix is decoded once per column, not once per row.
_HEADS: dict[bytes, str] = {}
_HEADS_MAX = 65_536
#: continuation bytes one sub-identifier may take (pyasn1's limit, so both paths accept the same OIDs).
#: With it every arc costs O(1) and an OID decodes in time linear in its arcs; SNMP's arcs need 4.
MAX_ARC_CONTINUATION = 20


def _decode_full(b: bytes) -> str:
    if b.isascii():  # every arc below 128: one byte each
        if len(b) == 1:
            return _FIRST[b[0]]
        return _FIRST[b[0]] + "." + ".".join([_SUB[c] for c in b[1:]])
    arcs: list[int] = []
    v = 0
    more = 0  # continuation bytes of the arc so far
    for c in b:
        if c & 0x80:
            if more == 0 and c == 0x80:
                raise BerError("OID sub-identifier with a leading 0x80 (not minimal)")
            more += 1
            if more > MAX_ARC_CONTINUATION:
                raise BerError("OID sub-identifier too long")
            v = (v << 7) | (c & 0x7F)
            continue
        arcs.append((v << 7) | c)
        v = 0
        more = 0
    first = arcs[0]
    head = (0, first) if first < 40 else (1, first - 40) if first < 80 else (2, first - 80)
    return ".".join(map(str, (*head, *arcs[1:])))


def decode_oid(b: bytes) -> str:
    """OID content bytes → dotted string, in time linear in the number of arcs."""
    if not b or b[-1] & 0x80:
        raise BerError("truncated or empty OID")
    i = len(b) - 1
    if i == 0:
        return _FIRST[b[0]]
    if b[i - 1] < 0x80:
        tail = _SUB[b[i]]
    else:  # the last arc takes several bytes: find where it starts
        while i > 0 and b[i - 1] & 0x80:
            i -= 1
        if i == 0 or b[i] == 0x80 or len(b) - 1 - i > MAX_ARC_CONTINUATION:
            return _decode_full(b)  # which raises for a malformed arc
        v = 0
        for c in b[i:]:
            v = (v << 7) | (c & 0x7F)
        tail = str(v)
    prefix = b[:i]
    head = _HEADS.get(prefix)
    if head is None:
        head = _decode_full(prefix) + "."
        if len(_HEADS) >= _HEADS_MAX:
            _HEADS.clear()
        _HEADS[prefix] = head
    return head + tail


def _tlv(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the TLV at ``pos``, checked to fit before ``end``."""
    if pos + 2 > end:
        raise BerError("truncated")
    tag = data[pos]
    n = data[pos + 1]
    pos += 2
    if n & 0x80:
        k = n & 0x7F
        if k == 0 or k > 4 or pos + k > end:
            raise BerError("bad length (indefinite, too long or truncated)")
        n = int.from_bytes(data[pos : pos + k], "big")
        pos += k
    if pos + n > end:
        raise BerError("length runs past the end")
    return tag, pos, pos + n


def _int(data: bytes, pos: int, end: int) -> tuple[int, int]:
    tag, s, e = _tlv(data, pos, end)
    if tag != INTEGER or s == e:
        raise BerError("expected an INTEGER")
    return int.from_bytes(data[s:e], "big", signed=True), e


@dataclass(slots=True)
class Message:
    version: int
    community: bytes
    pdu_tag: int
    request_id: int
    error_status: int
    error_index: int
    varbinds: list[VarBind]


def decode_message(data: bytes) -> Message:
    """A whole v1/v2c message (any PDU but the v1 Trap-PDU). Raises BerError on anything malformed."""
    end = len(data)
    tag, pos, mend = _tlv(data, 0, end)
    if tag != SEQUENCE or mend != end:
        raise BerError("not one SEQUENCE")
    version, pos = _int(data, pos, end)
    if version not in (0, 1):
        raise BerError(f"version {version} is not v1/v2c")
    tag, s, pos = _tlv(data, pos, end)
    if tag != OCTET_STRING:
        raise BerError("expected the community")
    community = data[s:pos]
    pdu_tag, pos, pend = _tlv(data, pos, end)
    if pdu_tag not in _PDU_TAGS or pend != end:
        raise BerError(f"unsupported PDU 0x{pdu_tag:02x}")
    request_id, pos = _int(data, pos, pend)
    error_status, pos = _int(data, pos, pend)
    error_index, pos = _int(data, pos, pend)
    tag, pos, vend = _tlv(data, pos, pend)
    if tag != SEQUENCE or vend != pend:
        raise BerError("expected the varbind list")
    return Message(version, community, pdu_tag, request_id, error_status, error_index, _varbinds(data, pos, vend))


def _varbinds(data: bytes, pos: int, end: int) -> list[VarBind]:
    # The hot loop: lengths are read inline (short form first) rather than through _tlv.
    out: list[VarBind] = []
    append = out.append
    from_bytes = int.from_bytes
    while pos < end:
        if data[pos] != SEQUENCE or pos + 2 > end:
            raise BerError("expected a varbind SEQUENCE")
        n = data[pos + 1]
        if n < 0x80:
            pos += 2
            vb_end = pos + n
        else:
            _, pos, vb_end = _tlv(data, pos, end)
        if vb_end > end or pos + 2 > vb_end or data[pos] != OBJECT_ID:
            raise BerError("expected the varbind's OID")
        n = data[pos + 1]
        if n < 0x80:
            s = pos + 2
            pos = s + n
        else:
            _, s, pos = _tlv(data, pos, vb_end)
        if pos + 2 > vb_end:
            raise BerError("varbind without a value")
        oid = decode_oid(data[s:pos])
        tag = data[pos]
        n = data[pos + 1]
        if n < 0x80:
            s = pos + 2
            pos = s + n
        else:
            tag, s, pos = _tlv(data, pos, vb_end)
        if pos != vb_end:
            raise BerError("varbind length does not match its parts")
        if tag == OCTET_STRING:
            append((oid, "OctetString", data[s:pos]))
        elif tag == INTEGER:
            if s == pos:
                raise BerError("empty INTEGER")
            append((oid, "Integer", from_bytes(data[s:pos], "big", signed=True)))
        elif COUNTER32 <= tag <= TIMETICKS or tag == COUNTER64:
            if s == pos:
                raise BerError("empty unsigned value")
            append((oid, TYPE_OF_TAG[tag], from_bytes(data[s:pos], "big")))
        elif tag == OBJECT_ID:
            append((oid, "ObjectIdentifier", decode_oid(data[s:pos])))
        elif tag == IP_ADDRESS:
            if pos - s != 4:
                raise BerError("IpAddress is not 4 bytes")
            append((oid, "IpAddress", "%d.%d.%d.%d" % tuple(data[s:pos])))  # noqa: UP031 - fastest here
        elif tag == OPAQUE:
            append((oid, "Opaque", data[s:pos]))
        elif tag == NULL or tag in (NO_SUCH_OBJECT, NO_SUCH_INSTANCE, END_OF_MIB_VIEW):
            if s != pos:
                raise BerError("NULL-like value with content")
            append((oid, TYPE_OF_TAG[tag], None))
        else:
            raise BerError(f"unknown value type 0x{tag:02x}")
    return out
