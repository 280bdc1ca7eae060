"""``netwatch-collector users``: the centre's accounts, roles and API tokens, managed on the centre's
host by whoever can open users.db (the operating-system user acts with the security officer's rights,
recorded as ``local:<login>``). Passwords come from a prompt, a file or an environment variable —
never from the command line, where ``ps`` and the shell history would keep them.

Exit codes: 0 fine; 1 nothing found; 2 bad config, usage or a refused change; 3 runtime failure.
"""

from __future__ import annotations

import getpass
import os
import sqlite3
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from collector import config as collector_config
from collector.users import ROLES, Event, LocalAdmin, Refused, User, UserDB
from probes.base import parse_duration
from probes.configfile import ConfigError
from probes.output import EXIT_OK, EXIT_PROBLEM, EXIT_RUNTIME, EXIT_USAGE, console, lit, print_json_lines

users_app = typer.Typer(
    add_completion=False,
    invoke_without_command=True,
    help="Users and roles at the centre: list, add, passwords, roles, disable, unlock, API tokens.",
    context_settings={"help_option_names": ["-h", "--help"]},
)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="collector config (YAML): users.db is in its data_dir")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="one JSON object per line, for scripts")]
NameArg = Annotated[str, typer.Argument(help="the user name")]
PasswordFile = Annotated[
    Path | None, typer.Option("--password-file", help="read the password from this file (its first line)")
]
PasswordEnv = Annotated[
    str | None, typer.Option("--password-env", help="read the password from this environment variable")
]


def _path(config: Path | None) -> Path:
    try:
        cfg = collector_config.load(config)
    except ConfigError as e:
        console().print(f"[red]config error[/red] / 配置错误:\n{lit(e)}", soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None
    return cfg.data_dir / "users.db"


class _Audited:
    """The user database with every change, and every refused one, written to the audit log."""

    def __init__(self, db: UserDB, audit: Any) -> None:
        self._db = db
        self._audit = audit

    def _record(self, ev: Event) -> None:
        self._audit.record(
            ev.actor, ev.action, ev.target, ev.result, ev.source or "cli", {"reason": ev.reason} if ev.reason else None
        )

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._db, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kw: Any) -> Any:
            try:
                out = attr(*args, **kw)
            except Refused as e:
                self._record(e.event)
                raise
            ev = out if isinstance(out, Event) else getattr(out, "event", None)
            if isinstance(ev, Event):
                self._record(ev)
            return out

        return call

    def close(self) -> None:
        self._db.close()
        self._audit.close()


def _open(config: Path | None, *, create: bool = True) -> UserDB:
    db = _open_plain(config, create=create)
    from collector.control import open_audit

    return _Audited(db, open_audit(collector_config.load(config)))  # type: ignore[return-value]  # same interface


def _open_plain(config: Path | None, *, create: bool = True) -> UserDB:
    path = _path(config)
    if not create and not path.exists():
        console().print(
            f"no user database at {lit(path)}: run `netwatch-collector users init` / 尚无用户数据库", soft_wrap=True
        )
        raise typer.Exit(EXIT_PROBLEM)
    try:
        return UserDB(path)
    except (sqlite3.Error, OSError) as e:
        console().print(f"[red]cannot open {lit(path)}[/red] / 无法打开: {lit(e)}", soft_wrap=True)
        raise typer.Exit(EXIT_RUNTIME) from None


def _me() -> LocalAdmin:
    try:
        return LocalAdmin(getpass.getuser())
    except Exception:  # no USER and no passwd entry (a bare container): the uid still says who
        return LocalAdmin(f"uid{os.getuid()}")


def _usage(message: str) -> typer.Exit:
    console().print(f"[red]{message}[/red]", soft_wrap=True)
    return typer.Exit(EXIT_USAGE)


def _password(file: Path | None, env: str | None, *, prompt: bool, name: str) -> str | None:
    """The password from the one source given; ``None`` when none is (and no prompt is asked for)."""
    if file is not None and env is not None:
        raise _usage("give --password-file or --password-env, not both / 只能指定一种密码来源")
    if file is not None:
        try:
            # only the line end goes: spaces may be part of a password
            text = file.read_text(encoding="utf-8").split("\n", 1)[0].rstrip("\r")
        except (OSError, UnicodeDecodeError) as e:
            raise _usage(f"cannot read {lit(file)} / 无法读取: {lit(e)}") from None
        if not text:
            raise _usage(f"{lit(file)} is empty / 文件为空")
        return text
    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise _usage(f"environment variable {lit(env)} is not set or empty / 环境变量未设置")
        return value
    if not prompt:
        return None
    first = getpass.getpass(f"new password for {name} / 新密码: ")
    if getpass.getpass("again / 再次输入: ") != first:
        raise _usage("the two passwords differ / 两次输入的密码不一致")
    return first


def _refused(e: Refused) -> typer.Exit:
    console().print(f"[red]refused[/red] / 已拒绝: {lit(e)}", soft_wrap=True)
    return typer.Exit(EXIT_PROBLEM if e.event.reason in ("no_such_user", "no_such_token") else EXIT_USAGE)


def _when(ns: int | None) -> str:
    return datetime.fromtimestamp(ns / 1e9).strftime("%Y-%m-%d %H:%M") if ns else "—"


def _status(user: User, now_ns: int) -> str:
    if user.disabled:
        return "disabled / 已停用"
    if user.locked_until_ns and user.locked_until_ns > now_ns:
        return f"locked until {_when(user.locked_until_ns)} / 已锁定"
    if user.must_change_password:
        return "must change password / 须修改密码"
    return "active / 正常"


def _say(text: str) -> None:
    # names in the text went through lit(): printed as written, never taken for markup
    console().print(text, soft_wrap=True)


def _print_once(label: str, secret: str) -> None:
    # plain echo, not rich: nothing in a secret may be taken for markup or wrapped
    typer.echo(f"{label}: {secret}")
    typer.echo("shown once only: it is not stored and cannot be shown again / 仅显示一次，不会保存")


@users_app.callback()
def users(ctx: typer.Context, config: ConfigOpt = None, json: JsonOpt = False) -> None:
    """List the users (the default)."""
    if ctx.invoked_subcommand is not None:
        return
    list_(config, json)


@users_app.command()
def init(config: ConfigOpt = None) -> None:
    """First start: when there is no user, create `admin` with a one-time password, shown once here.
    Then add the security officer: `users add NAME --role security`."""
    db = _open(config)
    try:
        pw = db.ensure_first_admin()
    finally:
        db.close()
    if pw is None:
        typer.echo("users exist already: nothing done / 已有用户，未做更改")
        raise typer.Exit(EXIT_OK)
    typer.echo("created user admin (role admin); the password must be changed at first login / 已创建 admin")
    _print_once("one-time password / 一次性密码", pw)


@users_app.command("list")
def list_(config: ConfigOpt = None, json: JsonOpt = False) -> None:
    """Every user: role, status (active, locked, disabled, must change password), last login."""
    db = _open(config, create=False)
    try:
        rows = db.users()
    finally:
        db.close()
    if json:
        print_json_lines([r.to_dict() for r in rows])
        raise typer.Exit(EXIT_OK if rows else EXIT_PROBLEM)
    from rich.table import Table

    now = time.time_ns()
    t = Table(title=f"{len(rows)} users / 个用户")
    for col in ("name", "role", "status", "failed logins", "last login", "changed"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(
            lit(r.name), lit(r.role), _status(r, now), str(r.failed_logins), _when(r.last_login_ns), _when(r.changed_ns)
        )
    console().print(t)
    if not rows:
        typer.echo("no users: run `netwatch-collector users init` / 尚无用户")
    raise typer.Exit(EXIT_OK if rows else EXIT_PROBLEM)


@users_app.command()
def add(
    name: NameArg,
    role: Annotated[str, typer.Option("--role", "-r", help=f"one of: {', '.join(ROLES)}")],
    password_file: PasswordFile = None,
    password_env: PasswordEnv = None,
    prompt: Annotated[
        bool, typer.Option("--prompt", help="type the initial password (default: one is generated)")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Add a user. Without a password source a strong one is generated and shown once; either way
    the user must change it at first login."""
    pw = _password(password_file, password_env, prompt=prompt, name=name)
    db = _open(config)
    try:
        added = db.add_user(_me(), name, role, pw)
    except Refused as e:
        raise _refused(e) from None
    finally:
        db.close()
    _say(f"added {lit(name)} as {lit(role)} / 已添加用户")
    if added.password:
        _print_once("initial password / 初始密码", added.password)


@users_app.command()
def passwd(
    name: NameArg,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = None,
    generate: Annotated[bool, typer.Option("--generate", help="generate one and show it once")] = False,
    keep: Annotated[
        bool, typer.Option("--no-change-required", help="the user need not change it at next login")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Set a user's password (asked for twice unless a file, a variable or --generate gives it); ends
    their sessions and lifts a lockout."""
    from collector.users import generate_password

    if generate and (password_file is not None or password_env is not None):
        raise _usage("--generate or a password source, not both / 不能同时指定")
    pw = generate_password(name) if generate else _password(password_file, password_env, prompt=True, name=name)
    if pw is None:  # not reached: with prompt=True there is always one
        raise _usage("no password given / 未提供密码")
    db = _open(config, create=False)
    try:
        db.set_password(_me(), name, pw, must_change=not keep)
    except Refused as e:
        raise _refused(e) from None
    finally:
        db.close()
    _say(
        f"password of {lit(name)} set / 密码已设置" + ("" if keep else "; to be changed at next login / 下次登录须修改")
    )
    if generate:
        _print_once("password / 密码", pw)


@users_app.command()
def role(
    name: NameArg,
    new_role: Annotated[str, typer.Argument(metavar="ROLE", help=f"one of: {', '.join(ROLES)}")],
    config: ConfigOpt = None,
) -> None:
    """Give a user another role (it applies to their open sessions at once)."""
    db = _open(config, create=False)
    try:
        ev = db.set_role(_me(), name, new_role)
    except Refused as e:
        raise _refused(e) from None
    finally:
        db.close()
    _say(f"{lit(name)}: role {lit(ev.reason)} / 角色已修改")


@users_app.command()
def disable(name: NameArg, config: ConfigOpt = None) -> None:
    """Disable a user: their sessions end, their API tokens stop working."""
    _toggle(name, True, config)


@users_app.command()
def enable(name: NameArg, config: ConfigOpt = None) -> None:
    """Enable a disabled user again."""
    _toggle(name, False, config)


def _toggle(name: str, disabled: bool, config: Path | None) -> None:
    db = _open(config, create=False)
    try:
        db.set_disabled(_me(), name, disabled)
    except Refused as e:
        raise _refused(e) from None
    finally:
        db.close()
    _say(f"{lit(name)} disabled / 已停用" if disabled else f"{lit(name)} enabled / 已启用")


@users_app.command()
def unlock(name: NameArg, config: ConfigOpt = None) -> None:
    """End a lockout after failed logins now rather than when it runs out."""
    db = _open(config, create=False)
    try:
        db.unlock(_me(), name)
    except Refused as e:
        raise _refused(e) from None
    finally:
        db.close()
    _say(f"{lit(name)} unlocked / 已解锁")


@users_app.command()
def delete(
    name: NameArg,
    yes: Annotated[bool, typer.Option("--yes", help="really: the user, their sessions and tokens go")] = False,
    config: ConfigOpt = None,
) -> None:
    """Delete a user with their sessions and API tokens (disabling keeps the account for the record)."""
    if not yes:
        raise _usage("deleting needs --yes (or disable the user instead) / 删除需加 --yes")
    db = _open(config, create=False)
    try:
        db.delete_user(_me(), name)
    except Refused as e:
        raise _refused(e) from None
    finally:
        db.close()
    _say(f"{lit(name)} deleted / 已删除")


@users_app.command()
def token(
    name: NameArg,
    token_name: Annotated[str, typer.Option("--name", "-n", help="what the token is for, e.g. grafana")],
    expires: Annotated[str, typer.Option("--expires", help="valid for, e.g. 90d (at most 366d)")] = "90d",
    config: ConfigOpt = None,
) -> None:
    """Make an API token for a user's scripts; the secret is shown once."""
    try:
        seconds = parse_duration(expires)
    except ValueError as e:
        raise _usage(f"--expires: {lit(e)}") from None
    db = _open(config, create=False)
    try:
        new = db.create_token(_me(), name, token_name, seconds)
    except Refused as e:
        raise _refused(e) from None
    finally:
        db.close()
    _say(f"token {lit(token_name)} of {lit(name)}, valid until {_when(new.expires_ns)} / 令牌已创建")
    _print_once("secret / 密钥", new.secret)


@users_app.command()
def tokens(
    name: Annotated[str | None, typer.Argument(help="only this user's")] = None,
    config: ConfigOpt = None,
    json: JsonOpt = False,
) -> None:
    """API tokens (names and dates; the secrets are not kept)."""
    db = _open(config, create=False)
    try:
        rows = db.tokens(name)
    finally:
        db.close()
    if json:
        print_json_lines([r.to_dict() for r in rows])
    else:
        for r in rows:
            _say(
                f"{lit(r.user)}/{lit(r.name)}  created {_when(r.created_ns)}  expires {_when(r.expires_ns)}"
                f"  last used {_when(r.last_used_ns)}"
            )
        if not rows:
            typer.echo("no API tokens / 无令牌")
    raise typer.Exit(EXIT_OK if rows else EXIT_PROBLEM)


@users_app.command()
def revoke(
    name: NameArg,
    token_name: Annotated[str, typer.Option("--name", "-n", help="the token's name")],
    config: ConfigOpt = None,
) -> None:
    """Revoke an API token now."""
    db = _open(config, create=False)
    try:
        db.revoke_token(_me(), name, token_name)
    except Refused as e:
        raise _refused(e) from None
    finally:
        db.close()
    _say(f"token {lit(token_name)} of {lit(name)} revoked / 令牌已撤销")
