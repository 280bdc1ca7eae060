"""Channel secrets: from the environment or a file, never shown by repr/str, config errors or
send failures; env and file sources work end-to-end through the notifier to recording robots."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector import config as collector_config
from collector.alerting.config import Channel, redact_url
from collector.alerting.notify import Notifier
from collector.alerting.store import AlertStore
from probes.configfile import ConfigError

sys.path.insert(0, str(Path(__file__).parent))
from e2e_helpers import SECRET, Recorder  # noqa: E402

RULES = Path(__file__).parents[3] / "configs" / "rules" / "default.yaml"
WECOM_KEY = "693axxx6-7aoc-4bc4-97a0-0ec2sifa5aaa"
DING_TOKEN = "d1ng7ok3nABCDEF0123456789"
USERPASS = "s3cretpass"
SECRETS = (WECOM_KEY, DING_TOKEN, SECRET, USERPASS, "TOKENonly12345")


@pytest.fixture
def rec() -> Iterator[Recorder]:
    r = Recorder()
    yield r
    r.close()


def inline_channels() -> list[Channel]:
    return [
        Channel(wecom_webhook=f"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={WECOM_KEY}"),
        Channel(
            dingtalk_webhook=f"https://oapi.dingtalk.com/robot/send?access_token={DING_TOKEN}", dingtalk_secret=SECRET
        ),
        Channel(url=f"dingtalk://{SECRET}@{DING_TOKEN}"),
        Channel(url=f"wecombot://{WECOM_KEY}"),
        Channel(url=f"json://ops:{USERPASS}@gateway.example/sms/{DING_TOKEN}"),
        Channel(url=f"https://hooks.example/services/TOKENonly12345/{WECOM_KEY}"),
    ]


def test_repr_and_str_show_no_secret() -> None:
    for ch in inline_channels():
        for text in (repr(ch), str(ch), f"{ch}", repr([ch]), repr({"c": ch})):
            for s in SECRETS:
                assert s not in text, text
    r = repr(inline_channels()[0])
    assert "qyapi.weixin.qq.com/cgi-bin/webhook/send?key=***" in r and "timeout=10.0" in r
    assert redact_url(f"https://u:{USERPASS}@h.example:8443/a?x=1&y=2") == "https://***@h.example:8443/a?x=***&y=***"
    assert redact_url(f"wecombot://{WECOM_KEY}") == "wecombot://***"


BAD_CHANNELS = [
    # two sources for one thing
    f"url: 'wecombot://{WECOM_KEY}', url_env: X",
    # two kinds
    f"url: 'wecombot://{WECOM_KEY}', wecom_webhook: 'https://h/x?key={WECOM_KEY}'",
    # not an apprise URL
    f"url: '{WECOM_KEY}'",
    # a robot webhook that is not http(s)
    f"wecom_webhook: 'ftp://h/cgi-bin/webhook/send?key={WECOM_KEY}'",
    f"dingtalk_webhook: 'gopher://{DING_TOKEN}@h/'",
    # a secret where it does not belong, and wrong types beside secrets
    f"wecom_webhook: 'https://h/x?key={WECOM_KEY}', dingtalk_secret: '{SECRET}'",
    f"dingtalk_webhook: 'https://h/robot/send?access_token={DING_TOKEN}', dingtalk_secret: '{SECRET}', retries: many",
    f"url: ['wecombot://{WECOM_KEY}']",
    f"wecom_webhook: {{key: '{WECOM_KEY}'}}",
    f"url: 'wecombot://{WECOM_KEY}', urll: 'dingtalk://{SECRET}@{DING_TOKEN}'",
    f"wecom_webhook: 'https://h/x?key={WECOM_KEY}', timeout: soon",
    "wecom_webhook_env: NETWATCH_TEST_UNSET_VARIABLE",
    "wecom_webhook_file: /nonexistent/netwatch/wecom.url",
]


@pytest.mark.parametrize("channel", BAD_CHANNELS)
def test_config_errors_show_no_secret(tmp_path: Path, channel: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NETWATCH_TEST_UNSET_VARIABLE", raising=False)
    cfg = tmp_path / "collector.yaml"
    cfg.write_text(
        f"collector: {{id: c, data_dir: {tmp_path / 'data'}}}\napi: {{enabled: false}}\n"
        f"alerting:\n  rules: {RULES}\n  channels:\n    oncall: {{{channel}}}\n"
    )
    with pytest.raises(ConfigError) as e:
        collector_config.load(cfg)
    message = str(e.value)
    assert "alerting.channels.oncall" in message
    for s in SECRETS:
        assert s not in message, message


def _enqueue(db: Path, channels: list[str], now: int) -> None:
    store = AlertStore(db)
    aid = store.open_alert("fp", "hot", {"site": "t1"}, "warning", ("t1 hot", "t1 过热"), 29.0, now)
    for c in channels:
        store.enqueue(aid, "firing", c, "en", 0.0, now)
    store.close()


def test_env_and_file_sources_end_to_end(tmp_path: Path, rec: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NW_WECOM", rec.wecom_url("from-env"))
    monkeypatch.setenv("NW_DING_SECRET", SECRET)
    hook = tmp_path / "ding.url"
    hook.write_text(f"{rec.base}/robot/send?access_token=from-file\n")
    url = tmp_path / "apprise.url"
    url.write_text(f"json://127.0.0.1:{rec.port}/hook-from-file\n")
    cfg = tmp_path / "collector.yaml"
    cfg.write_text(
        f"collector: {{id: c, data_dir: {tmp_path / 'data'}}}\napi: {{enabled: false}}\n"
        f"alerting:\n  rules: {RULES}\n  channels:\n"
        "    w: {wecom_webhook_env: NW_WECOM}\n"
        f"    d: {{dingtalk_webhook_file: {hook}, dingtalk_secret_env: NW_DING_SECRET}}\n"
        f"    a: {{url_file: {url}}}\n"
        "  routes: [{channels: [w, d, a], group_wait: 0s}]\n"
    )
    loaded = collector_config.load(cfg)
    assert loaded.alerting is not None
    channels = loaded.alerting.channels
    assert {n: c.kind for n, c in channels.items()} == {"w": "wecom", "d": "dingtalk", "a": "apprise"}
    db = tmp_path / "alerts.db"
    now = time.time_ns()
    _enqueue(db, ["w", "d", "a"], now)
    n = Notifier(db, channels)
    try:
        assert n.run_once(now + 10**9) == 3
        # a rotated key is picked up without a restart
        monkeypatch.setenv("NW_WECOM", rec.wecom_url("rotated"))
        _enqueue(db, ["w"], now + 2 * 10**9)
        assert n.run_once(now + 3 * 10**9) == 1
    finally:
        n.stop()
    assert rec.bad == []  # the DingTalk signature made with the secret from the environment checks out
    assert {p.key for p in rec.posts} == {"from-env", "from-file", "/hook-from-file", "rotated"}


def test_send_failures_show_no_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    closed = s.getsockname()[1]
    s.close()
    monkeypatch.setenv("NW_DING_SECRET", SECRET)
    monkeypatch.setenv("NW_GONE", "x")
    channels = {
        "w": Channel(wecom_webhook=f"http://127.0.0.1:{closed}/cgi-bin/webhook/send?key={WECOM_KEY}", retries=0),
        "bad": Channel(wecom_webhook=f"http://127.0.0.1:{closed}/x y?key={WECOM_KEY}", retries=0),  # InvalidURL
        "d": Channel(
            dingtalk_webhook=f"http://127.0.0.1:{closed}/robot/send?access_token={DING_TOKEN}",
            dingtalk_secret_env="NW_DING_SECRET",
            retries=0,
        ),
        "gone": Channel(wecom_webhook_env="NW_GONE", retries=0),
    }
    db = tmp_path / "alerts.db"
    now = time.time_ns()
    _enqueue(db, list(channels), now)
    monkeypatch.delenv("NW_GONE")  # unset after load: the send fails and says which variable
    n = Notifier(db, channels)
    try:
        assert n.run_once(now + 10**9) == 0
        failed = [r[0] for r in n.store.db.execute("SELECT failed FROM outbox").fetchall()]
        events = [r["detail"] for r in n.store.history(0)]
    finally:
        n.stop()
    assert len(failed) == 4 and all(failed)
    assert any("NW_GONE" in f for f in failed)
    for text in failed + events:
        for sec in SECRETS:
            assert sec not in text, text
