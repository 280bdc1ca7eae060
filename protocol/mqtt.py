"""MQTT connection settings (the ``mqtt:`` section of both the agent's and the collector's config)
and the one place a paho client gets its credentials and TLS set up."""

from __future__ import annotations

import ipaddress
import os
import ssl
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import Field, ValidationInfo, model_validator

from probes.base import Duration, ExistingFile
from probes.configfile import StrictModel, checks_files, read_secret
from protocol.topics import DEFAULT_ROOT


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (localhost, 127.0.0.0/8, ::1)."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Tls(StrictModel):
    ca_file: ExistingFile | None = None
    cert_file: ExistingFile | None = None
    key_file: ExistingFile | None = None
    #: skip hostname verification (never the chain): only for brokers addressed by IP
    insecure_hostname: bool = False

    @model_validator(mode="after")
    def _pair(self) -> Tls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (client certificate and its key)")
        return self


class Mqtt(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    #: Prefer password_file or password_env: a password inline in a config file gets copied around.
    password: str | None = Field(None, repr=False)
    password_file: ExistingFile | None = None
    password_env: str | None = None
    #: TLS settings; required for a broker off this machine. ``false`` written out allows plaintext
    #: there anyway (and the agent warns at every start); left out, only loopback is allowed.
    tls: Tls | Literal[False] | None = None
    topic_root: str = DEFAULT_ROOT
    keepalive: Duration = 30.0
    client_id: str | None = None
    #: messages published but not yet acknowledged by the broker
    max_inflight: int = Field(20, ge=1, le=1000)

    @model_validator(mode="after")
    def _one_password(self, info: ValidationInfo) -> Mqtt:
        given = [n for n in ("password", "password_file", "password_env") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"give only one of {', '.join(given)}")
        if given and not self.username:
            raise ValueError("a password needs a username")
        if self.tls is None and not is_loopback(self.host):
            raise ValueError(
                f"broker {self.host} is not on this machine and no tls section is given: passwords and data "
                "would cross the network in clear — add tls: {ca_file: ...}, or write tls: false to accept that"
            )
        if not checks_files(info):
            return self
        if self.password_env is not None and self.password_env not in os.environ:
            raise ValueError(f"environment variable {self.password_env} (password_env) is not set")
        return self

    @property
    def uses_tls(self) -> bool:
        return isinstance(self.tls, Tls)

    @property
    def plaintext_off_host(self) -> bool:
        """Plaintext to another machine, allowed by ``tls: false``: worth a warning every start."""
        return not self.uses_tls and not is_loopback(self.host)

    def resolved_password(self) -> str | None:
        return read_secret(self.password, self.password_env, self.password_file, "mqtt password")


def make_client(
    settings: Mqtt,
    client_id: str,
    *,
    clean_session: bool,
    manual_ack: bool = False,
    userdata: Any = None,
) -> mqtt.Client:
    """A paho client with the settings' credentials and TLS; callbacks are the caller's."""
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean_session,
        manual_ack=manual_ack,
        userdata=userdata,
    )
    c.reconnect_delay_set(1, 30)
    if settings.username:
        c.username_pw_set(settings.username, settings.resolved_password())
    tls = settings.tls
    if isinstance(tls, Tls):
        c.tls_set(
            ca_certs=str(tls.ca_file) if tls.ca_file else None,
            certfile=str(tls.cert_file) if tls.cert_file else None,
            keyfile=str(tls.key_file) if tls.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
        c.tls_insecure_set(tls.insecure_hostname)
    return c
