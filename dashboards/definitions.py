"""The dashboards: what an operator at the centre looks at, from the city down to one interface.
Names are the stores' own: probes/*/metrics.csv, the agent's and collector's self metrics and
the collector's ``netwatch_site`` / ``netwatch_alerts`` (checked by ``catalogue.check``)."""

from __future__ import annotations

from typing import Final

from dashboards.model import Agg, Dashboard, Mapping, Panel, Query

GREEN, YELLOW, ORANGE, RED, BLUE, GREY = "green", "yellow", "orange", "red", "blue", "text"

SITE_STATE = (
    Mapping(0, "ok 正常", GREEN),
    Mapping(1, "warning 告警", YELLOW),
    Mapping(2, "critical 严重", ORANGE),
    Mapping(3, "down 中断", RED),
)
PROBE_STATE = (Mapping(0, "ok 正常", GREEN), Mapping(1, "degraded 降级", ORANGE), Mapping(2, "down 中断", RED))
OPER_STATUS = (
    Mapping(1, "up", GREEN),
    Mapping(2, "down", RED),
    Mapping(3, "testing", BLUE),
    Mapping(4, "unknown", GREY),
    Mapping(5, "dormant", BLUE),
    Mapping(6, "notPresent", GREY),
    Mapping(7, "lowerLayerDown", RED),
)
UPS_SOURCE = (
    Mapping(1, "other", GREY),
    Mapping(2, "none 无输出", RED),
    Mapping(3, "normal 市电", GREEN),
    Mapping(4, "bypass 旁路", ORANGE),
    Mapping(5, "battery 电池", RED),
    Mapping(6, "booster", YELLOW),
    Mapping(7, "reducer", YELLOW),
)
BATTERY_STATUS = (
    Mapping(1, "unknown", GREY),
    Mapping(2, "normal 正常", GREEN),
    Mapping(3, "low 电量低", ORANGE),
    Mapping(4, "depleted 耗尽", RED),
)
ALARM = (Mapping(0, "normal 正常", GREEN), Mapping(1, "alarm 告警", RED))
CHANGED = (Mapping(0, "unchanged 未变", GREEN), Mapping(1, "changed 已变", RED))
CONNECTED = (Mapping(0, "disconnected 断开", RED), Mapping(1, "connected 已连接", GREEN))

UPLINK = (("link", "uplink"),)
ALL_LEVELS = ("county", "site")
DEVICE_LEVELS = ("county", "site", "device")
IFACE_LEVELS = ("county", "site", "device", "ifname")


def _series(
    m: str,
    f: str,
    by: tuple[str, ...] = ("site",),
    *,
    agg: Agg = "mean",
    match: tuple[tuple[str, str], ...] = (),
    variables: tuple[str, ...] = ALL_LEVELS,
    legend_suffix: str = "",
    ref: str = "A",
) -> Query:
    return Query(m, f, agg, by, "series", match, variables, legend_suffix, ref)


def _latest(
    m: str,
    f: str,
    by: tuple[str, ...] = ("site",),
    *,
    agg: Agg = "mean",
    match: tuple[tuple[str, str], ...] = (),
    variables: tuple[str, ...] = ALL_LEVELS,
) -> Query:
    return Query(m, f, agg, by, "latest", match, variables)


CITY = Dashboard(
    uid="netwatch-city",
    title="netwatch · City overview 全市总览",
    description="Every site's state, agents online, uplinks, active alerts, worst links and hottest rooms.",
    variables=("county",),
    panels=(
        Panel(
            "Every site now 各站点状态",
            "table",
            (_latest("netwatch_site", "state", ("county", "site"), agg="last", variables=("county",)),),
            mappings=SITE_STATE,
            sort_by="Value",
            width=8,
        ),
        Panel(
            "Site state over time 站点状态变化",
            "state",
            (_series("netwatch_site", "state", agg="last", variables=("county",)),),
            mappings=SITE_STATE,
            width=16,
        ),
        Panel(
            "Agents online 在线采集节点",
            "stat",
            (_latest("netwatch_site", "agents_online", agg="last", variables=("county",)),),
            description="Agents of each site the collector sees online now / 各站点当前在线的采集节点数",
            width=24,
            height=5,
        ),
        Panel(
            "Uplink loss 上联丢包率",
            "timeseries",
            (_series("icmp", "loss_pct", ("site", "target"), match=UPLINK, variables=("county",)),),
            unit="percent",
            thresholds=((None, GREEN), (20, RED)),
        ),
        Panel(
            "Uplink RTT 上联时延",
            "timeseries",
            (_series("icmp", "rtt_avg_ms", ("site", "target"), match=UPLINK, variables=("county",)),),
            unit="ms",
            thresholds=((None, GREEN), (150, RED)),
        ),
        Panel(
            "Active alerts by site and severity 各站点活动告警",
            "table",
            (_latest("netwatch_alerts", "firing", ("site", "severity"), agg="last", variables=("county",)),),
            sort_by="Value",
            width=8,
        ),
        Panel(
            "Worst links (loss) 丢包最多的链路",
            "table",
            (_latest("icmp", "loss_pct", ("site", "target"), variables=("county",)),),
            unit="percent",
            sort_by="Value",
            limit=10,
            width=8,
        ),
        Panel(
            "Hottest rooms 温度最高的机房",
            "table",
            (_latest("room_env", "temperature_c", ("site", "sensor"), agg="max", variables=("county",)),),
            unit="celsius",
            thresholds=((None, BLUE), (18, GREEN), (27, RED)),
            sort_by="Value",
            limit=10,
            width=8,
        ),
    ),
)

SITE = Dashboard(
    uid="netwatch-site",
    title="netwatch · Site 站点",
    description="One county or township: state, alerts, uplinks, probes, busiest interfaces, room and UPS.",
    panels=(
        Panel("Site state 站点状态", "state", (_series("netwatch_site", "state", agg="last"),), mappings=SITE_STATE),
        Panel(
            "Firing alerts 活动告警",
            "table",
            (_latest("netwatch_alerts", "firing", ("site", "severity"), agg="last"),),
            sort_by="Value",
            width=6,
        ),
        Panel("Agents online 在线采集节点", "stat", (_latest("netwatch_site", "agents_online", agg="last"),), width=6),
        Panel(
            "Uplink loss 上联丢包率",
            "timeseries",
            (_series("icmp", "loss_pct", ("site", "target"), match=UPLINK),),
            unit="percent",
        ),
        Panel(
            "Uplink RTT 上联时延",
            "timeseries",
            (_series("icmp", "rtt_avg_ms", ("site", "target"), match=UPLINK),),
            unit="ms",
        ),
        Panel(
            "Probe status 探测状态",
            "state",
            (_series("probe_status", "status_code", ("site", "probe", "target"), agg="max"),),
            mappings=PROBE_STATE,
            width=24,
        ),
        Panel(
            "Busiest interfaces 利用率最高的接口",
            "table",
            (_latest("interface", "util_in_pct", ("device", "ifname"), agg="max"),),
            unit="percent",
            sort_by="Value",
            limit=10,
        ),
        Panel(
            "Room temperature 机房温度",
            "timeseries",
            (_series("room_env", "temperature_c", ("site", "sensor")),),
            unit="celsius",
            thresholds=((None, BLUE), (18, GREEN), (27, RED)),
        ),
        Panel(
            "UPS source UPS 供电方式",
            "state",
            (_series("ups", "output_source", ("site", "device"), agg="last"),),
            mappings=UPS_SOURCE,
            width=24,
        ),
    ),
)

DEVICE = Dashboard(
    uid="netwatch-device",
    title="netwatch · Device and interfaces 设备与接口",
    description="Switches and routers: traffic, utilisation, errors, oper status, CPU, memory, temperatures.",
    variables=("county", "township", "device", "interface"),
    panels=(
        Panel(
            "Traffic 流量",
            "timeseries",
            (
                _series("interface", "in_bps", ("device", "ifname"), variables=IFACE_LEVELS, legend_suffix="in"),
                _series(
                    "interface", "out_bps", ("device", "ifname"), variables=IFACE_LEVELS, legend_suffix="out", ref="B"
                ),
            ),
            unit="bps",
            width=24,
        ),
        Panel(
            "Utilisation 利用率",
            "timeseries",
            (
                _series("interface", "util_in_pct", ("device", "ifname"), variables=IFACE_LEVELS, legend_suffix="in"),
                _series(
                    "interface",
                    "util_out_pct",
                    ("device", "ifname"),
                    variables=IFACE_LEVELS,
                    legend_suffix="out",
                    ref="B",
                ),
            ),
            unit="percent",
            thresholds=((None, GREEN), (90, RED)),
        ),
        Panel(
            "Errors 错包",
            "timeseries",
            (
                _series(
                    "interface", "in_errors_per_s", ("device", "ifname"), variables=IFACE_LEVELS, legend_suffix="in"
                ),
                _series(
                    "interface",
                    "out_errors_per_s",
                    ("device", "ifname"),
                    variables=IFACE_LEVELS,
                    legend_suffix="out",
                    ref="B",
                ),
            ),
            unit="pps",
            thresholds=((None, GREEN), (2, RED)),
        ),
        Panel(
            "Oper status 接口状态",
            "state",
            (_series("interface", "oper_status", ("device", "ifname"), agg="last", variables=IFACE_LEVELS),),
            mappings=OPER_STATUS,
            width=24,
        ),
        Panel(
            "CPU",
            "timeseries",
            (_series("device_cpu", "cpu_pct", ("device", "cpu"), variables=DEVICE_LEVELS),),
            unit="percent",
            thresholds=((None, GREEN), (90, RED)),
            width=8,
        ),
        Panel(
            "Memory 内存",
            "timeseries",
            (_series("device_memory", "memory_pct", ("device", "memory"), variables=DEVICE_LEVELS),),
            unit="percent",
            thresholds=((None, GREEN), (90, RED)),
            width=8,
        ),
        Panel(
            "Temperatures 温度",
            "timeseries",
            (_series("device_sensor", "temperature_c", ("device", "sensor"), variables=DEVICE_LEVELS),),
            unit="celsius",
            thresholds=((None, GREEN), (50, ORANGE), (60, RED)),
            width=8,
        ),
    ),
)

ROOM = Dashboard(
    uid="netwatch-room",
    title="netwatch · Machine room 机房环境",
    description="GB 50174-2017: inlet 18-27 °C, dew point 5.5-15 °C, RH ≤ 60 %; leak, smoke, door; UPS and PDU.",
    panels=(
        Panel(
            "Temperature 温度 (18-27 °C)",
            "timeseries",
            (_series("room_env", "temperature_c", ("site", "sensor")),),
            unit="celsius",
            thresholds=((None, BLUE), (18, GREEN), (27, RED)),
            width=8,
        ),
        Panel(
            "Humidity 湿度 (≤ 60 %)",
            "timeseries",
            (_series("room_env", "humidity_pct", ("site", "sensor")),),
            unit="humidity",
            thresholds=((None, GREEN), (60, RED)),
            width=8,
        ),
        Panel(
            "Dew point 露点 (5.5-15 °C)",
            "timeseries",
            (_series("room_env", "dew_point_c", ("site", "sensor")),),
            unit="celsius",
            thresholds=((None, BLUE), (5.5, GREEN), (15, RED)),
            width=8,
        ),
        Panel(
            "Leak / smoke / door 漏水 / 烟感 / 门磁",
            "state",
            (_series("contact", "active", ("site", "contact"), agg="last"),),
            mappings=ALARM,
            width=24,
        ),
        Panel(
            "Leak cable 漏水感应线",
            "state",
            (
                _series("leak", "leak", ("site", "device"), agg="last", legend_suffix="leak"),
                _series("leak", "cable_break", ("site", "device"), agg="last", legend_suffix="cable break", ref="B"),
            ),
            mappings=ALARM,
            description="Leak-locating cable: water on it, or the cable broken (then it is not watching)",
        ),
        Panel(
            "Leak distance 漏水位置",
            "table",
            (_latest("leak", "distance_m", ("site", "device"), agg="last"),),
            unit="lengthm",
            description="Distance of the leak along the cable / 漏点距控制器的距离",
        ),
        Panel(
            "UPS source UPS 供电方式",
            "state",
            (_series("ups", "output_source", ("site", "device"), agg="last"),),
            mappings=UPS_SOURCE,
        ),
        Panel(
            "UPS battery status 电池状态",
            "state",
            (_series("ups", "battery_status", ("site", "device"), agg="last"),),
            mappings=BATTERY_STATUS,
        ),
        Panel(
            "UPS runtime 剩余时间",
            "timeseries",
            (_series("ups", "runtime_min", ("site", "device"), agg="min"),),
            unit="m",
            thresholds=((None, RED), (3, ORANGE), (10, GREEN)),
            width=8,
        ),
        Panel(
            "UPS load 负载",
            "timeseries",
            (_series("ups", "load_pct", ("site", "device"), agg="max"),),
            unit="percent",
            thresholds=((None, GREEN), (80, RED)),
            width=8,
        ),
        Panel(
            "UPS battery charge 电池电量",
            "timeseries",
            (_series("ups", "charge_pct", ("site", "device"), agg="min"),),
            unit="percent",
            thresholds=((None, RED), (5, ORANGE), (50, GREEN)),
            width=8,
        ),
        Panel(
            "PDU power PDU 功率",
            "timeseries",
            (_series("pdu", "power_kw", ("site", "device", "pdu"), agg="max"),),
            unit="kwatt",
        ),
        Panel(
            "PDU current by phase PDU 各相电流",
            "timeseries",
            (_series("pdu", "current_a", ("site", "device", "phase"), agg="max"),),
            unit="amp",
        ),
    ),
)

PORTALS = Dashboard(
    uid="netwatch-portals",
    title="netwatch · Portals 门户网站",
    description="Government portals: availability, response time, certificate days left, content changes.",
    panels=(
        Panel(
            "Availability 可用性",
            "state",
            (_series("probe_status", "status_code", ("site", "target"), agg="max", match=(("probe", "http"),)),),
            mappings=PROBE_STATE,
            width=24,
        ),
        Panel(
            "Response time 响应时间",
            "timeseries",
            (_series("http", "response_ms", ("site", "target"), agg="max"),),
            unit="ms",
        ),
        Panel(
            "Certificate days left 证书剩余天数",
            "table",
            (_latest("http", "cert_days_left", ("site", "target", "url"), agg="min"),),
            unit="d",
            thresholds=((None, RED), (14, ORANGE), (30, GREEN)),
            sort_by="Value",
        ),
        Panel(
            "Content changed 内容篡改",
            "state",
            (_series("http", "changed", ("site", "target"), agg="last"),),
            mappings=CHANGED,
            description="The page differs from its approved fingerprint / 页面与审定指纹不一致",
        ),
        Panel(
            "HTTP status HTTP 状态码", "timeseries", (_series("http", "status_code", ("site", "target"), agg="max"),)
        ),
    ),
)

AGENTS = Dashboard(
    uid="netwatch-agents",
    title="netwatch · Agent health 采集节点健康",
    description="Each agent's publish lag, spool, drops and probe errors; the collector's intake.",
    panels=(
        Panel(
            "Publish latency 发布时延",
            "timeseries",
            (_series("netwatch_agent", "publish_latency_ms", ("site", "agent"), agg="max"),),
            unit="ms",
        ),
        Panel(
            "Oldest unsent 最早未发送",
            "timeseries",
            (_series("netwatch_agent", "spool_oldest_s", ("site", "agent"), agg="max"),),
            unit="s",
            description="Age of the oldest batch still in the spool: the agent's publish lag / 积压时长",
        ),
        Panel(
            "Spool depth 积压批次",
            "timeseries",
            (_series("netwatch_agent", "spool_depth", ("site", "agent"), agg="max"),),
            width=8,
        ),
        Panel(
            "Dropped samples 丢弃样本",
            "timeseries",
            (_series("netwatch_agent", "dropped_samples", ("site", "agent"), agg="max"),),
            thresholds=((None, GREEN), (1, RED)),
            width=8,
        ),
        Panel(
            "Broker connection 连接状态",
            "state",
            (_series("netwatch_agent", "connected", ("site", "agent"), agg="last"),),
            mappings=CONNECTED,
            width=8,
        ),
        Panel(
            "Probe errors 探测错误",
            "table",
            (_latest("probe_status", "status_code", ("site", "agent", "probe", "target"), agg="max"),),
            mappings=PROBE_STATE,
            sort_by="Value",
            description="Worst status of each probe target over the time range / 时间范围内各探测目标的最差状态",
            width=24,
        ),
        Panel(
            "Collector: samples stored 中心：已存样本",
            "timeseries",
            (_series("netwatch_collector", "stored_samples", ("collector",), agg="max", variables=()),),
            width=8,
        ),
        Panel(
            "Collector: refused 中心：拒收",
            "timeseries",
            (_series("netwatch_collector", "rejected_total", ("collector",), agg="max", variables=()),),
            width=8,
        ),
        Panel(
            "Collector: queue 中心：队列",
            "timeseries",
            (_series("netwatch_collector", "queue_depth", ("collector",), agg="max", variables=()),),
            width=8,
        ),
    ),
)

DASHBOARDS: Final[tuple[Dashboard, ...]] = (CITY, SITE, DEVICE, ROOM, PORTALS, AGENTS)
