"""The agent CLI's operator text in Chinese or English: the catalogue is complete both ways, and
--lang or the locale picks the language of check, once, status, diag and discover."""

from __future__ import annotations

import re
import socket
import string
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli_app import app
from agent.messages import MESSAGES, from_locale

CJK = re.compile("[\u4e00-\u9fff]")


def fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


@pytest.mark.parametrize("key", sorted(MESSAGES))
def test_every_message_has_both_languages_with_the_same_placeholders(key: str) -> None:
    en, zh = MESSAGES[key]
    assert en.strip() and zh.strip()
    assert fields(en) == fields(zh), key
    assert not CJK.search(en), key
    # a Chinese text is Chinese, unless it is only a name or a placeholder (e.g. "{host} -> {addrs}")
    assert CJK.search(zh) or not re.sub(r"\{[a-z_]+\}|[\W_]", "", zh), key


@pytest.mark.parametrize(
    ("env", "lang"),
    [
        ({"LANG": "zh_CN.UTF-8"}, "zh"),
        ({"LANG": "zh_TW.UTF-8"}, "zh"),
        ({"LANG": "en_US.UTF-8"}, "en"),
        ({"LANG": "C.UTF-8"}, "both"),
        ({}, "both"),
        ({"LANG": "en_US.UTF-8", "LC_ALL": "zh_CN.UTF-8"}, "zh"),  # LC_ALL wins, as in POSIX
        ({"LANG": "zh_CN.UTF-8", "LC_MESSAGES": "en_GB.UTF-8"}, "en"),
        ({"LANG": "de_DE.UTF-8"}, "both"),
    ],
)
def test_language_from_the_locale(env: dict[str, str], lang: str) -> None:
    assert from_locale(env) == lang


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    with socket.socket() as s:  # a port nothing listens on: the broker is down
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    p = tmp_path / "agent.yaml"
    p.write_text(
        "agent: {id: town-1, site: township-1}\n"
        f"mqtt: {{host: 127.0.0.1, port: {closed}}}\n"
        f"spool: {{path: {tmp_path / 'none' / 'spool.db'}}}\n"
        "probes:\n  - {type: tcp, name: dead-port, host: 127.0.0.1, port: 1, timeout: 1s}\n"
    )
    return p


def run(*args: str, lang_env: str = "C.UTF-8") -> tuple[int, str]:
    env = {"LC_ALL": "", "LC_MESSAGES": "", "LANG": lang_env}
    r = CliRunner().invoke(app, list(args), env=env)
    return r.exit_code, " ".join(r.output.split())


def test_check_in_each_language(cfg: Path) -> None:
    code, zh = run("check", "-c", str(cfg), "--lang", "zh")
    assert code == 0 and "配置有效" in zh and "代理 town-1，站点 township-1" in zh and "1 个探测" in zh
    assert "config OK" not in zh
    code, en = run("check", "-c", str(cfg), "--lang", "en")
    assert code == 0 and "config OK" in en and "agent town-1 at site township-1" in en and "配置" not in en
    # from the locale, and --lang over it
    assert "配置有效" in run("check", "-c", str(cfg), lang_env="zh_CN.UTF-8")[1]
    assert "配置有效" not in run("check", "-c", str(cfg), "--lang", "en", lang_env="zh_CN.UTF-8")[1]
    both = run("check", "-c", str(cfg))[1]
    assert "config OK / 配置有效" in both


def test_once_status_and_config_errors_follow_the_language(cfg: Path, tmp_path: Path) -> None:
    code, out = run("once", "-c", str(cfg), "--lang", "zh")
    assert code == 1 and "正常 0 · 降级 0 · 故障 1" in out and "degraded" not in out
    code, out = run("once", "-c", str(cfg), "--lang", "en")
    assert code == 1 and "ok 0 · degraded 0 · down 1" in out and "故障" not in out
    code, out = run("status", "-c", str(cfg), lang_env="zh_CN.UTF-8")
    assert code == 0 and "尚无缓存（代理还没有运行过）" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("agent: {id: town-1}\n")
    code, out = run("check", "-c", str(bad), "--lang", "zh")
    assert code == 2 and "配置错误" in out and "config error" not in out


def test_diag_in_chinese_only(cfg: Path) -> None:
    code, out = run("diag", "-c", str(cfg), "--lang", "zh", "--timeout", "1s", lang_env="en_US.UTF-8")
    assert code == 1  # the broker is down, and a dead port
    assert "服务器 TCP 连接" in out and "TCP 被拒绝" in out and "先处理第一个" in out
    assert "dead-port" in out
    assert "first thing to check" not in out and "broker TCP" not in out


def test_an_unknown_language_is_a_usage_error(cfg: Path) -> None:
    code, out = run("check", "-c", str(cfg), "--lang", "fr")
    assert code == 2 and "zh, en or both" in out
