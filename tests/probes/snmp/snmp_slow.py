"""A slow SNMP device for tests: a UDP proxy on loopback in front of snmpsim that answers ONE request
at a time, each taking ``delay_s`` (an access switch's weak CPU: requests queue, and a retransmission
queues behind the original like any other request). Two threads, both stopped by ``close()``.
``withhold`` picks requests it swallows unanswered (an agent that times out on one subtree)."""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from collections.abc import Callable

#: requests the device queues before it drops them (a small agent's socket buffer)
QUEUE_MAX = 64


class SlowProxy:
    def __init__(self, upstream_port: int, delay_s: float, withhold: Callable[[bytes], bool] | None = None) -> None:
        self.delay_s = delay_s
        #: requests for which this returns True are read and never answered (may be swapped at any time)
        self.withhold = withhold
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.front.settimeout(0.2)
        self.port = int(self.front.getsockname()[1])
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.bind(("127.0.0.1", 0))
        self.back.connect(("127.0.0.1", upstream_port))
        self.back.settimeout(5.0)
        self._queue: queue.Queue[tuple[bytes, tuple[str, int]] | None] = queue.Queue(QUEUE_MAX)
        self._stop = threading.Event()
        #: requests answered, requests dropped because the queue was full, upstream silences,
        #: requests withheld
        self.answered = 0
        self.dropped = 0
        self.lost = 0
        self.withheld = 0
        self._threads = [
            threading.Thread(target=self._read, name="slow-snmp-read", daemon=True),
            threading.Thread(target=self._serve, name="slow-snmp-serve", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.front.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            withhold = self.withhold
            if withhold is not None and withhold(data):
                self.withheld += 1
                continue
            try:
                self._queue.put_nowait((data, (str(addr[0]), int(addr[1]))))
            except queue.Full:
                self.dropped += 1

    def _serve(self) -> None:
        while not self._stop.is_set():
            item = self._queue.get()
            if item is None:
                return
            data, addr = item
            t0 = time.monotonic()
            try:
                self.back.send(data)
                reply = self.back.recv(65535)
            except OSError:
                self.lost += 1
                continue
            rest = self.delay_s - (time.monotonic() - t0)
            if rest > 0 and self._stop.wait(rest):
                return
            try:
                self.front.sendto(reply, addr)
            except OSError:
                return
            self.answered += 1

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        for t in self._threads:
            t.join(timeout=6.0)
        self.front.close()
        self.back.close()
