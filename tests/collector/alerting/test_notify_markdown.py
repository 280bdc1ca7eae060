"""Phishing through alerts: agent-supplied label values reach the WeCom and DingTalk robots (a local
recording server) as text, never as a link, a tag or a heading."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from collector.alerting.config import Channel
from collector.alerting.notify import Notifier, md_text
from collector.alerting.rules import render
from collector.alerting.store import AlertStore

sys.path.insert(0, str(Path(__file__).parent))
from e2e_helpers import SECRET, Recorder  # noqa: E402

HOSTILE = {
    "site": "[点此处理](https://evil.example/login)",
    "device": "<a href='http://evil.example'>ups</a>",
    "sensor": "see www.evil.example or HTTPS://EVIL.EXAMPLE/x ![img](http://evil.example/p.png)",
    "rack": "\n### 紧急通知 <https://evil.example>\n`code` *bold* _it_ ~~s~~ |t| #h \\",
}
SUMMARY = ("{site}: {device} on battery ({sensor}) {rack}", "{site}：{device} 市电中断（{sensor}）{rack}")


@pytest.fixture
def rec() -> Iterator[Recorder]:
    r = Recorder()
    yield r
    r.close()


def links_in(markdown: str) -> list[str]:
    """What a markdown renderer (CommonMark + HTML + autolinks) would make clickable or load."""
    out = MarkdownIt("commonmark", {"html": True}).render(markdown)
    low = out.lower()
    return [tag for tag in ("<a ", "<img", "<script") if tag in low] + (
        ["url"] if "http://" in low or "https://" in low or "www." in low else []
    )


def test_md_text_shows_text_and_makes_nothing_clickable() -> None:
    for v in HOSTILE.values():
        assert links_in(md_text(v)) == []
        assert "<h" not in MarkdownIt("commonmark", {"html": True}).render(md_text(v))
    assert md_text("[点此处理](https://evil.example)") == "\\[点此处理\\]\\(hxxps://evil.example\\)"
    assert md_text("a<b & c>d") == "a&lt;b &amp; c&gt;d"
    assert md_text("plain 文本 10.0.0.1 ups-1") == "plain 文本 10.0.0.1 ups-1"


def test_hostile_labels_reach_the_robots_as_text(tmp_path: Path, rec: Recorder) -> None:
    db = tmp_path / "alerts.db"
    store = AlertStore(db)
    now = time.time_ns()
    summary = (render(SUMMARY[0], HOSTILE), render(SUMMARY[1], HOSTILE))
    assert "https://evil.example/login" in summary[0]  # the template put the agent's text in verbatim
    aid = store.open_alert("fp1", "ups_on_battery", HOSTILE, "critical", summary, 1, now)
    store.ack(aid, "[ops](http://evil.example)", "on it")
    aid2 = store.open_alert("fp2", "ups_on_battery", HOSTILE, "warning", summary, 1, now)
    for ch, lang in (("wecom", "zh"), ("dingtalk", "en"), ("wecom-digest", "en")):
        store.enqueue(aid, "repeat", ch, lang, 0.0, now)
        if ch == "wecom-digest":
            store.enqueue(aid2, "firing", ch, lang, 0.0, now)
    store.close()
    channels = {
        "wecom": Channel(wecom_webhook=rec.wecom_url("k1")),
        "dingtalk": Channel(dingtalk_webhook=f"{rec.base}/robot/send?access_token=t1", dingtalk_secret=SECRET),
        "wecom-digest": Channel(wecom_webhook=rec.wecom_url("k2")),
    }
    n = Notifier(db, channels)
    try:
        assert n.run_once(now + 10**9) == 3
    finally:
        n.stop()
    assert rec.bad == []
    posts = {p.key: p.text for p in rec.posts}
    assert set(posts) == {"k1", "t1", "k2"}
    for key, text in posts.items():
        assert links_in(text) == [], (key, text)
        assert "evil.example" in text and "点此处理" in text and "ups" in text  # still shows the text
        headings = MarkdownIt("commonmark", {"html": True}).render(text).count("<h")
        assert headings == (1 if key == "k2" else 0), (key, text)  # only the digest's own heading
    # our own markup is kept: bold severity, and the digest's heading and items
    assert "**[持续告警]**" in posts["k1"] and "ops" in posts["k1"] and "已确认" in posts["k1"]
    assert "**[STILL FIRING]**" in posts["t1"] and "acked by" in posts["t1"]
    assert posts["k2"].startswith("### netwatch: 2 alerts") and "\n- " in posts["k2"]
    html = MarkdownIt("commonmark", {"html": True}).render(posts["k2"])
    assert "<h3>" in html and "<li>" in html and "<strong>" in html
