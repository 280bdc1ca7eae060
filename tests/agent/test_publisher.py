"""The publisher's lanes: live batches at once, the backlog oldest-first under the drain rate."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import paho.mqtt.client as mqtt

from agent import config as agent_config
from agent.publisher import Publisher
from agent.spool import Spool


def _publisher(tmp_path: Path, rate: str) -> tuple[Publisher, list[str]]:
    cfg_file = tmp_path / "a.yaml"
    cfg_file.write_text(f"agent: {{id: a1, site: s1}}\npublish: {{drain_rate: {rate}}}\nmqtt: {{max_inflight: 50}}\n")
    cfg = agent_config.load(cfg_file)
    spool = Spool(tmp_path / "spool.db", max_bytes=10**9, max_age_s=10**6)
    pub = Publisher(cfg, spool)
    sent: list[str] = []
    mids = iter(range(1, 10**6))

    def fake_publish(topic: str, payload: bytes, qos: int = 0, **kw: Any) -> Any:
        sent.append(payload.decode())
        return SimpleNamespace(rc=mqtt.MQTT_ERR_SUCCESS, mid=next(mids))

    pub.client.publish = fake_publish  # type: ignore[method-assign]
    return pub, sent


def test_live_first_then_backlog_oldest_first_within_the_rate(tmp_path: Path) -> None:
    pub, sent = _publisher(tmp_path, "250")
    for i in range(10):  # spooled during an outage: 100 bytes each
        pub.spool.put(lambda seq, i=i: f"old{i}".ljust(100).encode(), 1)
    pub.connected = True
    pub._live_after = pub.spool.stats().last_seq  # what _connected() does on reconnect
    for i in range(2):
        pub.spool.put(lambda seq, i=i: f"new{i}".ljust(100).encode(), 1)
    pub._fill()
    assert [s.strip() for s in sent] == ["new0", "new1", "old0", "old1"]  # 250 B of tokens: two old ones
    assert pub.draining
    pub._bucket.last -= 1.0  # a second later: 250 more bytes
    pub._fill()
    assert [s.strip() for s in sent][4:] == ["old2", "old3"]


def test_unlimited_rate_sends_everything(tmp_path: Path) -> None:
    pub, sent = _publisher(tmp_path, "0")
    for i in range(5):
        pub.spool.put(lambda seq, i=i: f"b{i}".encode(), 1)
    pub.connected = True
    pub._live_after = 5
    pub._fill()
    assert sent == ["b0", "b1", "b2", "b3", "b4"]
    pub._fill()
    assert len(sent) == 5  # in flight: not sent twice


def test_a_connect_arriving_after_stop_is_ignored(tmp_path: Path) -> None:
    """paho's thread may queue the connect hop just before stop(); it runs after the agent closed
    its spool (seen in the soak: 'Cannot operate on a closed database' from _connected)."""
    import asyncio

    pub, _ = _publisher(tmp_path, "0")
    errors: list[dict[str, Any]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        pub._loop = loop
        pub._wake = asyncio.Event()
        pub._call(pub._connected)  # queued by the network thread...
        pub.stop()  # ...the agent stops...
        pub.spool.close()  # ...and closes its spool before the loop runs the hop
        await asyncio.sleep(0.05)

    asyncio.run(main())
    assert errors == [] and not pub.connected
