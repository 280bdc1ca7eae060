"""``netwatch-collector`` commands against a state DB and store written by the real classes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from collector.state import StateDB
from collector.storage.sqlite import SqliteSink
from probes.model import Sample
from protocol.status import Status


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "160"}  # an operator's terminal, not an 80-column pipe
    return subprocess.run(
        [sys.executable, "-m", "collector.cli", *args], capture_output=True, text=True, timeout=60, env=env
    )


@pytest.fixture
def populated(tmp_path: Path) -> Path:
    cfg = tmp_path / "collector.yaml"
    cfg.write_text("collector: {data_dir: data}\napi: {enabled: false}\n")
    now = time.time_ns()
    st = StateDB(tmp_path / "data" / "state.db")
    st.record_status("town-1", Status("online", "town-1", site="township-1", version="0.1.0", config_version="abc"))
    st.record_batch("town-1", "township-1", 5, 3)
    st.record_batch("county-1", "county-1", 9, 2)
    st.save_counters({"stored_samples": 5, "rejected": {"bad_json": 2}})
    st.close()
    sink = SqliteSink(tmp_path / "data" / "metrics.db")
    sink.write(
        [
            Sample(
                "icmp",
                {"agent": "town-1", "site": "township-1", "target": "10.0.0.1"},
                {"rtt_avg_ms": 1.5, "sent": 3},
                now - 10**9,
            ),
            Sample(
                "icmp",
                {"agent": "county-1", "site": "county-1", "target": "10.0.0.2"},
                {"rtt_avg_ms": 2.5, "sent": 3},
                now,
            ),
            Sample(
                "icmp",
                {"agent": "town-1", "site": "township-1", "target": "10.0.0.1"},
                {"rtt_avg_ms": 9.0},
                now - 3600 * 10**9,
            ),
        ]
    )
    sink.close()
    return cfg


def test_agents_json(populated: Path) -> None:
    r = cli("agents", "--config", str(populated), "--json")
    assert r.returncode == 0, r.stderr
    rows = {d["id"]: d for d in map(orjson.loads, r.stdout.splitlines())}
    assert rows["town-1"]["status"] == "online" and rows["town-1"]["samples"] == 3 and rows["town-1"]["last_seq"] == 5
    assert rows["county-1"]["status"] == "unknown" and rows["county-1"]["site"] == "county-1"


def test_agents_table_is_bilingual(populated: Path) -> None:
    r = cli("agents", "--config", str(populated))
    assert r.returncode == 0 and "town-1" in r.stdout and "在线 1" in r.stdout and "online 1" in r.stdout


def test_query_filters_by_agent_and_since(populated: Path) -> None:
    r = cli("query", "icmp", "--config", str(populated), "--agent", "town-1", "--since", "10m", "--json")
    assert r.returncode == 0, r.stderr
    rows = [orjson.loads(x) for x in r.stdout.splitlines()]
    assert [(x["tags"]["target"], x["fields"]) for x in rows] == [("10.0.0.1", {"rtt_avg_ms": 1.5, "sent": 3})]
    assert set(rows[0]) == {"measurement", "tags", "fields", "time"}
    r = cli("query", "icmp", "--config", str(populated), "--since", "2h", "--json")
    assert len(r.stdout.splitlines()) == 3


def test_query_nothing_found_exits_1(populated: Path) -> None:
    assert cli("query", "nosuch", "--config", str(populated), "--json").returncode == 1


def test_stats_json(populated: Path) -> None:
    r = cli("stats", "--config", str(populated), "--json")
    assert orjson.loads(r.stdout) == {"stored_samples": 5, "rejected": {"bad_json": 2}}


def test_bad_config_exit_2_names_file_key_fix(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("storage:\n  influxdb: {url: 'ftp://x', bukcet: b}\n")
    r = cli("agents", "--config", str(cfg))
    assert r.returncode == 2
    out = r.stdout.replace("\n", " ")
    assert str(cfg) in out and "storage.influxdb.bukcet" in out and "did you mean 'bucket'" in out


def test_embedded_broker_refuses_non_loopback(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("embedded_broker: {host: 0.0.0.0}\n")
    r = cli("run", "--config", str(cfg))
    assert r.returncode == 2 and "embedded_broker.host" in r.stdout


def test_help_everywhere() -> None:
    for args in ([], ["run"], ["agents"], ["query"], ["stats"]):
        r = cli(*args, "--help")
        assert r.returncode == 0 and "Usage" in r.stdout


# ---------------------------------------------------------------- hostile text from agents


HOSTILE = ("[/x]", "[link=https://evil.example]x[/link]", "[bold red]", "\x1b]8;;https://evil.example\x1b\\esc")
HYPERLINK = "\x1b]8;"


def hostile_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Like an operator's colour terminal: rich would render markup links as OSC 8 here."""
    env = {**os.environ, "COLUMNS": "400", "FORCE_COLOR": "1", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    return subprocess.run(
        [sys.executable, "-m", "collector.cli", *args], capture_output=True, text=True, timeout=60, env=env
    )


def plain(out: str) -> str:
    """The text with colour codes (CSI ... m) taken out, for looking for the literal strings."""
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", out)


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    cfg = tmp_path / "collector.yaml"
    cfg.write_text("collector: {data_dir: data}\napi: {enabled: false}\n")
    now = time.time_ns()
    st = StateDB(tmp_path / "data" / "state.db")
    st.record_status(
        "evil-1", Status("online", "evil-1", site=HOSTILE[1], version=HOSTILE[0], config_version=HOSTILE[2])
    )
    st.record_batch("evil-1", HOSTILE[1], 1, 1)
    st.record_batch(HOSTILE[0], HOSTILE[2], 1, 1)
    st.save_counters({"stored_samples": 1, "rejected": {HOSTILE[1]: 1}})
    st.close()
    sink = SqliteSink(tmp_path / "data" / "metrics.db")
    sink.write(
        [
            Sample(
                "icmp",
                {"agent": "evil-1", "site": HOSTILE[1], "target": HOSTILE[0], "device": HOSTILE[3]},
                {"rtt_avg_ms": 1.5, "note": HOSTILE[1] + HOSTILE[2]},
                now - 10**9,
            )
        ]
    )
    sink.close()
    from collector.alerting.store import AlertStore

    store = AlertStore(tmp_path / "data" / "alerts.db")
    store.open_alert(
        "fp",
        "hot",
        {"site": HOSTILE[1]},
        "warning",
        (f"{HOSTILE[1]} hot {HOSTILE[3]}", f"{HOSTILE[0]} 过热"),
        29.0,
        now,
    )
    store.close()
    return cfg


def test_agent_supplied_markup_is_printed_not_parsed(hostile: Path) -> None:
    runs = {
        "agents": hostile_cli("agents", "--config", str(hostile)),
        "query": hostile_cli("query", "icmp", "--config", str(hostile), "--since", "1h"),
        "stats": hostile_cli("stats", "--config", str(hostile)),
        "alerts": hostile_cli("alerts", "--config", str(hostile)),
        "history": hostile_cli("alerts", "history", "--config", str(hostile)),
    }
    for name, r in runs.items():
        assert r.returncode == 0, (name, r.stdout, r.stderr)
        assert HYPERLINK not in r.stdout, name
        assert "\x1b]" not in r.stdout and "\x1b\\" not in r.stdout, name  # no OSC from agent text either
        assert "Traceback" not in r.stderr, name
    agents = plain(runs["agents"].stdout)
    for text in HOSTILE[:3]:
        assert text in agents
    query = plain(runs["query"].stdout)
    assert "target=[/x]" in query and "site=[link=https://evil.example]x[/link]" in query
    assert "note=[link=https://evil.example]x[/link][bold red]" in query
    assert "device=\\x1b]8;;https://evil.example\\x1b\\esc" in query
    assert HOSTILE[1] in plain(runs["stats"].stdout)
    assert f"{HOSTILE[1]} hot \\x1b]8;;https://evil.example\\x1b\\esc" in runs["alerts"].stdout
    assert "[/x] 过热" in runs["alerts"].stdout


def test_first_run_makes_admin_with_a_one_time_password_shown_once(tmp_path: Path) -> None:
    import signal

    from services import free_port

    from collector.users import UserDB

    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"collector: {{data_dir: {tmp_path / 'd'}}}\nembedded_broker: {{port: {free_port()}}}\napi: {{enabled: false}}\n"
    )

    def run_once() -> str:
        p = subprocess.Popen(
            [sys.executable, "-m", "collector.cli", "run", "--config", str(cfg)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        # Until the collector says it runs (its start-up log line comes after the first-run
        # account), not a fixed sleep: a loaded machine imports slowly.
        assert p.stdout is not None
        seen: list[str] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            seen.append(line)
            if "stores: " in line:
                break
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=60)
        return "".join(seen) + out

    first = run_once()
    lines = [ln for ln in first.splitlines() if "one-time password" in ln]
    assert len(lines) == 1, first
    password = lines[0].split("one-time password ", 1)[1].split(" ", 1)[0]
    db = UserDB(tmp_path / "d" / "users.db")
    try:
        (admin,) = db.users()
        assert admin.name == "admin" and admin.role == "admin" and admin.must_change_password
        assert db.authenticate("admin", password, "test").__class__.__name__ == "Session"
    finally:
        db.close()
    assert password not in (tmp_path / "d" / "users.db").read_bytes().decode("latin-1")
    assert "one-time password" not in run_once()  # never again


def test_counts_in_titles_are_singular_for_one(populated: Path, tmp_path: Path) -> None:
    """English says "1 agent", "1 sample"; Chinese has no plural and says the number too."""
    r = cli("agents", "--config", str(populated))
    assert r.returncode == 0 and "2 agents / 2 个采集节点" in r.stdout, r.stdout
    one = tmp_path / "one"
    (one / "data").mkdir(parents=True)
    st = StateDB(one / "data" / "state.db")
    st.record_status("town-9", Status("online", "town-9", site="township-9", version="0.1.0", config_version="abc"))
    st.record_unknown("stray-1", 3)
    st.close()
    cfg = one / "collector.yaml"
    cfg.write_text("collector: {data_dir: data}\napi: {enabled: false}\n")
    r = cli("agents", "--config", str(cfg))
    assert r.returncode == 0 and "1 agent / 1 个采集节点" in r.stdout, r.stdout
    r = cli("agents", "unknown", "--config", str(cfg))
    assert r.returncode == 0 and "1 unknown agent, refused / 1 个未知代理（已拒收）" in r.stdout, r.stdout
    r = cli("query", "icmp", "--config", str(populated), "--agent", "town-1", "--since", "10m")
    assert r.returncode == 0 and "icmp — 1 sample since 10m / 1 个样本" in r.stdout, r.stdout
    r = cli("query", "icmp", "--config", str(populated), "--since", "10m")
    assert r.returncode == 0 and "icmp — 2 samples since 10m / 2 个样本" in r.stdout, r.stdout
