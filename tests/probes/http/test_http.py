"""HTTP probe against a real local web server (plain and TLS with a self-signed certificate
made at test time): status checks, body regex, certificate days, tamper detection."""

from __future__ import annotations

import asyncio
import hashlib
import re
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import catalogue
import pytest
import yaml
from probe_certs import CertPair
from pydantic import ValidationError

from probes import registry
from probes.base import validation_context
from probes.entry import split_entry
from probes.http import probe as http
from probes.http.config import HttpConfig, parse_status_ranges
from probes.http.probe import HttpProbe, fingerprint, fingerprint_url, normalise
from probes.model import Sample

KIND = "http"
SAMPLE_YAML = Path(http.__file__).with_name("sample.yaml")
DATE = r"\d{4}-\d{2}-\d{2}( \d{2}:\d{2}(:\d{2})?)?"
COUNTER = r"访问量[:：]\s*\d+"


def portal(date: str = "2026-11-24 09:30", visits: int = 1024, notice: str = "县政府办公室关于春节放假的通知") -> bytes:
    return f"""<html><head><meta charset="utf-8"><title>某县人民政府</title></head>
<body>
  <h1>某县人民政府 County Government</h1>
  <p>今天是 {date}    访问量：{visits}</p>
  <ul><li>{notice}</li></ul>
</body></html>""".encode()


@dataclass
class Page:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "text/html; charset=utf-8"})
    delay_s: float = 0.0
    #: headers the request must carry (else 401), e.g. {"Authorization": "Basic ..."}
    require: dict[str, str] = field(default_factory=dict)


class Site:
    """What the test server serves; tests change pages between polls."""

    def __init__(self) -> None:
        self.pages: dict[str, Page] = {
            "/": Page(body=portal()),
            "/down": Page(503, b"<h1>Service Unavailable</h1>"),
            "/moved": Page(302, b"", {"Location": "/"}),
            "/slow": Page(body=b"late", delay_s=3.0),
            "/big": Page(body=b"0123456789" * 10_000, headers={"Content-Type": "text/plain"}),
            # A GBK portal that names its charset only in <meta>, as many older portals do.
            "/gbk": Page(
                body='<html><head><meta http-equiv="Content-Type" content="text/html; charset=gb2312"></head>'
                "<body>县政府 访问量：77</body></html>".encode("gbk"),
                headers={"Content-Type": "text/html"},
            ),
        }
        self.stop = threading.Event()
        #: (path with query, headers) of every request, to check what arrived
        self.seen: list[tuple[str, dict[str, str]]] = []


def _handler(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            site.seen.append((self.path, dict(self.headers.items())))
            page = site.pages.get(self.path.partition("?")[0]) or Page(404, b"not found")
            if any(self.headers.get(k) != v for k, v in page.require.items()):
                page = Page(401, b"credentials please", {"WWW-Authenticate": 'Basic realm="portal"'})
            if page.delay_s:
                site.stop.wait(page.delay_s)
            self.send_response(page.status)
            for k, v in page.headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(page.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(page.body)

        do_HEAD = do_GET  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

    return Handler


@dataclass
class Served:
    site: Site
    base: str


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that give up early (timeouts, refused certificates) are the point of some tests


def _serve(cert: CertPair | None) -> Iterator[Served]:
    site = Site()
    srv = QuietServer(("127.0.0.1", 0), _handler(site))
    scheme = "http"
    if cert is not None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert.cert, cert.key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        scheme = "https"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Served(site, f"{scheme}://127.0.0.1:{srv.server_address[1]}")
    finally:
        site.stop.set()
        srv.shutdown()
        srv.server_close()
        thread.join(5)


@pytest.fixture
def web() -> Iterator[Served]:
    yield from _serve(None)


@pytest.fixture
def tls_cert(cert_factory: Callable[[float], CertPair]) -> CertPair:
    return cert_factory(30)


@pytest.fixture
def tls_web(tls_cert: CertPair) -> Iterator[Served]:
    yield from _serve(tls_cert)


def _probe(url: str, *, timeout_s: float = 3.0, **kw: Any) -> HttpProbe:
    return HttpProbe(HttpConfig.model_validate({"url": url, **kw}), name="portal", timeout_s=timeout_s)


def _split(samples: list[Sample]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    status = [s for s in samples if s.measurement == "probe_status"]
    data = [s for s in samples if s.measurement == "http"]
    assert len(status) == 1 and len(data) <= 1 and len(samples) == len(status) + len(data)
    if data:
        assert data[0].tags == {"target": "portal", "url": data[0].tags["url"]}
    return (dict(data[0].fields) if data else None), dict(status[0].fields)


# --- availability -----------------------------------------------------------------------------------


async def scenario_ok(web: Served) -> list[Sample]:
    return await _probe(web.base + "/", body_regex="县政府").collect()


async def scenario_down(web: Served) -> list[Sample]:
    return await _probe(web.base + "/down").collect()


async def scenario_https(tls_web: Served) -> list[Sample]:
    return await _probe(tls_web.base + "/", verify_tls=False).collect()


async def test_page_is_up_with_status_time_size_and_body_match(web: Served) -> None:
    data, status = _split(await scenario_ok(web))
    assert data is not None
    assert (status["status"], status["error"]) == ("ok", "")
    assert data["status_code"] == 200
    assert data["content_bytes"] == len(portal())
    assert data["body_match"] is True
    assert 0 < data["response_ms"] < 2000
    assert "cert_days_left" not in data  # plain http
    assert "content_sha256" not in data and "changed" not in data  # fingerprint off


async def test_body_regex_miss_is_degraded(web: Served) -> None:
    data, status = _split(await _probe(web.base + "/", body_regex="黑客|hacked").collect())
    assert data is not None and data["body_match"] is False
    assert status["status"] == "degraded"
    assert "body does not match /黑客|hacked/" in status["error"]


async def test_unexpected_status_is_down_and_still_reported(web: Served) -> None:
    data, status = _split(await scenario_down(web))
    assert data is not None and data["status_code"] == 503
    assert status["status"] == "down"
    assert "HTTP 503, expected 200-399" in status["error"]
    # ...unless the operator says 503 is what this URL should answer.
    data, status = _split(await _probe(web.base + "/down", expect_status=[503]).collect())
    assert status["status"] == "ok"


async def test_redirects_are_followed_only_when_asked(web: Served) -> None:
    data, status = _split(await _probe(web.base + "/moved").collect())
    assert data is not None and (data["status_code"], status["status"]) == (302, "ok")
    data, status = _split(await _probe(web.base + "/moved", expect_status="200", follow_redirects=True).collect())
    assert data is not None and (data["status_code"], data["content_bytes"]) == (200, len(portal()))


async def test_body_read_stops_at_max_body_bytes(web: Served) -> None:
    data, _ = _split(await _probe(web.base + "/big", max_body_bytes="1KiB").collect())
    assert data is not None and data["content_bytes"] == 1024


async def test_slow_page_times_out_within_the_budget(web: Served) -> None:
    # The scheduler's own limit must not fire: the probe reports the timeout itself.
    samples = await asyncio.wait_for(_probe(web.base + "/slow", timeout_s=1.0).collect(), 1.0)
    data, status = _split(samples)
    assert data is None
    assert status["status"] == "down"
    assert "no complete response within 0.9 s" in status["error"]


async def test_closed_port_is_down_with_refused() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data, status = _split(await _probe(f"http://127.0.0.1:{port}/").collect())
    assert data is None and status["status"] == "down"
    assert "connection refused" in status["error"]


# --- TLS --------------------------------------------------------------------------------------------


async def test_https_certificate_days_left_without_verification(tls_web: Served) -> None:
    data, status = _split(await scenario_https(tls_web))
    assert data is not None and status["status"] == "ok"
    assert data["cert_days_left"] == pytest.approx(30, abs=0.01)


async def test_https_verified_against_its_ca_file(tls_web: Served, tls_cert: CertPair) -> None:
    data, status = _split(await _probe(tls_web.base + "/", ca_file=str(tls_cert.cert)).collect())
    assert data is not None and status["status"] == "ok"
    assert data["cert_days_left"] == pytest.approx(30, abs=0.01)


async def test_https_untrusted_certificate_is_down_with_the_reason(tls_web: Served) -> None:
    data, status = _split(await _probe(tls_web.base + "/").collect())
    assert data is None and status["status"] == "down"
    assert "TLS certificate not trusted: self-signed certificate" in status["error"]
    assert "ca_file" in status["error"]


# --- tamper detection -------------------------------------------------------------------------------


def test_normalise_strips_ignored_text_and_collapses_whitespace() -> None:
    ignore = [re.compile(DATE), re.compile(COUNTER)]
    text = "<p>今天是 2026-11-24 09:30\n\t  访问量：1024</p>"
    assert normalise(text, ignore) == "<p>今天是 </p>"
    assert fingerprint(text, ignore) == hashlib.sha256("<p>今天是 </p>".encode()).hexdigest()


async def test_fingerprint_unchanged_when_only_ignored_parts_change(web: Served) -> None:
    url = web.base + "/"
    fp = {"enabled": True, "ignore": [DATE, COUNTER]}
    approved = await fingerprint_url(HttpConfig.model_validate({"url": url, "fingerprint": fp}))
    assert approved.status_code == 200 and approved.content_bytes == len(portal())
    probe = _probe(url, fingerprint={**fp, "baseline": approved.sha256})

    web.site.pages["/"].body = portal(date="2026-11-25 10:00", visits=99999)
    data, status = _split(await probe.collect())
    assert data is not None and status["status"] == "ok"
    assert (data["content_sha256"], data["changed"]) == (approved.sha256, False)

    # Without the ignore patterns the same harmless change looks like tampering.
    bare = _probe(url, fingerprint={"enabled": True, "baseline": approved.sha256})
    data, _ = _split(await bare.collect())
    assert data is not None and data["changed"] is True


async def test_fingerprint_changed_when_content_is_altered(web: Served) -> None:
    url = web.base + "/"
    fp = {"enabled": True, "ignore": [DATE, COUNTER]}
    approved = await fingerprint_url(HttpConfig.model_validate({"url": url, "fingerprint": fp}))
    web.site.pages["/"].body = portal(notice="本站已被黑客攻破")
    data, status = _split(await _probe(url, fingerprint={**fp, "baseline": approved.sha256}).collect())
    assert data is not None
    assert data["changed"] is True and data["content_sha256"] != approved.sha256
    assert status["status"] == "ok"  # availability is fine; the alert rule watches `changed`


async def test_fingerprint_without_baseline_reports_only_the_digest(web: Served) -> None:
    data, _ = _split(await _probe(web.base + "/", fingerprint={"enabled": True}).collect())
    assert data is not None
    assert data["content_sha256"] == fingerprint(portal().decode())
    assert "changed" not in data


async def test_baseline_file_is_reread_so_approval_needs_no_restart(web: Served, tmp_path: Path) -> None:
    url = web.base + "/"
    baseline = tmp_path / "portal.sha256"
    baseline.write_text("0" * 64 + "  old\n")
    probe = _probe(url, fingerprint={"enabled": True, "baseline_file": str(baseline)})
    data, _ = _split(await probe.collect())
    assert data is not None and data["changed"] is True
    baseline.write_text(f"{data['content_sha256']}  {url}\n")  # the operator approves the page
    data, _ = _split(await probe.collect())
    assert data is not None and data["changed"] is False


async def test_error_pages_are_not_fingerprinted(web: Served) -> None:
    data, _ = _split(await _probe(web.base + "/down", fingerprint={"enabled": True, "baseline": "0" * 64}).collect())
    assert data is not None and "content_sha256" not in data and "changed" not in data


async def test_meta_charset_page_decodes_for_ignore_patterns(web: Served) -> None:
    url = web.base + "/gbk"
    fp = {"enabled": True, "ignore": [COUNTER]}
    approved = await fingerprint_url(HttpConfig.model_validate({"url": url, "fingerprint": fp}))
    web.site.pages["/gbk"].body = web.site.pages["/gbk"].body.replace(b"77", b"78")
    data, _ = _split(await _probe(url, body_regex="县政府", fingerprint={**fp, "baseline": approved.sha256}).collect())
    assert data is not None and data["body_match"] is True and data["changed"] is False


# --- config -----------------------------------------------------------------------------------------


def test_status_ranges_parse() -> None:
    assert parse_status_ranges("200-399") == ((200, 399),)
    assert parse_status_ranges([200, "301-302"]) == ((200, 200), (301, 302))
    for bad in ("2xx", "399-200", [], 700):
        with pytest.raises(ValueError):
            parse_status_ranges(bad)


def test_sample_yaml_validates() -> None:
    common, own = split_entry(yaml.safe_load(SAMPLE_YAML.read_text()))
    assert common["type"] == "http" and registry.get("http") is HttpProbe
    cfg = HttpProbe.config_model.model_validate(own)
    assert cfg.expect_status == ((200, 299), (304, 304))
    assert cfg.fingerprint.enabled and len(cfg.fingerprint.ignore) == 3
    assert cfg.fingerprint.approved() == own["fingerprint"]["baseline"]
    assert cfg.max_body_bytes == 2 * 1024 * 1024


@pytest.mark.parametrize(
    ("key", "bad", "loc"),
    [
        ("url", "ftp://example/", ("url",)),
        ("method", "FETCH", ("method",)),
        ("expect_status", "2xx", ("expect_status",)),
        ("body_regex", "(", ("body_regex",)),
        ("ca_file", "/nonexistent/ca.pem", ("ca_file",)),
        ("fingerprint", {"enabled": True, "baseline": "abc"}, ("fingerprint", "baseline")),
    ],
)
def test_bad_sample_value_names_the_key(key: str, bad: Any, loc: tuple[str, ...]) -> None:
    _, own = split_entry(yaml.safe_load(SAMPLE_YAML.read_text()))
    with pytest.raises(ValidationError) as e:
        HttpConfig.model_validate({**own, key: bad})
    assert [err["loc"] for err in e.value.errors()] == [loc]


def test_unreadable_baseline_file_stops_config_loading(tmp_path: Path) -> None:
    bad = tmp_path / "b.sha256"
    bad.write_text("not a digest\n")
    with pytest.raises(ValidationError, match="must start with a sha256 hex digest"):
        HttpConfig.model_validate({"url": "http://127.0.0.1/", "fingerprint": {"baseline_file": str(bad)}})


# --- catalogue --------------------------------------------------------------------------------------


async def test_catalogue_both_ways(web: Served, tls_web: Served) -> None:
    samples = await scenario_ok(web)
    samples += await scenario_down(web)
    samples += await scenario_https(tls_web)
    fp = {"enabled": True, "ignore": [DATE], "baseline": "0" * 64}
    samples += await _probe(web.base + "/", fingerprint=fp).collect()
    catalogue.assert_both_ways("http", samples)


def test_relative_baseline_file_counts_from_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "baselines").mkdir()
    (tmp_path / "baselines" / "portal.sha256").write_text("ab" * 32 + "\n")
    cfg = HttpConfig.model_validate(
        {
            "url": "http://127.0.0.1/",
            "fingerprint": {"enabled": True, "baseline_file": "baselines/portal.sha256"},
        },
        context=validation_context(tmp_path / "agent.yaml"),
    )
    assert cfg.fingerprint.baseline_file == tmp_path / "baselines" / "portal.sha256"
    assert cfg.fingerprint.approved() == "ab" * 32


def test_readme_has_the_sections_the_sample_and_every_field() -> None:
    catalogue.assert_readme_current(KIND)


# --- credentials: used for the request, never shown -------------------------------------------------

USER, PASSWORD, TOKEN = "ops", "s3cret-pass-4711", "tok-9f8e7d6c"
BEARER, API_KEY = "Bearer eyJhbGciOi.bearer-secret", "api-key-0815-secret"


def _basic(user: str, password: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _everything(samples: list[Sample]) -> str:
    return " ".join(repr(s) for s in samples)


async def test_url_credentials_are_sent_but_not_in_tags_or_errors(web: Served) -> None:
    web.site.pages["/private"] = Page(body=portal(), require={"Authorization": _basic(USER, PASSWORD)})
    host = web.base.removeprefix("http://")
    url = f"http://{USER}:{PASSWORD}@{host}/private?page=2&access_token={TOKEN}&sign=abc123xyz"
    # unnamed in the agent config, a probe is named after its URL
    samples = await HttpProbe(HttpConfig.model_validate({"url": url}), name=url, timeout_s=3).collect()
    data, status = _split_named(samples)
    assert status["status"] == "ok" and data["status_code"] == 200  # the server saw the right credentials
    path, headers = web.site.seen[-1]
    assert headers["Authorization"] == _basic(USER, PASSWORD) and f"access_token={TOKEN}" in path
    shown = f"http://{host}/private?page=2&access_token=***&sign=***"
    assert {s.tags["target"] for s in samples} == {shown}
    assert next(s for s in samples if s.measurement == "http").tags["url"] == shown
    for secret in (PASSWORD, TOKEN, "abc123xyz", f"{USER}:"):
        assert secret not in _everything(samples)
    # wrong password: down, and the error names the page without the credentials
    bad = url.replace(PASSWORD, "wrong-pass-0000")
    samples = await HttpProbe(HttpConfig.model_validate({"url": bad}), name=bad, timeout_s=3).collect()
    _, status = _split_named(samples)
    assert status["status"] == "down" and "HTTP 401" in status["error"] and shown in status["error"]
    assert "wrong-pass-0000" not in _everything(samples) and TOKEN not in _everything(samples)


async def test_a_refused_connection_error_does_not_quote_the_credentials() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://{USER}:{PASSWORD}@127.0.0.1:{port}/?apikey={TOKEN}"
    samples = await HttpProbe(HttpConfig.model_validate({"url": url}), name=url, timeout_s=3).collect()
    (status,) = samples
    assert status.fields["status"] == "down" and "refused" in status.fields["error"]
    assert f"http://127.0.0.1:{port}/?apikey=***" in status.fields["error"]
    assert PASSWORD not in _everything(samples) and TOKEN not in _everything(samples)


async def test_headers_from_the_environment_and_a_file(
    web: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    web.site.pages["/api"] = Page(body=b"ok", require={"Authorization": BEARER, "X-Api-Key": API_KEY})
    key_file = tmp_path / "api.key"
    key_file.write_text(API_KEY + "\n")
    monkeypatch.setenv("NW_T_PORTAL_AUTH", BEARER)
    cfg = HttpConfig.model_validate(
        {
            "url": web.base + "/api",
            "headers": {"User-Agent": "netwatch"},
            "headers_env": {"Authorization": "NW_T_PORTAL_AUTH"},
            "headers_file": {"X-Api-Key": str(key_file)},
        }
    )
    samples = await HttpProbe(cfg, name="api", timeout_s=3).collect()
    _, status = _split_named(samples)
    assert status["status"] == "ok", status
    _, headers = web.site.seen[-1]
    assert headers["Authorization"] == BEARER and headers["X-Api-Key"] == API_KEY
    assert headers["User-Agent"] == "netwatch"
    for text in (_everything(samples), repr(cfg), str(cfg)):
        assert BEARER not in text and API_KEY not in text
    # a rotated file is read at the next poll
    key_file.write_text("rotated-key\n")
    _, status = _split_named(await HttpProbe(cfg, name="api", timeout_s=3).collect())
    assert status["status"] == "down" and web.site.seen[-1][1]["X-Api-Key"] == "rotated-key"
    assert "rotated-key" not in status["error"]
    # a variable gone at poll time: down, naming the variable
    monkeypatch.delenv("NW_T_PORTAL_AUTH")
    _, status = _split_named(await HttpProbe(cfg, name="api", timeout_s=3).collect())
    assert status["status"] == "down" and "NW_T_PORTAL_AUTH is not set" in status["error"]


def test_header_sources_are_checked_when_the_config_loads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    base = {"url": "http://127.0.0.1/"}
    with pytest.raises(ValidationError, match="NW_T_UNSET"):
        HttpConfig.model_validate({**base, "headers_env": {"Authorization": "NW_T_UNSET"}})
    with pytest.raises(ValidationError, match="does not exist"):
        HttpConfig.model_validate({**base, "headers_file": {"Authorization": str(tmp_path / "nope")}})
    monkeypatch.setenv("NW_T_SET", "x")
    with pytest.raises(ValidationError, match="both headers and headers_env"):
        HttpConfig.model_validate(
            {**base, "headers": {"authorization": "a"}, "headers_env": {"Authorization": "NW_T_SET"}}
        )
    # an inline value, the URL's password and the body never show in a repr (nor does a bad URL in its error)
    cfg = HttpConfig.model_validate(
        {"url": f"https://u:{PASSWORD}@portal.example/", "headers": {"Authorization": BEARER}, "body": "pw=hunter22"}
    )
    assert PASSWORD not in repr(cfg) and BEARER not in repr(cfg) and "hunter22" not in repr(cfg)
    with pytest.raises(ValidationError) as e:
        HttpConfig.model_validate({"url": f"ftp://u:{PASSWORD}@portal.example/"})
    assert PASSWORD not in e.value.errors()[0]["msg"]  # the message config errors print (problems_from)


def test_redact_url_rule() -> None:
    from probes.http.config import redact_url

    assert redact_url("https://a:b@h.example:8443/p?x=1") == "https://h.example:8443/p?x=1"
    assert (
        redact_url("https://h/?Token=1&SIGNATURE=2&api_key=3&pwd=4&q=5")
        == "https://h/?Token=***&SIGNATURE=***&api_key=***&pwd=***&q=5"
    )
    assert redact_url("https://h/path") == "https://h/path" and redact_url("not a url") == "not a url"


def _split_named(samples: list[Sample]) -> tuple[dict[str, Any], dict[str, Any]]:
    status = next(s for s in samples if s.measurement == "probe_status")
    data = next((s for s in samples if s.measurement == "http"), None)
    return (dict(data.fields) if data else {}), dict(status.fields)
