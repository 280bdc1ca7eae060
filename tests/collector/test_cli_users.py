"""``netwatch-collector users …`` (collector/cli_users.py) as a subprocess against a real users.db,
checked through UserDB; the interactive prompt through typer's CliRunner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from collector.users import Session, UserDB

ENTRY = "import sys; from collector.cli_users import users_app; users_app(sys.argv[1:], prog_name='users')"
PW = "Granite-Lantern-42"


class Cli:
    def __init__(self, tmp_path: Path) -> None:
        self.cfg = tmp_path / "collector.yaml"
        self.cfg.write_text("collector: {data_dir: data}\napi: {enabled: false}\n")
        self.db_path = tmp_path / "data" / "users.db"
        self.outputs: list[str] = []

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [sys.executable, "-c", ENTRY, *args, "--config", str(self.cfg)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "160", **(env or {})},
            stdin=subprocess.DEVNULL,
        )
        self.outputs.append(r.stdout + r.stderr)
        return r

    def login(self, name: str, pw: str) -> Session | None:
        db = UserDB(self.db_path)
        try:
            s = db.authenticate(name, pw)
        finally:
            db.close()
        return s if isinstance(s, Session) else None


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def _one_time(out: str, label: str) -> str:
    (line,) = [x for x in out.splitlines() if x.startswith(label)]
    return line.split(": ", 1)[1].strip()


def test_init_once_and_list(cli: Cli) -> None:
    r = cli("list")
    assert r.returncode == 1 and "users init" in r.stdout
    r = cli("init")
    assert r.returncode == 0, r.stderr
    pw = _one_time(r.stdout, "one-time password")
    assert r.stdout.count(pw) == 1
    r2 = cli("init")
    assert r2.returncode == 0 and pw not in r2.stdout and "nothing done" in r2.stdout
    s = cli.login("admin", pw)
    assert s is not None and s.must_change_password
    r = cli("list", "--json")
    (row,) = [orjson.loads(x) for x in r.stdout.splitlines()]
    assert (row["name"], row["role"], row["must_change_password"]) == ("admin", "admin", True)
    assert "password" not in r.stdout.replace("must_change_password", "")
    r = cli("list")
    assert r.returncode == 0 and "admin" in r.stdout and "must change password" in r.stdout


def test_password_from_file_works_and_is_never_printed(cli: Cli, tmp_path: Path) -> None:
    f = tmp_path / "pw.txt"
    f.write_text(PW + "\n")
    r = cli("add", "sec1", "--role", "security", "--password-file", str(f))
    assert r.returncode == 0, r.stdout + r.stderr
    s = cli.login("sec1", PW)
    assert s is not None and s.role == "security" and s.must_change_password
    f.write_text("Another-Secret-77\n")
    r = cli("passwd", "sec1", "--password-file", str(f), "--no-change-required")
    assert r.returncode == 0, r.stdout + r.stderr
    assert cli.login("sec1", PW) is None
    s = cli.login("sec1", "Another-Secret-77")
    assert s is not None and not s.must_change_password
    r = cli("add", "op1", "--role", "operator", "--password-env", "NW_PW", env={"NW_PW": "Env-Secret-Pass-9"})
    assert r.returncode == 0 and cli.login("op1", "Env-Secret-Pass-9") is not None
    r = cli("list", "--json")
    assert {orjson.loads(x)["name"] for x in r.stdout.splitlines()} == {"sec1", "op1"}
    for out in cli.outputs:
        for secret in (PW, "Another-Secret-77", "Env-Secret-Pass-9"):
            assert secret not in out
    raw = b"".join(p.read_bytes() for p in cli.db_path.parent.rglob("*") if p.is_file())  # users.db, audit.db, keys
    assert PW.encode() not in raw and b"Env-Secret-Pass-9" not in raw


def test_generated_initial_password_shown_once(cli: Cli) -> None:
    r = cli("add", "viewer1", "--role", "viewer")
    assert r.returncode == 0, r.stdout + r.stderr
    pw = _one_time(r.stdout, "initial password")
    assert r.stdout.count(pw) == 1
    s = cli.login("viewer1", pw)
    assert s is not None and s.must_change_password


def test_weak_password_refused_without_echo(cli: Cli, tmp_path: Path) -> None:
    f = tmp_path / "weak.txt"
    for weak in ("password123", "op1-Op1-op1-OP1", "Short1-x"):
        f.write_text(weak)
        r = cli("add", "op1", "--role", "operator", "--password-file", str(f))
        assert r.returncode == 2 and "refused" in r.stdout and "密码" in r.stdout
        assert weak not in r.stdout + r.stderr
    assert cli("list").returncode == 1  # nothing was created (the database exists, no user in it)


def test_no_password_on_the_command_line(cli: Cli) -> None:
    for args in (("add", "op1", "--role", "operator", "--password", PW), ("passwd", "op1", PW)):
        r = cli(*args)
        assert r.returncode == 2
    assert not cli.db_path.exists() or cli.login("op1", PW) is None


def test_role_disable_unlock_delete_and_last_admin(cli: Cli, tmp_path: Path) -> None:
    pw = _one_time(cli("init").stdout, "one-time password")
    assert cli("add", "op1", "--role", "operator").returncode == 0
    r = cli("role", "op1", "admin")
    assert r.returncode == 0 and "operator->admin" in r.stdout
    assert cli("role", "op1", "root").returncode == 2
    assert cli("disable", "op1").returncode == 0
    r = cli("disable", "admin")  # op1 is disabled: admin is the last active administrator
    assert r.returncode == 2 and "last active" in r.stdout
    assert cli("enable", "op1").returncode == 0
    assert cli("disable", "admin").returncode == 0
    assert cli.login("admin", pw) is None
    for _ in range(5):
        cli.login("op1", "Wrong-Password-1")
    r = cli("list", "--json")
    rows = {orjson.loads(x)["name"]: orjson.loads(x) for x in r.stdout.splitlines()}
    assert rows["op1"]["locked_until"] and rows["admin"]["disabled"]
    assert cli("unlock", "op1").returncode == 0
    r = cli("list", "--json")
    assert all(orjson.loads(x)["locked_until"] is None for x in r.stdout.splitlines())
    assert cli("delete", "op1").returncode == 2  # needs --yes
    r = cli("delete", "op1", "--yes")  # the last active administrator
    assert r.returncode == 2
    r = cli("disable", "[red]ghost")
    assert r.returncode == 1 and "[red]ghost" in r.stdout  # printed as written


def test_api_token(cli: Cli) -> None:
    assert cli("add", "op1", "--role", "operator").returncode == 0
    r = cli("token", "op1", "--name", "grafana", "--expires", "90d")
    assert r.returncode == 0, r.stdout + r.stderr
    secret = _one_time(r.stdout, "secret")
    assert secret.startswith("nwt_") and r.stdout.count(secret) == 1
    db = UserDB(cli.db_path)
    who = db.token_user(secret)
    db.close()
    assert who is not None and (who.user, who.token_name) == ("op1", "grafana")
    r = cli("tokens", "--json")
    (row,) = [orjson.loads(x) for x in r.stdout.splitlines()]
    assert row["name"] == "grafana" and secret not in r.stdout
    assert cli("token", "op1", "--name", "x", "--expires", "400d").returncode == 2
    assert cli("token", "op1", "--name", "x", "--expires", "soon").returncode == 2
    assert cli("revoke", "op1", "--name", "grafana").returncode == 0
    assert cli("tokens").returncode == 1
    assert secret.encode() not in b"".join(p.read_bytes() for p in cli.db_path.parent.rglob("*") if p.is_file())


def test_password_prompt(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from collector import cli_users

    assert cli("add", "op1", "--role", "operator").returncode == 0
    answers = iter([PW, PW, PW, "Something-Else-1"])
    monkeypatch.setattr(cli_users.getpass, "getpass", lambda prompt="": next(answers))
    runner = CliRunner()
    r = runner.invoke(cli_users.users_app, ["passwd", "op1", "--config", str(cli.cfg)])
    assert r.exit_code == 0, r.output
    assert PW not in r.output and cli.login("op1", PW) is not None
    r = runner.invoke(cli_users.users_app, ["passwd", "op1", "--config", str(cli.cfg)])
    assert r.exit_code == 2 and "differ" in r.output
