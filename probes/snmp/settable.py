"""The SNMP objects ``netwatch-agent snmp set`` may change, as data: an allow-list, so a typo or a
request from elsewhere can never SET anything else. Add an object here (with its values) to make
it settable; nothing else in the code needs to change."""

from __future__ import annotations

from dataclasses import dataclass

from probes.snmp.session import parse_oid


@dataclass(frozen=True, slots=True)
class Settable:
    """One settable column: its OID (without the instance), VarBind type and the values allowed,
    by name (what people type) -> number (what goes on the wire)."""

    name: str
    oid: str
    type: str
    values: dict[str, int]
    index: str  # what the instance suffix is, for messages: IFINDEX
    description: str = ""

    def name_of(self, value: object) -> str:
        """``2`` -> ``down(2)``; a value outside the enumeration as it came."""
        for k, v in self.values.items():
            if v == value:
                return f"{k}({v})"
        return str(value)


SETTABLE: dict[str, Settable] = {
    "ifAdminStatus": Settable(
        name="ifAdminStatus",
        oid="1.3.6.1.2.1.2.2.1.7",
        type="Integer",
        values={"up": 1, "down": 2},  # testing(3) exists in IF-MIB, but is not for a remote hand
        index="IFINDEX",
        description="IF-MIB: the desired state of an interface",
    ),
}


@dataclass(frozen=True, slots=True)
class SetRequest:
    """What to set, checked against :data:`SETTABLE`: the object, its instance and the value."""

    settable: Settable
    instance: str
    value: int

    @property
    def object(self) -> str:
        return f"{self.settable.name}.{self.instance}"

    @property
    def oid(self) -> str:
        return f"{self.settable.oid}.{self.instance}"

    @property
    def value_text(self) -> str:
        return self.settable.name_of(self.value)


def parse_set(obj: str, value: str) -> SetRequest:
    """``("ifAdminStatus.3", "down")`` -> the request; ValueError saying what is allowed otherwise."""
    allowed = ", ".join(f"{s.name}.{s.index}" for s in SETTABLE.values())
    name, _, instance = obj.strip().partition(".")
    settable = SETTABLE.get(name)
    if settable is None:
        raise ValueError(f"{obj!r} may not be set from netwatch; settable objects: {allowed}")
    if not instance:
        raise ValueError(f"{obj!r} needs its instance: {settable.name}.{settable.index}, e.g. {settable.name}.3")
    try:
        parse_oid(f"1.3.{instance}")
    except ValueError:
        raise ValueError(f"{obj!r}: the instance {instance!r} is not numeric ({settable.index})") from None
    if settable.index == "IFINDEX" and (not instance.isdigit() or not 1 <= int(instance) <= 2**31 - 1):
        raise ValueError(f"{obj!r}: an IFINDEX is one number from 1 to 2147483647")
    words = value.strip().lower()
    if words in settable.values:
        number = settable.values[words]
    elif words.isdigit() and int(words) in settable.values.values():
        number = int(words)
    else:
        choices = ", ".join(f"{k} ({v})" for k, v in settable.values.items())
        raise ValueError(f"{value!r} is not a value {settable.name} may be set to here: {choices}")
    return SetRequest(settable, instance, number)
