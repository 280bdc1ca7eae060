"""The fast v1/v2c path (probes/snmp/fastwalk.py): property tests of our BER codec (ber.py), a differential test
against pysnmp's own encoder/decoder, the client's edge cases against a scripted agent, and walks of a
real net-snmp ``snmpd`` on loopback compared varbind for varbind with ``snmpbulkwalk``."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyasn1.codec.ber import decoder as ber_decoder
from pyasn1.codec.ber import encoder as ber_encoder
from pysnmp.proto import api, rfc1902, rfc1905
from pysnmp.proto.api import v2c as pv2c

from probes.snmp import ber
from probes.snmp import fastwalk as fw
from probes.snmp import session as snmp_session
from probes.snmp.ber import BerError
from probes.snmp.fastwalk import FastSession
from probes.snmp.session import SnmpError, SnmpTimeout, VarBind

NET_SNMP_ENV = {**os.environ, "MIBS": "", "MIBDIRS": "/nonexistent"}

# --- strategies ---------------------------------------------------------------------------------

sub_id = st.one_of(st.integers(0, 127), st.integers(128, 16_383), st.integers(0, 2**32 - 1))
oids = st.one_of(
    st.tuples(st.sampled_from([0, 1]), st.integers(0, 39)),
    st.tuples(st.just(2), st.integers(0, 2**20)),
).flatmap(lambda head: st.lists(sub_id, max_size=14).map(lambda rest: ".".join(map(str, (*head, *rest)))))
U32 = st.integers(0, 2**32 - 1)
values: dict[str, st.SearchStrategy[Any]] = {
    "Integer": st.integers(-(2**31), 2**31 - 1),
    "OctetString": st.binary(max_size=300),
    "ObjectIdentifier": oids,
    "IpAddress": st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: "%d.%d.%d.%d" % t),  # noqa: UP031
    "Counter32": U32,
    "Gauge32": U32,
    "TimeTicks": U32,
    "Opaque": st.binary(max_size=40),
    "Counter64": st.integers(0, 2**64 - 1),
    "Null": st.none(),
    "NoSuchObject": st.none(),
    "NoSuchInstance": st.none(),
    "EndOfMibView": st.none(),
}
varbinds = st.lists(
    st.sampled_from(sorted(values)).flatmap(lambda t: st.tuples(oids, st.just(t), values[t])), max_size=30
)
messages = st.tuples(
    st.sampled_from([0, 1]),
    st.binary(max_size=40),
    st.sampled_from(sorted(ber._PDU_TAGS)),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(0, 18),
    st.integers(0, 2**31 - 1),
    varbinds,
)


# --- the codec on its own -------------------------------------------------------------------------


@given(oids)
def test_oid_round_trip(oid: str) -> None:
    assert ber.decode_oid(ber.encode_oid_content(oid)) == oid


@given(st.integers(-(2**70), 2**70))
def test_integer_content_is_minimal_twos_complement(v: int) -> None:
    b = ber.encode_int_content(v)
    assert int.from_bytes(b, "big", signed=True) == v
    # minimal: dropping the first byte would change the value (or leave nothing)
    assert len(b) == 1 or int.from_bytes(b[1:], "big", signed=True) != v


@given(messages)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_message_round_trip(m: tuple[Any, ...]) -> None:
    data = ber.encode_message(*m)
    got = ber.decode_message(data)
    assert (got.version, got.community, got.pdu_tag, got.request_id, got.error_status, got.error_index) == m[:6]
    assert got.varbinds == [(o, t, v) for o, t, v in m[6]]


def test_long_lengths_and_big_values_round_trip() -> None:
    vbs: list[VarBind] = [
        ("1.3.6.1.2.1.2.2.1.2.1", "OctetString", b"x" * 1000),
        ("1.3.6.1.2.1.31.1.1.1.6.4294967295", "Counter64", 2**64 - 1),
        ("1.3.6.1.4.1.2011.5.25.31.1.1.1.1.5.16777216", "Integer", -(2**31)),
        ("2.999.1", "ObjectIdentifier", "1.3.6.1.4.1.4294967295"),
    ]
    data = ber.encode_message(1, b"c" * 200, ber.RESPONSE, 1, 0, 0, vbs)
    assert data[1] == 0x82  # the message length takes two bytes
    assert ber.decode_message(data).varbinds == vbs


@given(st.binary(max_size=200))
@settings(max_examples=500)
def test_random_bytes_are_rejected_only_as_ber_errors(data: bytes) -> None:
    with contextlib.suppress(BerError):
        ber.decode_message(data)


@given(messages, st.data())
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_truncated_or_corrupted_messages_never_escape_as_other_errors(m: tuple[Any, ...], data: st.DataObject) -> None:
    msg = ber.encode_message(*m)
    cut = data.draw(st.integers(0, len(msg) - 1))
    with pytest.raises(BerError):
        ber.decode_message(msg[:cut])
    i = data.draw(st.integers(0, len(msg) - 1))
    corrupted = msg[:i] + bytes([data.draw(st.integers(0, 255))]) + msg[i + 1 :]
    with contextlib.suppress(BerError):
        ber.decode_message(corrupted)


def test_non_minimal_and_truncated_oids_are_refused() -> None:
    for bad in (b"", b"\x2b\x06\x81", b"\x2b\x80\x01", b"\x2b\x06\x80\x7f"):
        with pytest.raises(BerError):
            ber.decode_oid(bad)
    with pytest.raises(ValueError):
        ber.encode_oid_content("1.40")
    with pytest.raises(ValueError):
        ber.encode_oid_content("ifDescr")


# --- differential: pysnmp's own BER encoder and decoder agree with ours -----------------------

_PYSNMP_TYPE = {"Integer32": "Integer", "Unsigned32": "Gauge32", "ObjectName": "ObjectIdentifier"}
_PYSNMP_CLASS: dict[str, Callable[[Any], Any]] = {
    "Integer": rfc1902.Integer32,
    "OctetString": rfc1902.OctetString,
    "ObjectIdentifier": rfc1902.ObjectIdentifier,
    "IpAddress": rfc1902.IpAddress,
    "Counter32": rfc1902.Counter32,
    "Gauge32": rfc1902.Gauge32,
    "TimeTicks": rfc1902.TimeTicks,
    "Opaque": rfc1902.Opaque,
    "Counter64": rfc1902.Counter64,
    "Null": lambda _: rfc1902.Null(""),
    "NoSuchObject": lambda _: rfc1905.noSuchObject,
    "NoSuchInstance": lambda _: rfc1905.noSuchInstance,
    "EndOfMibView": lambda _: rfc1905.endOfMibView,
}
_PYSNMP_PDU = {ber.GET: pv2c.GetRequestPDU, ber.GETNEXT: pv2c.GetNextRequestPDU, ber.RESPONSE: pv2c.ResponsePDU}


def _from_pysnmp(name: Any, value: Any) -> VarBind:
    typ = _PYSNMP_TYPE.get(type(value).__name__, type(value).__name__)
    plain: object
    if typ in ("OctetString", "Opaque"):
        plain = bytes(value)
    elif typ == "IpAddress":
        plain = socket.inet_ntoa(bytes(value))
    elif typ == "ObjectIdentifier":
        plain = str(value)
    elif typ in ("Null", "NoSuchObject", "NoSuchInstance", "EndOfMibView"):
        plain = None
    else:
        plain = int(value)
    return str(name), typ, plain


# pysnmp's request-id type is narrower than the RFC's (-214783648..214783647)
pysnmp_request_ids = st.integers(0, 214_783_647)


@given(st.binary(max_size=40), pysnmp_request_ids, st.integers(0, 18), st.integers(0, 100), varbinds)
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_pysnmp_decodes_what_we_encode(community: bytes, rid: int, status: int, index: int, vbs: list[VarBind]) -> None:
    data = ber.encode_message(1, community, ber.RESPONSE, rid, status, index, vbs)
    msg, rest = ber_decoder.decode(data, asn1Spec=pv2c.Message())
    assert rest == b""
    pdu = pv2c.apiMessage.get_pdu(msg)
    assert bytes(pv2c.apiMessage.get_community(msg)) == community
    assert int(pv2c.apiPDU.get_request_id(pdu)) == rid
    # read raw: pysnmp's getter refuses an error-index past the varbinds, which BER allows
    assert (int(pdu.getComponentByPosition(1)), int(pdu.getComponentByPosition(2))) == (status, index)
    assert [_from_pysnmp(n, v) for n, v in pv2c.apiPDU.get_varbinds(pdu)] == vbs


@given(st.binary(max_size=40), pysnmp_request_ids, st.sampled_from(sorted(_PYSNMP_PDU)), varbinds)
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_we_decode_what_pysnmp_encodes(community: bytes, rid: int, tag: int, vbs: list[VarBind]) -> None:
    pdu = _PYSNMP_PDU[tag]()
    pv2c.apiPDU.set_defaults(pdu)
    pv2c.apiPDU.set_request_id(pdu, rid)
    pv2c.apiPDU.set_varbinds(pdu, [(o, _PYSNMP_CLASS[t](v)) for o, t, v in vbs])
    msg = pv2c.Message()
    pv2c.apiMessage.set_defaults(msg)
    pv2c.apiMessage.set_community(msg, community)
    pv2c.apiMessage.set_pdu(msg, pdu)
    got = ber.decode_message(ber_encoder.encode(msg))
    assert (got.version, got.community, got.pdu_tag, got.request_id) == (1, community, tag, rid)
    assert got.varbinds == vbs


def test_pysnmp_reads_our_getbulk_and_v1_getnext_requests() -> None:
    data = ber.encode_message(1, b"public", ber.GETBULK, 77, 0, 25, [("1.3.6.1.2.1.2", "Null", None)])
    msg, _ = ber_decoder.decode(data, asn1Spec=pv2c.Message())
    pdu = pv2c.apiMessage.get_pdu(msg)
    assert (pv2c.apiBulkPDU.get_non_repeaters(pdu), pv2c.apiBulkPDU.get_max_repetitions(pdu)) == (0, 25)
    assert [str(n) for n, _ in pv2c.apiBulkPDU.get_varbinds(pdu)] == ["1.3.6.1.2.1.2"]
    v1 = api.PROTOCOL_MODULES[api.SNMP_VERSION_1]
    data = ber.encode_message(0, b"public", ber.GETNEXT, 78, 0, 0, [("1.3.6.1.2.1.1", "Null", None)])
    msg, _ = ber_decoder.decode(data, asn1Spec=v1.Message())
    assert int(v1.apiMessage.get_version(msg)) == 0
    assert int(v1.apiPDU.get_request_id(v1.apiMessage.get_pdu(msg))) == 78


# --- the client against a scripted agent ----------------------------------------------------------


class FakeAgent(asyncio.DatagramProtocol):
    """A v1/v2c agent serving a sorted table, whose answers a test can bend (garbage, loops, tooBig)."""

    def __init__(self, table: list[VarBind], community: bytes = b"public") -> None:
        self.table = sorted(table, key=lambda vb: tuple(map(int, vb[0].split("."))))
        self.keys = [tuple(map(int, vb[0].split("."))) for vb in self.table]
        self.community = community
        self.requests: list[ber.Message] = []
        self.transport: asyncio.DatagramTransport | None = None
        #: called with the request; returns a list of datagrams to send instead of the answer, or None
        self.bend: Callable[[ber.Message], list[bytes] | None] = lambda m: None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def after(self, oid: str) -> VarBind | None:
        i = bisect.bisect_right(self.keys, tuple(map(int, oid.split("."))))
        return self.table[i] if i < len(self.keys) else None

    def answer(self, m: ber.Message) -> bytes:
        vbs: list[VarBind] = []
        status = index = 0
        if m.pdu_tag == ber.GET:
            for i, (oid, _, _) in enumerate(m.varbinds):
                hit = next((vb for vb in self.table if vb[0] == oid), None)
                if hit is None and m.version == 0:
                    status, index, vbs = snmp_session.NO_SUCH_NAME, i + 1, list(m.varbinds)
                    break
                vbs.append(hit or (oid, "NoSuchObject", None))
        elif m.pdu_tag == ber.GETNEXT:
            hit = self.after(m.varbinds[0][0])
            if hit is None:
                status, index, vbs = snmp_session.NO_SUCH_NAME, 1, list(m.varbinds)
            else:
                vbs = [hit]
        else:  # GETBULK, one repeater
            oid = m.varbinds[0][0]
            for _ in range(m.error_index):
                hit = self.after(oid)
                if hit is None:
                    vbs.append((oid, "EndOfMibView", None))
                    break
                vbs.append(hit)
                oid = hit[0]
        return ber.encode_message(m.version, self.community, ber.RESPONSE, m.request_id, status, index, vbs)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        m = ber.decode_message(data)
        self.requests.append(m)
        if m.community != self.community:
            return
        assert self.transport is not None
        for d in self.bend(m) or [self.answer(m)]:
            self.transport.sendto(d, addr)


IF_TABLE: list[VarBind] = [
    *[(f"1.3.6.1.2.1.2.2.1.1.{i}", "Integer", i) for i in range(1, 41)],
    *[(f"1.3.6.1.2.1.2.2.1.2.{i}", "OctetString", f"GE0/0/{i}".encode()) for i in range(1, 41)],
    *[(f"1.3.6.1.2.1.2.2.1.10.{i}", "Counter32", 2**32 - i) for i in range(1, 41)],
    *[(f"1.3.6.1.2.1.31.1.1.1.6.{i}", "Counter64", 2**64 - i) for i in range(1, 41)],
    ("1.3.6.1.2.1.4.1.0", "Integer", 2),
]
IF_ROWS = [vb for vb in IF_TABLE if vb[0].startswith("1.3.6.1.2.1.2.")]


@pytest.fixture
async def agent() -> Any:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(lambda: FakeAgent(IF_TABLE), local_addr=("127.0.0.1", 0))
    yield proto
    transport.close()


def session(port: int, **kw: Any) -> FastSession:
    return FastSession("127.0.0.1", port, "public", **{"timeout_s": 0.5, "retries": 1, **kw})


async def test_walk_stops_at_the_subtree_end_in_v2c_and_v1(agent: FakeAgent) -> None:
    for version in ("2c", "1"):
        s = session(agent.port, version=version)
        assert await s.walk("1.3.6.1.2.1.2", max_repetitions=7) == IF_ROWS
        assert await s.walk("1.3.6.1.2.1.31", max_repetitions=7) == [vb for vb in IF_TABLE if ".31." in vb[0]]
        assert await s.walk("1.3.6.1.2.1.4.1.0", max_repetitions=7) == []  # a leaf has no subtree
        await s.close()
    bulk = [r for r in agent.requests if r.pdu_tag == ber.GETBULK]
    assert bulk and all(r.error_index == 7 for r in bulk) and any(r.pdu_tag == ber.GETNEXT for r in agent.requests)


async def test_get_in_v2c_and_v1_answers_missing_oids_alike(agent: FakeAgent) -> None:
    want = [("1.3.6.1.2.1.2.2.1.2.3", "OctetString", b"GE0/0/3"), ("1.3.6.1.2.1.9.9.0", "NoSuchObject", None)]
    for version in ("2c", "1"):
        s = session(agent.port, version=version)
        assert await s.get(["1.3.6.1.2.1.2.2.1.2.3", ".1.3.6.1.2.1.9.9.0"]) == want
        await s.close()


async def test_garbage_late_and_foreign_replies_are_dropped_and_counted(agent: FakeAgent) -> None:
    before = fw.transport_stats()

    def bend(m: ber.Message) -> list[bytes]:
        good = agent.answer(m)
        wrong_id = ber.encode_message(1, b"public", ber.RESPONSE, m.request_id + 1, 0, 0, [("1.3.6.1", "Integer", 1)])
        wrong_community = ber.encode_message(1, b"other", ber.RESPONSE, m.request_id, 0, 0, [("1.3.6.1", "Null", None)])
        return [os.urandom(40), good[:-5], b"\x30\x00", wrong_id, wrong_community, good]

    agent.bend = bend
    s = session(agent.port)
    try:
        assert await s.walk("1.3.6.1.2.1.2", max_repetitions=50) == IF_ROWS
        after = fw.transport_stats()  # read while the shared socket is still open
    finally:
        await s.close()
    n = len(agent.requests)
    assert after["malformed"] - before["malformed"] >= 2 * n  # the random 40 bytes may by chance parse
    assert after["unmatched"] - before["unmatched"] >= 2 * n


async def test_no_answer_is_a_timeout_after_the_retries_with_one_request_id(agent: FakeAgent) -> None:
    agent.bend = lambda m: [b"\x05\x00"]  # never a usable answer
    s = session(agent.port, timeout_s=0.2, retries=2)
    with pytest.raises(SnmpTimeout, match=r"127\.0\.0\.1:\d+: no response in 0\.2 s after 2 retries"):
        await s.get(["1.3.6.1.2.1.4.1.0"])
    assert len(agent.requests) == 3 and len({r.request_id for r in agent.requests}) == 1
    wrong = FastSession("127.0.0.1", agent.port, "not-public", timeout_s=0.1, retries=0)
    with pytest.raises(SnmpTimeout, match="the community and the device.s SNMP ACL"):
        await wrong.walk("1.3.6.1.2.1.2", max_repetitions=10)
    await s.close()
    await wrong.close()


async def test_an_agent_that_loops_is_cut_where_it_repeats(agent: FakeAgent) -> None:
    # rows 1..3, then back to row 2: the walk keeps what came before the repeat, like the pysnmp path
    rows = [(f"1.3.6.1.2.1.2.2.1.1.{i}", "Integer", i) for i in (1, 2, 3, 2, 3)]
    agent.bend = lambda m: [ber.encode_message(1, b"public", ber.RESPONSE, m.request_id, 0, 0, rows)]
    s = session(agent.port)
    assert await s.walk("1.3.6.1.2.1.2", max_repetitions=10) == rows[:3]
    assert len(agent.requests) == 1
    await s.close()


async def test_an_agent_that_never_ends_is_bounded(agent: FakeAgent, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snmp_session, "MAX_WALK_ROWS", 100)

    def bend(m: ber.Message) -> list[bytes]:
        n = int(m.varbinds[0][0].rsplit(".", 1)[1]) if m.varbinds[0][0].count(".") > 6 else 0
        rows = [(f"1.3.6.1.2.1.2.2.1.1.{n + i}", "Integer", 0) for i in range(1, 11)]
        return [ber.encode_message(1, b"public", ber.RESPONSE, m.request_id, 0, 0, rows)]

    agent.bend = bend
    s = session(agent.port)
    with pytest.raises(SnmpError, match="passed 100 rows — the agent seems to loop"):
        await s.walk("1.3.6.1.2.1.2", max_repetitions=10)
    assert len(agent.requests) == 10
    await s.close()


async def test_too_big_halves_the_repetitions(agent: FakeAgent) -> None:
    def bend(m: ber.Message) -> list[bytes] | None:
        if m.pdu_tag == ber.GETBULK and m.error_index > 6:
            return [ber.encode_message(1, b"public", ber.RESPONSE, m.request_id, snmp_session.TOO_BIG, 0, [])]
        return None

    agent.bend = bend
    s = session(agent.port)
    assert await s.walk("1.3.6.1.2.1.2", max_repetitions=50) == IF_ROWS
    assert sorted({r.error_index for r in agent.requests}) == [6, 12, 25, 50]
    await s.close()


async def test_error_status_is_an_error_naming_it(agent: FakeAgent) -> None:
    agent.bend = lambda m: [ber.encode_message(1, b"public", ber.RESPONSE, m.request_id, 5, 1, [])]
    s = session(agent.port)
    with pytest.raises(SnmpError, match="genErr"):
        await s.get(["1.3.6.1.2.1.4.1.0"])
    await s.close()


async def test_sessions_share_one_socket_and_release_it(agent: FakeAgent) -> None:
    sessions = [session(agent.port) for _ in range(20)]
    results = await asyncio.gather(*(s.walk("1.3.6.1.2.1.2", max_repetitions=9) for s in sessions))
    assert all(r == IF_ROWS for r in results)
    assert len(fw._SHARED) == 1
    for s in sessions:
        await s.close()
    assert fw._SHARED == {}
    assert "public" not in repr(sessions[0])


# --- a real net-snmp agent --------------------------------------------------------------------------


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def snmpd_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """net-snmp's agent on 127.0.0.1:<free port>, community ``public``, serving this host's MIB-2."""
    binary = shutil.which("snmpd") or "/usr/sbin/snmpd"
    if not os.access(binary, os.X_OK):
        pytest.fail("snmpd is not installed: apt-get install snmpd", pytrace=False)
    work = tmp_path_factory.mktemp("snmpd")
    port = free_udp_port()
    conf = work / "snmpd.conf"
    conf.write_text(f"agentaddress udp:127.0.0.1:{port}\nrocommunity public 127.0.0.1\n")
    env = {**NET_SNMP_ENV, "SNMP_PERSISTENT_DIR": str(work)}  # keep its state out of /var/lib/snmp
    with open(work / "snmpd.log", "wb") as log:
        proc = subprocess.Popen([binary, "-f", "-Lo", "-C", "-c", str(conf)], stdout=log, stderr=log, env=env)
    try:
        probe = ber.encode_message(1, b"public", ber.GET, 1, 0, 0, [("1.3.6.1.2.1.1.3.0", "Null", None)])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.1)
            for _ in range(100):
                assert proc.poll() is None, (work / "snmpd.log").read_text()
                s.sendto(probe, ("127.0.0.1", port))
                try:
                    s.recv(2000)
                    break
                except TimeoutError:
                    continue
            else:
                pytest.fail(f"snmpd not answering on {port}: {(work / 'snmpd.log').read_text()}")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def snmpbulkwalk(port: int, oid: str, *extra: str) -> list[VarBind]:
    """net-snmp's own walk: numeric OIDs (-On), enums as numbers (-Oe), octets as hex (-Ox), ticks raw (-Ot)."""
    out = subprocess.run(
        ["snmpbulkwalk", "-v2c", "-c", "public", "-On", "-Oe", "-Ox", "-Ot", "-Cr25", *extra, f"127.0.0.1:{port}", oid],
        env=NET_SNMP_ENV,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    rows: list[str] = []
    for line in out.splitlines():
        if line.startswith("."):
            rows.append(line)
        elif rows:  # long hex strings continue on the next lines
            rows[-1] += " " + line.strip()
    got: list[VarBind] = []
    for row in rows:
        name, _, text = row.partition(" = ")
        typ, sep, val = text.partition(": ")
        oid_ = name.lstrip(".")
        if text == '""':
            got.append((oid_, "OctetString", b""))
        elif not sep:
            got.append((oid_, "TimeTicks", int(text)))
        elif typ == "Hex-STRING":
            got.append((oid_, "OctetString", bytes.fromhex(val)))
        elif typ == "STRING":
            got.append((oid_, "OctetString", val.strip('"').encode()))
        elif typ == "OID":
            got.append((oid_, "ObjectIdentifier", val.lstrip(".")))
        elif typ == "IpAddress":
            got.append((oid_, "IpAddress", val))
        else:
            got.append((oid_, {"INTEGER": "Integer", "Timeticks": "TimeTicks"}.get(typ, typ), int(val)))
    return got


def _stable(vbs: list[VarBind]) -> list[VarBind]:
    # Counters move between two walks (our own queries cross the loopback interface)
    return [(o, t, None if t in ("Counter32", "Counter64") else v) for o, t, v in vbs]


@pytest.mark.integration
@pytest.mark.parametrize("subtree", ["1.3.6.1.2.1.2", "1.3.6.1.2.1.31", "1.3.6.1.2.1.25.3.2", "1.3.6.1.2.1.4.20"])
async def test_walks_match_snmpbulkwalk_varbind_for_varbind(snmpd_port: int, subtree: str) -> None:
    s = FastSession("127.0.0.1", snmpd_port, "public")
    try:
        ours = await s.walk(subtree, max_repetitions=25)
    finally:
        await s.close()
    theirs = await asyncio.to_thread(snmpbulkwalk, snmpd_port, subtree)
    assert len(ours) > 3
    assert _stable(ours) == _stable(theirs)
    if subtree == "1.3.6.1.2.1.25.3.2":  # hrDevice indexes such as 196608 take three bytes per arc
        assert any(int(o.rsplit(".", 1)[1]) > 16_383 for o, _, _ in ours)


@pytest.mark.integration
async def test_v1_getnext_walk_and_gets_against_snmpd(snmpd_port: int) -> None:
    v2 = FastSession("127.0.0.1", snmpd_port, "public")
    v1 = FastSession("127.0.0.1", snmpd_port, "public", version="1")
    try:
        a, b = await v2.walk("1.3.6.1.2.1.2.2.1.2", max_repetitions=3), await v1.walk("1.3.6.1.2.1.2.2.1.2")
        assert a == b and all(t == "OctetString" for _, t, _ in a)
        got = await v2.get(["1.3.6.1.2.1.1.2.0", "1.3.6.1.2.1.1.3.0", "1.3.6.1.2.1.1.9999.0", "1.3.6.1.2.1.1.5.1"])
        assert got[0] == ("1.3.6.1.2.1.1.2.0", "ObjectIdentifier", "1.3.6.1.4.1.8072.3.2.10")
        assert got[1][1] == "TimeTicks" and isinstance(got[1][2], int)
        assert [t for _, t, _ in got[2:]] == ["NoSuchObject", "NoSuchInstance"]
        v1got = await v1.get(["1.3.6.1.2.1.1.5.0", "1.3.6.1.2.1.1.9999.0"])
        assert v1got[0] == (await v2.get(["1.3.6.1.2.1.1.5.0"]))[0] and v1got[0][1] == "OctetString"
        assert v1got[1] == ("1.3.6.1.2.1.1.9999.0", "NoSuchObject", None)
        wrong = FastSession("127.0.0.1", snmpd_port, "not-public", timeout_s=0.2, retries=0)
        with pytest.raises(SnmpTimeout):
            await wrong.get(["1.3.6.1.2.1.1.3.0"])
        await wrong.close()
    finally:
        await v2.close()
        await v1.close()


@pytest.mark.integration
async def test_many_concurrent_walks_of_snmpd_agree(snmpd_port: int) -> None:
    sessions = [FastSession("127.0.0.1", snmpd_port, "public") for _ in range(10)]
    try:
        walks = await asyncio.gather(*(s.walk("1.3.6.1.2.1.2.2.1.2", max_repetitions=2) for s in sessions))
    finally:
        for s in sessions:
            await s.close()
    assert len(walks[0]) >= 1 and all(w == walks[0] for w in walks)
