"""The receive stage's hand-off queue: bounded in messages and in bytes, one message always let in."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt

from collector.receive import _BoundedQueue


def _msg(size: int) -> mqtt.MQTTMessage:
    m = mqtt.MQTTMessage(topic=b"t")
    m.payload = b"x" * size
    return m


def test_bytes_bound_holds_the_network_thread_until_the_pipeline_takes() -> None:
    q = _BoundedQueue(max_items=100, max_bytes=100)
    q.put(_msg(40))
    q.put(_msg(40))
    third_in = threading.Event()

    def network_thread() -> None:
        q.put(_msg(40))  # 120 > 100: must wait
        third_in.set()

    t = threading.Thread(target=network_thread, daemon=True)
    t.start()
    assert not third_in.wait(0.3)
    assert (q.qsize(), q.bytes) == (2, 80)
    assert q.get(1.0) is not None
    assert third_in.wait(5)
    assert (q.qsize(), q.bytes) == (2, 80)
    t.join(5)


def test_one_message_larger_than_the_bound_still_passes() -> None:
    q = _BoundedQueue(max_items=10, max_bytes=10)
    q.put(_msg(1000))  # alone: let in, or the broker would wait forever
    got = q.get(0.1)
    assert got is not None and len(got.payload) == 1000 and q.bytes == 0
    assert q.get(0.05) is None
