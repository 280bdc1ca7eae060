"""The agent CLI's operator text in English and Chinese: one catalogue, the language chosen by
``--lang`` or the locale (``LC_ALL``, ``LC_MESSAGES``, ``LANG``). A C/POSIX or unknown locale gets
both, side by side, as the field kits always printed. No gettext build step: a dict is enough for
a few dozen lines, and a test checks every entry has both languages with the same placeholders."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Literal

import typer

Lang = Literal["en", "zh", "both"]
LANGS: tuple[Lang, ...] = ("en", "zh", "both")

#: key -> (English, Chinese); ``{name}`` placeholders are filled by :func:`t`.
MESSAGES: dict[str, tuple[str, str]] = {
    # check / once / status
    "config_ok": ("config OK", "配置有效"),
    "config_error": ("config error", "配置错误"),
    "at_site": ("agent {agent} at site {site}", "代理 {agent}，站点 {site}"),
    "n_probes": ("{n} probes", "{n} 个探测"),
    "no_tls": ("no TLS", "未加密"),
    "broker_line": ("broker {broker} {tls}{user}; spool {spool}", "消息服务器 {broker} {tls}{user}；缓存 {spool}"),
    "user": (", user {user}", "，用户 {user}"),
    "summary": (
        "ok {ok} · degraded {degraded} · down {down}",
        "正常 {ok} · 降级 {degraded} · 故障 {down}",
    ),
    "no_spool": ("no spool at {path} yet (the agent has not run)", "{path} 尚无缓存（代理还没有运行过）"),
    # diag: section names
    "chk_config": ("config", "配置"),
    "chk_clock": ("clock", "时钟"),
    "chk_disk": ("disk", "磁盘"),
    "chk_spool": ("spool", "缓存"),
    "chk_dns": ("broker DNS", "服务器域名解析"),
    "chk_tcp": ("broker TCP", "服务器 TCP 连接"),
    "chk_tls": ("broker TLS", "服务器 TLS 握手"),
    "chk_cert": ("broker certificate", "服务器证书"),
    "chk_auth": ("broker login", "服务器登录"),
    "chk_acked": ("last acknowledged batch", "最后确认的批次"),
    "chk_device": ("device", "设备"),
    "diag_title": ("diagnosis of {agent} @ {site}", "{agent} @ {site} 诊断"),
    "diag_all_ok": ("all well", "一切正常"),
    "diag_problems": ("{n} problem(s): fix the first one first", "{n} 个问题：先处理第一个"),
    "st_ok": ("ok", "正常"),
    "st_warn": ("warning", "警告"),
    "st_fail": ("FAIL", "失败"),
    "st_skip": ("skipped", "跳过"),
    "col_check": ("check", "检查项"),
    "col_result": ("result", "结果"),
    "col_detail": ("detail", "详情"),
    "col_fix": ("first thing to check", "首先检查"),
    # diag: findings
    "config_invalid": ("{path}: not valid", "{path}：无效"),
    "config_valid": ("{path}: valid, {n} probes", "{path}：有效，{n} 个探测"),
    "fix_config": ("correct the keys named above, then run check again", "按上面指出的键修改，再运行 check"),
    "clock_synced": (
        "offset {offset_ms} ms from {source} (its time server)",
        "与 {source} 的时间服务器相差 {offset_ms} 毫秒",
    ),
    "clock_off": (
        "offset {offset_ms} ms from {source}: too far off",
        "与 {source} 相差 {offset_ms} 毫秒：偏差过大",
    ),
    "clock_unsynced": ("{source} runs but is not synchronised", "{source} 在运行但未同步"),
    "clock_unknown": (
        "no time daemon answers (chrony, timesyncd, ntpd) and the broker gives no time over MQTT: offset unknown;"
        " checked only that the clock lies inside the broker certificate's validity",
        "没有时间同步服务应答（chrony、timesyncd、ntpd），MQTT 服务器也不提供时间：偏差未知；"
        "只检查了时钟是否在服务器证书的有效期内",
    ),
    "clock_unknown_plain": (
        "no time daemon answers (chrony, timesyncd, ntpd) and the broker gives no time over MQTT: offset unknown",
        "没有时间同步服务应答（chrony、timesyncd、ntpd），MQTT 服务器也不提供时间：偏差未知",
    ),
    "clock_before_cert": (
        "the clock ({now}) is before the broker certificate's start ({start}): this node's clock is wrong",
        "本机时钟（{now}）早于服务器证书生效时间（{start}）：本机时钟错误",
    ),
    "fix_clock": (
        "set the time (date -s, or let chrony/timesyncd reach a time server) — TLS fails with a wrong clock",
        "校准时间（date -s，或让 chrony/timesyncd 连上时间服务器）——时钟错误时 TLS 会失败",
    ),
    "fix_clock_daemon": (
        "install and enable chrony or systemd-timesyncd with the centre's time server",
        "安装并启用 chrony 或 systemd-timesyncd，指向中心的时间服务器",
    ),
    "disk_ok": ("{free} free at {path}", "{path} 可用 {free}"),
    "disk_low": (
        "{free} free at {path}: less than the spool may grow to ({need} more)",
        "{path} 仅剩 {free}：不够缓存增长（还需 {need}）",
    ),
    "disk_full": ("only {free} free at {path}", "{path} 仅剩 {free}"),
    "disk_readonly": ("{path} is not writable", "{path} 不可写"),
    "fix_disk": (
        "free space on that file system, or lower spool.max_bytes",
        "清理该文件系统的空间，或调小 spool.max_bytes",
    ),
    "fix_disk_rw": (
        "check the file system is mounted read-write and owned by the agent's user",
        "检查文件系统以读写方式挂载，且属于代理的运行用户",
    ),
    "spool_none": ("no spool at {path} yet: the agent has not run here", "{path} 尚无缓存：代理还没有在此运行"),
    "spool_state": (
        "{depth} batches waiting ({size}), oldest {age}; {dropped} dropped so far",
        "{depth} 个批次待发送（{size}），最早的 {age}；累计丢弃 {dropped} 个",
    ),
    "spool_backlog": (
        "{depth} batches waiting, the oldest for {age}: the link to the centre is not draining them",
        "{depth} 个批次待发送，最早的已等待 {age}：与中心的链路没有把它们送出",
    ),
    "spool_dropped": (
        "{dropped} batches ({samples} samples) were dropped when the spool was full: data was lost",
        "缓存满时丢弃了 {dropped} 个批次（{samples} 个样本）：数据已丢失",
    ),
    "fix_spool": (
        "restore the link to the broker (see the broker checks); raise spool.max_bytes/max_age to hold longer outages",
        "恢复到消息服务器的链路（见服务器检查）；调大 spool.max_bytes/max_age 以承受更长的中断",
    ),
    "acked": ("batch #{seq} acknowledged {age} ago ({when})", "批次 #{seq} 于 {age} 前确认（{when}）"),
    "acked_never": ("no batch acknowledged yet ({last} made)", "尚无批次被确认（已生成 {last} 个）"),
    "dns_ok": ("{host} -> {addrs}", "{host} -> {addrs}"),
    "dns_fail": ("cannot resolve {host}: {error}", "无法解析 {host}：{error}"),
    "fix_dns": (
        "check /etc/hosts or the DNS server in /etc/resolv.conf, or put the broker's IP address in mqtt.host",
        "检查 /etc/hosts 或 /etc/resolv.conf 中的 DNS 服务器，或在 mqtt.host 中直接写服务器 IP",
    ),
    "tcp_ok": ("connected to {addr} in {ms} ms", "{ms} 毫秒连上 {addr}"),
    "tcp_refused": ("{addr}: connection refused", "{addr}：连接被拒绝"),
    "tcp_timeout": ("{addr}: no answer within {timeout} s", "{addr}：{timeout} 秒内无应答"),
    "tcp_error": ("{addr}: {error}", "{addr}：{error}"),
    "fix_tcp_refused": (
        "the broker is not listening there: check it runs (systemctl status mosquitto) and mqtt.port",
        "服务器没有在此端口监听：检查它是否在运行（systemctl status mosquitto）以及 mqtt.port",
    ),
    "fix_tcp_timeout": (
        "check the route and firewalls between this node and the centre for TCP {port}",
        "检查本机到中心之间对 TCP {port} 的路由和防火墙",
    ),
    "tls_ok": ("handshake OK ({version}), certificate verified", "握手成功（{version}），证书已验证"),
    "tls_off": ("not used (mqtt.tls not set)", "未使用（未配置 mqtt.tls）"),
    "tls_fail": ("handshake failed: {error}", "握手失败：{error}"),
    "fix_tls": (
        "check the broker's TLS listener and mqtt.tls (ca_file, cert_file/key_file)",
        "检查服务器的 TLS 监听与 mqtt.tls（ca_file、cert_file/key_file）",
    ),
    "cert_ok": (
        "{subject}, valid until {until} ({days} days left), issued by {issuer}",
        "{subject}，有效期至 {until}（还剩 {days} 天），签发者 {issuer}",
    ),
    "cert_expired": (
        "certificate EXPIRED on {until} ({days} days ago): {subject}",
        "证书已于 {until} 过期（{days} 天前）：{subject}",
    ),
    "cert_not_yet": ("certificate valid only from {start}: {subject}", "证书自 {start} 起才有效：{subject}"),
    "cert_soon": (
        "certificate expires on {until}, in {days} days: {subject}",
        "证书将于 {until} 过期，还剩 {days} 天：{subject}",
    ),
    "cert_hostname": (
        "certificate is for {names}, not {host}",
        "证书签发给 {names}，不是 {host}",
    ),
    "cert_untrusted": (
        "certificate not trusted: {error} (issuer {issuer})",
        "证书不受信任：{error}（签发者 {issuer}）",
    ),
    "fix_cert_expired": (
        "renew the broker's certificate at the centre (or, if it is new, check this node's clock)",
        "在中心更新服务器证书（若证书是新的，检查本机时钟）",
    ),
    "fix_cert_soon": ("renew the broker's certificate before it expires", "在到期前更新服务器证书"),
    "fix_cert_hostname": (
        "write the name the certificate carries in mqtt.host, or reissue it with this name",
        "在 mqtt.host 中写证书上的名称，或按此名称重新签发证书",
    ),
    "fix_cert_untrusted": (
        "set mqtt.tls.ca_file to the CA that signed the broker's certificate",
        "将 mqtt.tls.ca_file 设为签发服务器证书的 CA",
    ),
    "auth_ok": ("logged in as {user} (CONNACK {code}) in {ms} ms", "以 {user} 登录成功（CONNACK {code}），{ms} 毫秒"),
    "auth_refused": (
        "broker refused the login as {user}: CONNACK {code} ({reason})",
        "服务器拒绝以 {user} 登录：CONNACK {code}（{reason}）",
    ),
    "auth_no_answer": ("no CONNACK within {timeout} s: {error}", "{timeout} 秒内没有 CONNACK：{error}"),
    "fix_auth": (
        "check mqtt.username and the password (password_file/password_env) against the broker's password file and ACL",
        "核对 mqtt.username 和密码（password_file/password_env）与服务器的密码文件和 ACL",
    ),
    "fix_auth_secret": ("fix the password source named in the config", "修正配置中指定的密码来源"),
    "skipped_after": ("not tried: {step} failed", "未尝试：{step} 失败"),
    "dev_ok": ("{kind} answers ({ms} ms)", "{kind} 正常应答（{ms} 毫秒）"),
    "dev_bad": ("{kind} {status}: {error}", "{kind} {status}：{error}"),
    # first thing to check when a device does not answer
    "fix_snmp_timeout": (
        "SNMP timeout: check community/ACL on the device and UDP 161 reachability",
        "SNMP 超时：检查设备上的团体名/ACL，以及 UDP 161 是否可达",
    ),
    "fix_snmp_auth": (
        "SNMPv3 refused: check user, auth/priv protocols and keys on the device",
        "SNMPv3 被拒绝：检查设备上的用户、认证/加密协议和密钥",
    ),
    "fix_snmp_partial": (
        "SNMP partly answered: check the device's view/ACL includes the profile's subtrees",
        "SNMP 部分应答：检查设备的视图/ACL 是否包含所用模板的子树",
    ),
    "fix_modbus_connect": (
        "Modbus: cannot reach the gateway — check its address, TCP port (502) and power",
        "Modbus：连不上网关——检查地址、TCP 端口（502）和电源",
    ),
    "fix_modbus_silent": (
        "Modbus unit silent: check the unit id, baud rate/parity and the RS-485 wiring (A/B, termination)",
        "Modbus 从站无应答：检查从站地址、波特率/校验位和 RS-485 接线（A/B、终端电阻）",
    ),
    "fix_modbus_exception": (
        "Modbus exception: check the register map fits this device model",
        "Modbus 异常应答：检查寄存器表是否与设备型号相符",
    ),
    "fix_tcp_dev_refused": (
        "TCP refused: the service is not running on that port, or a firewall rejects it",
        "TCP 被拒绝：该端口上的服务没有运行，或被防火墙拒绝",
    ),
    "fix_tcp_dev_timeout": (
        "TCP timeout: check the host is up and the route/firewall lets the port through",
        "TCP 超时：检查主机是否开机，以及路由/防火墙是否放行该端口",
    ),
    "fix_http": (
        "HTTP: open the URL from this node (curl -v) and compare status, body and certificate",
        "HTTP：在本机用 curl -v 打开该 URL，对比状态码、内容和证书",
    ),
    "fix_icmp": (
        "no ping reply: check the host's power and cabling, and that its firewall answers ICMP",
        "ping 无应答：检查主机电源和网线，以及其防火墙是否允许 ICMP",
    ),
    "fix_icmp_perm": (
        "raw ICMP not permitted: give the agent CAP_NET_RAW, or allow unprivileged ping (net.ipv4.ping_group_range)",
        "无权发送 ICMP：给代理 CAP_NET_RAW，或允许非特权 ping（net.ipv4.ping_group_range）",
    ),
    "fix_host": ("check the host probe's error text above", "查看上面主机探测的错误信息"),
    "fix_generic": (
        "run 'netwatch-agent once' and read this probe's error",
        "运行 'netwatch-agent once' 查看此探测的错误",
    ),
    # discover
    "disc_title": ("discovered on {ranges}", "在 {ranges} 上发现的设备"),
    "disc_snmp_found": ("{n} SNMP device(s) of {tried} addresses", "{tried} 个地址中发现 {n} 台 SNMP 设备"),
    "disc_modbus_found": ("{target}: units {units}", "{target}：从站 {units}"),
    "disc_modbus_none": ("{target}: no unit answered", "{target}：没有从站应答"),
    "disc_written": (
        "wrote {n} entries to {path} for review — copy what you keep into the probes: list of your config",
        "已将 {n} 条配置写入 {path} 供审阅——把保留的条目复制到配置的 probes: 列表",
    ),
    "disc_nothing": (
        "nothing found: check the ranges, credentials and that UDP 161 is open",
        "什么也没找到：检查地址范围、凭据以及 UDP 161 是否开放",
    ),
    "col_address": ("address", "地址"),
    "col_name": ("sysName", "设备名"),
    "col_profiles": ("profiles", "模板"),
    "col_descr": ("sysDescr", "设备描述"),
    "col_cred": ("credential", "凭据"),
}

_current: Lang | None = None


def from_locale(env: dict[str, str] | None = None) -> Lang:
    """zh_* -> zh, en_* -> en, anything else (C, POSIX, unset) -> both."""
    e = os.environ if env is None else env
    for var in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = e.get(var, "").strip().lower()
        if value:
            if value.startswith("zh"):
                return "zh"
            if value.startswith("en"):
                return "en"
            return "both"
    return "both"


def set_lang(lang: str | None) -> str | None:
    """The ``--lang`` option's callback; ``None`` leaves the locale's choice."""
    global _current
    if lang is None:
        _current = None  # each command starts from the locale (matters when run in-process, as in tests)
        return None
    value = lang.strip().lower()
    if value not in LANGS:
        raise typer.BadParameter(f"{lang!r}: use zh, en or both")
    _current = value
    return value


def lang() -> Lang:
    return _current if _current is not None else from_locale()


@dataclass(frozen=True, slots=True)
class Msg:
    """A catalogue entry used as a value inside another, rendered in the same language."""

    key: str
    values: Mapping[str, object] = field(default_factory=dict)


def one(key: str, language: Literal["en", "zh"], values: Mapping[str, object]) -> str:
    """The text of ``key`` in one language (values that are :class:`Msg` in that language too)."""
    filled = {k: one(v.key, language, v.values) if isinstance(v, Msg) else v for k, v in values.items()}
    return MESSAGES[key][0 if language == "en" else 1].format(**filled)


def t(key: str, language: Lang | None = None, /, sep: str = " / ", **kw: object) -> str:
    """The text of ``key`` in ``language`` (default: the chosen one); both: "English / 中文"."""
    which = language or lang()
    if which != "both":
        return one(key, which, kw)
    a, b = one(key, "en", kw), one(key, "zh", kw)
    return a if a == b else f"{a}{sep}{b}"


LangOpt = Annotated[
    str | None,
    typer.Option(
        "--lang",
        help="operator text in zh (中文), en or both; default from LANG (zh_* -> zh, en_* -> en, else both)",
        callback=set_lang,
        is_eager=True,
    ),
]
