"""Sending: a thread drains the outbox in alerts.db per channel — grouped, rate-limited (digests
instead of drops), retried with back-off — through apprise or the WeCom/DingTalk robot webhooks.

**Text from agents is never markup.** An alert's summary is a template filled with labels and
values that came from samples (tag values are whatever an agent or a device sent), and an ack
carries a user name. Before such text goes into a message, :func:`md_text`:

1. turns control characters and line breaks into spaces (no injected headings or list items);
2. neutralises URLs: ``http://`` and ``https://`` (any case) become ``hxxp://`` / ``hxxps://``, and
   ``www.`` becomes ``www[.]``, so no robot or mail client makes them clickable;
3. writes ``&``, ``<`` and ``>`` as ``&amp;`` ``&lt;`` ``&gt;`` (the robots' markdown accepts HTML
   such as ``<font>``; a value cannot open a tag);
4. backslash-escapes the markdown metacharacters ``\\ * _ [ ] ( ) # ! ` ~ |``, so ``[text](url)``
   is shown as written, not as a link.

Our own markup (``**[CRITICAL]**``, ``### title``, ``- `` items) is added around the escaped text.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import threading
import time
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson

from collector.alerting.config import Channel
from collector.alerting.store import AlertRow, AlertStore

log = logging.getLogger("netwatch.alerting.notify")

_SEV = {
    "en": {"critical": "CRITICAL", "warning": "WARNING", "info": "INFO"},
    "zh": {"critical": "严重", "warning": "警告", "info": "提示"},
}
_KIND = {
    "en": {"resolved": "RESOLVED", "repeat": "STILL FIRING", "summary": "RECORDED LATE"},
    "zh": {"resolved": "已恢复", "repeat": "持续告警", "summary": "事后补记"},
}


@dataclass(frozen=True, slots=True)
class Message:
    title: str
    body: str  # markdown
    items: int


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_URL = re.compile(r"\b(h)(tt)(ps?)(?=:)|\b(www)\.", re.IGNORECASE)
_MD = re.compile(r"([\\*_\[\]()#!`~|])")


def _defang(m: re.Match[str]) -> str:
    if m[4]:
        return f"{m[4]}[.]"
    return f"{m[1]}{'xx' if m[2].islower() else 'XX'}{m[3]}"


def md_text(value: object) -> str:
    """Agent- or user-supplied text made inert for the robots' markdown (the rule is in the module
    docstring): shown as written, never a link, a tag, a heading or emphasis."""
    text = _CONTROL.sub(" ", str(value))
    text = _URL.sub(_defang, text)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD.sub(r"\\\1", text)


def line(a: AlertRow, kind: str, lang: str) -> str:
    tag = _KIND[lang].get(kind) or _SEV[lang].get(a.severity, a.severity)
    mark = {"resolved": "✅", "summary": "🕘"}.get(kind) or {"critical": "🔴", "warning": "🟠"}.get(a.severity, "🔵")
    ack = ""
    if a.acked_by and kind != "resolved":
        who = md_text(a.acked_by)
        ack = f" (acked by {who})" if lang == "en" else f"（{who} 已确认）"
    return f"{mark} **[{tag}]** {md_text(a.summary(lang))}{ack} #{a.id}"


def compose(items: list[tuple[AlertRow, str]], lang: str) -> Message:
    """One alert: its own message. Several: a digest headed by the counts."""
    if len(items) == 1:
        a, kind = items[0]
        return Message(line(a, kind, lang).replace("**", ""), line(a, kind, lang), 1)
    firing = sum(k not in ("resolved", "summary") for _, k in items)
    resolved = sum(k == "resolved" for _, k in items)
    late = len(items) - firing - resolved
    if lang == "zh":
        tail = f"，{late} 条事后补记" if late else ""
        title = f"netwatch：{len(items)} 条告警（{firing} 条告警中，{resolved} 条已恢复{tail}）"
    else:
        tail = f", {late} recorded late" if late else ""
        title = f"netwatch: {len(items)} alerts ({firing} firing, {resolved} resolved{tail})"
    body = "\n".join([f"### {title}", *(f"- {line(a, k, lang)}" for a, k in items)])
    return Message(title, body, len(items))


# ------------------------------------------------------------------------------------ senders


def _post_json(url: str, payload: Mapping[str, object], timeout_s: float) -> bytes:
    req = urllib.request.Request(
        url, data=orjson.dumps(payload), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=timeout_s) as r:  # noqa: S310 - configured webhook
        body: bytes = r.read()
        return body


def _robot_ok(reply: bytes) -> None:
    try:
        doc = orjson.loads(reply)
    except orjson.JSONDecodeError:
        raise RuntimeError(f"robot replied with something that is not JSON: {reply[:200]!r}") from None
    if isinstance(doc, dict) and doc.get("errcode", 0) != 0:
        raise RuntimeError(f"robot refused the message: errcode {doc.get('errcode')} {doc.get('errmsg', '')}")


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk's robot signature: base64(HMAC-SHA256(secret, "timestamp\\nsecret")), URL-encoded."""
    mac = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return urllib.parse.quote_plus(base64.b64encode(mac).decode())


def send_wecom(webhook: str, msg: Message, timeout_s: float) -> None:
    # WeCom robots cap markdown content at 4096 bytes
    content = msg.body.encode()[:4000].decode(errors="ignore")
    _robot_ok(_post_json(webhook, {"msgtype": "markdown", "markdown": {"content": content}}, timeout_s))


def send_dingtalk(webhook: str, secret: str | None, msg: Message, timeout_s: float) -> None:
    url = webhook
    if secret:
        ts = int(time.time() * 1000)
        url += ("&" if "?" in url else "?") + f"timestamp={ts}&sign={dingtalk_sign(secret, ts)}"
    payload = {"msgtype": "markdown", "markdown": {"title": msg.title[:60], "text": msg.body}}
    _robot_ok(_post_json(url, payload, timeout_s))


def send_apprise(url: str, msg: Message, timeout_s: float) -> None:
    import apprise

    ap = apprise.Apprise()
    if not ap.add(url):
        raise RuntimeError(f"apprise does not understand the URL {url.split('://')[0]}://…")
    if not ap.notify(title=msg.title, body=msg.body, body_format=apprise.NotifyFormat.MARKDOWN):
        raise RuntimeError("apprise could not deliver (see the apprise log line above)")


def _secrets_of(ch: Channel) -> list[str]:
    """The strings an error message must not show: the URL, its query values, userinfo and path
    segments, and the signing secret (whatever can be read now)."""
    out: list[str] = []
    for read in (ch.target, ch.secret):
        try:
            text = read()
        except Exception:  # noqa: S112 - unreadable: nothing of it can leak either
            continue
        if not text:
            continue
        out.append(text)
        parts = urllib.parse.urlsplit(text)
        out += [v for _, v in urllib.parse.parse_qsl(parts.query)]
        out += [seg for seg in parts.path.split("/") if len(seg) >= 8]
        out += [x for x in (parts.username, parts.password, parts.netloc.split("@")[0]) if x]
        if parts.scheme not in ("http", "https", ""):
            out.append(text.split("://", 1)[-1])
    return sorted({x for x in out if len(x) >= 4}, key=len, reverse=True)


def sender_for(ch: Channel) -> Callable[[Message], None]:
    """The channel's sender. Its URL and secret are read at each send (inline, environment or
    file), so a rotated key is used at once; one that cannot be read is a failed send, retried.
    A failure's message (logged, kept in alerts.db) has the channel's secrets masked."""

    def send(m: Message) -> None:
        try:
            if ch.kind == "wecom":
                send_wecom(ch.target(), m, ch.timeout)
            elif ch.kind == "dingtalk":
                send_dingtalk(ch.target(), ch.secret(), m, ch.timeout)
            else:
                send_apprise(ch.target(), m, ch.timeout)
        except Exception as e:
            text = f"{type(e).__name__}: {e}"
            for secret in _secrets_of(ch):
                text = text.replace(secret, "***")
            raise RuntimeError(text) from None

    return send


# ----------------------------------------------------------------------------------- notifier


class Notifier:
    """Drains the outbox. ``run_once(now)`` is the whole policy (tests call it with simulated time);
    ``start()`` runs it on a thread every ``poll_s`` so the collector's writer never waits on a send."""

    def __init__(
        self,
        db_path: Path,
        channels: Mapping[str, Channel],
        *,
        senders: Mapping[str, Callable[[Message], None]] | None = None,
        poll_s: float = 0.2,
    ) -> None:
        self.store = AlertStore(db_path)
        self.channels = dict(channels)
        self.senders = dict(senders) if senders is not None else {n: sender_for(c) for n, c in channels.items()}
        self.poll_s = poll_s
        self.sent: dict[str, deque[int]] = {n: deque() for n in channels}  # send times in the last minute
        self.failing: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.messages_sent = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="netwatch-notifier", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.store.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.run_once(time.time_ns())
            except Exception:  # a bug here must not silence every later alert
                log.exception("notifier pass failed; retrying on the next one")

    def run_once(self, now_ns: int) -> int:
        """Send what is due; returns the number of messages sent."""
        db = self.store.db
        rows = db.execute(
            "SELECT id, alert_id, kind, channel, lang, group_wait_s, created_ns, attempts FROM outbox"
            " WHERE sent_ns IS NULL AND failed IS NULL AND due_ns <= ? ORDER BY id",
            (now_ns,),
        ).fetchall()
        by_channel: dict[tuple[str, str], list[tuple[int, int, str, int, float, int]]] = {}
        for r in rows:
            by_channel.setdefault((r["channel"], r["lang"]), []).append(
                (r["id"], r["alert_id"], r["kind"], r["created_ns"], r["group_wait_s"], r["attempts"])
            )
        sent = 0
        for (channel, lang), items in by_channel.items():
            ch = self.channels.get(channel)
            if ch is None:
                db.execute("UPDATE outbox SET failed='channel no longer configured' WHERE channel=?", (channel,))
                continue
            # the group window opens with the oldest waiting item; everything behind it rides along
            if min(c + int(g * 1e9) for _, _, _, c, g, _ in items) > now_ns:
                continue
            window = self.sent[channel]
            while window and window[0] <= now_ns - 60 * 10**9:
                window.popleft()
            while items and len(window) < ch.per_minute:
                batch, items = items[: ch.max_per_message], items[ch.max_per_message :]
                if self._send(ch, channel, lang, batch, now_ns):
                    window.append(now_ns)
                    sent += 1
                else:
                    break
        return sent

    def _send(
        self, ch: Channel, name: str, lang: str, batch: list[tuple[int, int, str, int, float, int]], now_ns: int
    ) -> bool:
        db = self.store.db
        pairs = []
        for _, alert_id, kind, *_ in batch:
            a = self.store.get(alert_id)
            if a is not None:
                pairs.append((a, kind))
        ids = [b[0] for b in batch]
        marks = ",".join("?" * len(ids))
        if not pairs:
            db.execute(f"UPDATE outbox SET failed='alert gone' WHERE id IN ({marks})", ids)
            return True
        msg = compose(pairs, lang)
        try:
            self.senders[name](msg)
        except Exception as e:  # network, HTTP, robot refusals: all retried
            attempts = max(b[5] for b in batch) + 1
            if name not in self.failing:
                log.warning("channel %s: sending failed (%s); will retry", name, e)
                self.failing.add(name)
            if attempts > ch.retries:
                db.execute(
                    f"UPDATE outbox SET failed=?, attempts=? WHERE id IN ({marks})", (str(e)[:500], attempts, *ids)
                )
                self.store.event(
                    None, now_ns, "notify_failed", f"{name}: {len(ids)} notices after {attempts} attempts: {e}"
                )
            else:
                due = now_ns + int(min(60.0, 2.0**attempts) * 1e9)
                db.execute(f"UPDATE outbox SET attempts=?, due_ns=? WHERE id IN ({marks})", (attempts, due, *ids))
            return False
        if name in self.failing:
            log.info("channel %s: sending works again", name)
            self.failing.discard(name)
        db.execute(f"UPDATE outbox SET sent_ns=?, message_id=? WHERE id IN ({marks})", (now_ns, ids[0], *ids))
        self.messages_sent += 1
        return True
