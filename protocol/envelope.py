"""The batch envelope on ``agents/{id}/metrics`` and ``agents/{id}/events``.

Layout: ``b"NW"`` + version byte + codec byte + body. The body is JSON
``{"agent", "site", "seq", "sent", "samples": [[measurement, tags, fields, time_ns], ...]}``,
zlib-compressed when the codec byte says so. ``seq`` is the agent's monotonic batch number
(it survives restarts), which lets the collector drop redelivered batches.
"""

from __future__ import annotations

import json
import math
import time
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import orjson

from probes.model import INT64_MAX, INT64_MIN, Sample

MAGIC = b"NW"
VERSION = 1
CODEC_NONE = 0
CODEC_ZLIB = 1
HEADER_LEN = 4

# Bounds a collector enforces on what an agent sends; generous for real use, tight for abuse.
MAX_NAME_LEN = 128
MAX_TAG_LEN = 256
MAX_TAGS = 64
MAX_FIELDS = 256
MAX_STRING_FIELD = 16 * 1024


class WireError(ValueError):
    """A payload the collector refuses. ``reason`` is the counter it is filed under."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Envelope:
    agent: str
    site: str
    seq: int
    sent_ns: int
    samples: list[Sample]
    #: samples dropped while decoding, by reason (bad_sample, bad_time...)
    dropped: dict[str, int]
    #: samples whose own tags said otherwise than the identity the centre stamped (agent, site, county)
    overridden: int = 0


def encode(
    agent: str,
    site: str,
    seq: int,
    samples: Iterable[Sample],
    *,
    sent_ns: int | None = None,
    compress: bool = True,
) -> bytes:
    body = orjson.dumps(
        {
            "agent": agent,
            "site": site,
            "seq": seq,
            "sent": sent_ns if sent_ns is not None else time.time_ns(),
            "samples": [[s.measurement, s.tags, s.fields, s.time_ns] for s in samples],
        }
    )
    if compress:
        return MAGIC + bytes((VERSION, CODEC_ZLIB)) + zlib.compress(body, 6)
    return MAGIC + bytes((VERSION, CODEC_NONE)) + body


@dataclass(frozen=True, slots=True)
class Limits:
    max_payload_bytes: int = 1024 * 1024
    max_body_bytes: int = 8 * 1024 * 1024
    #: a body may expand to at most this many times its compressed size (JSON of samples
    #: compresses 5-10x; a decompression bomb 1000x) — refused before it is parsed
    max_ratio: int = 32
    max_samples: int = 50_000
    max_past_s: float = 400 * 86400.0
    max_future_s: float = 3600.0


def _ok_name(s: object, limit: int) -> bool:
    return isinstance(s, str) and 0 < len(s) <= limit and s.isprintable()


def _decompress(data: bytes, limit: int) -> bytes:
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as e:
        raise WireError("bad_compression", str(e)) from None
    if len(out) > limit or d.unconsumed_tail:
        raise WireError("too_large", f"body expands past {limit} bytes")
    if not d.eof:
        raise WireError("bad_compression", "compressed stream is truncated")
    return out


# Names and tag values already found valid (non-empty, printable, at most MAX_NAME_LEN long —
# so valid under MAX_TAG_LEN too). The same few thousand strings arrive in every batch; checking
# each once saves most of the decoder's time. Bounded: past the cap, strings are checked each time.
_KNOWN: set[str] = set()
_KNOWN_CAP = 200_000


def _name_ok(s: object, limit: int) -> bool:
    if type(s) is not str:  # also keeps unhashable JSON (lists, objects) away from the set
        return False
    if s in _KNOWN:
        return True
    if not _ok_name(s, limit):
        return False
    if len(_KNOWN) < _KNOWN_CAP and len(s) <= MAX_NAME_LEN:
        _KNOWN.add(s)
    return True


#: floats this large may be integer literals orjson could not hold as ints (it reads integers
#: outside [-2**63, 2**64) as floats): such a body is read again with exact integers
_INT64_FLOAT = float(2**63)
_RECHECK = "recheck"


def _check_sample(
    raw: object,
    lo_ns: int,
    hi_ns: int,
    identity: Mapping[str, str],
    overridden: list[int],
    *,
    huge_floats_ok: bool = False,
) -> Sample | str:
    """A valid Sample with the ``identity`` tags (agent, site, ...) set, or the reason it is not
    one. A sample whose own tags disagree with the identity counts in ``overridden[0]``."""
    if type(raw) is not list or len(raw) != 4:
        return "bad_sample"
    measurement, tags, fields, ts = raw
    if not _name_ok(measurement, MAX_NAME_LEN):
        return "bad_sample"
    if type(tags) is not dict or len(tags) > MAX_TAGS:
        return "bad_sample"
    clean_tags: dict[str, str] = {}
    for k, v in tags.items():
        if not _name_ok(k, MAX_TAG_LEN):
            return "bad_sample"
        if type(v) is str and v in _KNOWN:
            clean_tags[k] = v
        elif type(v) is not str or len(v) > MAX_TAG_LEN or not v.isprintable():
            return "bad_sample"
        elif v:  # an empty tag value means "no such tag"
            clean_tags[k] = v
            _name_ok(v, MAX_TAG_LEN)  # remember it
    # counted only once the sample is kept: a refused one is counted under its refusal alone
    overrides = any(clean_tags.get(k, v) != v for k, v in identity.items())
    clean_tags.update(identity)
    if type(fields) is not dict or not fields or len(fields) > MAX_FIELDS:
        return "bad_sample"
    for k, v in fields.items():
        if not _name_ok(k, MAX_NAME_LEN):
            return "bad_sample"
        t = type(v)
        if t is float:
            if not math.isfinite(v):
                return "bad_sample"
            if not huge_floats_ok and abs(v) >= _INT64_FLOAT and v.is_integer():
                return _RECHECK  # orjson reads an integer beyond int64 as a float: look again
        elif t is int:
            if not INT64_MIN <= v <= INT64_MAX:
                return "bad_sample"
        elif t is str:
            if len(v) > MAX_STRING_FIELD:
                return "bad_sample"
        elif t is not bool:
            return "bad_sample"
    if type(ts) is not int:
        return "bad_sample"
    if not lo_ns <= ts <= hi_ns:
        return "bad_time"
    if overrides:
        overridden[0] += 1
    return Sample(measurement, clean_tags, fields, ts)


def decode(
    payload: bytes,
    *,
    topic_agent: str,
    limits: Limits = Limits(),
    now_ns: int | None = None,
    identity: Mapping[str, str] | None = None,
) -> Envelope:
    """Parse and validate one envelope, or raise WireError naming why it is refused.

    ``identity``: the tags the centre decided for this agent (agent, site, county), stamped on every
    sample over whatever the payload says; without it the envelope's own agent and site are used.

    Individually bad samples are dropped and counted in ``Envelope.dropped``; a bad envelope
    (header, compression, JSON, schema, agent id not matching the topic) is refused whole.
    """
    if len(payload) > limits.max_payload_bytes:
        raise WireError("too_large", f"{len(payload)} bytes > limit {limits.max_payload_bytes}")
    if len(payload) < HEADER_LEN or payload[:2] != MAGIC:
        raise WireError("bad_header", "not a netwatch envelope (no NW magic)")
    version, codec = payload[2], payload[3]
    if version != VERSION:
        raise WireError("bad_version", f"envelope version {version}, this collector reads {VERSION}")
    body = payload[HEADER_LEN:]
    if codec == CODEC_ZLIB:
        body = _decompress(body, min(limits.max_body_bytes, max(64 * 1024, len(body) * limits.max_ratio)))
    elif codec != CODEC_NONE:
        raise WireError("bad_compression", f"unknown codec {codec}")
    elif len(body) > limits.max_body_bytes:
        raise WireError("too_large", f"body {len(body)} bytes > limit {limits.max_body_bytes}")
    # Every sample is a JSON list: an upper bound on their number, counted before any object is built.
    if body.count(b"[") > limits.max_samples + 1:
        raise WireError("too_large", f"more than {limits.max_samples} samples")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise WireError("bad_json", str(e)[:200]) from None
    if not isinstance(doc, dict):
        raise WireError("bad_schema", "body is not a JSON object")
    agent, site, seq, sent, samples = (doc.get(k) for k in ("agent", "site", "seq", "sent", "samples"))
    if not isinstance(agent, str) or not isinstance(site, str) or not _ok_name(site, MAX_TAG_LEN):
        raise WireError("bad_schema", "agent and site must be non-empty strings")
    if agent != topic_agent:
        raise WireError("agent_mismatch", f"envelope says agent {agent!r}, topic says {topic_agent!r}")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= INT64_MAX:
        raise WireError("bad_schema", "seq must be a non-negative integer")
    if not isinstance(sent, int) or isinstance(sent, bool):
        raise WireError("bad_schema", "sent must be an integer (ns)")
    if not isinstance(samples, list):
        raise WireError("bad_schema", "samples must be a list")
    if len(samples) > limits.max_samples:
        raise WireError("too_large", f"{len(samples)} samples > limit {limits.max_samples}")
    now = now_ns if now_ns is not None else time.time_ns()
    lo = now - int(limits.max_past_s * 1e9)
    hi = now + int(limits.max_future_s * 1e9)
    good: list[Sample] = []
    dropped: dict[str, int] = {}
    stamp = {"agent": agent, "site": site} if identity is None else {**identity, "agent": agent}
    overridden = [0]
    for raw in samples:
        r = _check_sample(raw, lo, hi, stamp, overridden)
        if r is _RECHECK:
            # An integer field beyond int64 must be refused, not stored as a rounded float. The
            # standard library keeps big integers exact: this (rare, slower) reading tells them
            # from genuine large floats (which JSON writes with a fraction or an exponent).
            return _decode_exact(body, agent, site, seq, sent, lo, hi, stamp)
        if isinstance(r, str):
            dropped[r] = dropped.get(r, 0) + 1
        else:
            good.append(r)
    return Envelope(agent, stamp.get("site", site), seq, sent, good, dropped, overridden[0])


def _decode_exact(
    body: bytes, agent: str, site: str, seq: int, sent: int, lo: int, hi: int, stamp: Mapping[str, str]
) -> Envelope:
    """The samples of a body orjson already accepted, read again with exact integers."""
    samples = json.loads(body)["samples"]
    good: list[Sample] = []
    dropped: dict[str, int] = {}
    overridden = [0]
    for raw in samples:
        r = _check_sample(raw, lo, hi, stamp, overridden)
        if r is _RECHECK:  # a genuine float this large: keep it as it is
            r = _check_sample(raw, lo, hi, stamp, overridden, huge_floats_ok=True)
        if isinstance(r, str):
            dropped[r] = dropped.get(r, 0) + 1
        else:
            good.append(r)
    return Envelope(agent, stamp.get("site", site), seq, sent, good, dropped, overridden[0])
