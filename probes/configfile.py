"""Loading YAML config files and turning validation failures into messages that name the
file, the key and the fix. Shared by the agent and the collector."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError, ValidationInfo


class StrictModel(BaseModel):
    """The base of every config section: frozen, unknown keys refused. ``validate_default``: defaults
    go through the same validators (a default relative path resolves against the config's folder)."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


def checks_files(info: ValidationInfo) -> bool:
    """Whether to check that referenced files and environment variables exist (off only when
    schema-checking example configs meant for another machine)."""
    return not (info.context or {}).get("skip_file_checks", False)


class SecretMissing(ValueError):
    """A secret named in the config cannot be read now (variable unset, file gone or empty)."""


def read_secret(value: SecretStr | str | None, env: str | None, file: Path | None, what: str) -> str | None:
    """The secret from whichever source is set (literal, environment variable, file), read now so a
    rotated file or variable is picked up next time. ``None`` when no source is set."""
    if value is not None:
        return value.get_secret_value() if isinstance(value, SecretStr) else value
    if env is not None:
        text = os.environ.get(env)
        if not text:
            raise SecretMissing(f"{what}: environment variable {env} is not set or empty")
        return text
    if file is not None:
        try:
            text = Path(file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise SecretMissing(f"{what}: cannot read {file}: {e}") from None
        if not text:
            raise SecretMissing(f"{what}: {file} is empty")
        return text
    return None


@dataclass(frozen=True, slots=True)
class Problem:
    key: str
    message: str
    fix: str

    def render(self, file: str) -> str:
        text = f"{file}: {self.key}: {self.message}" if self.key else f"{file}: {self.message}"
        return f"{text}\n    fix: {self.fix}" if self.fix else text


class ConfigError(Exception):
    """A config file that cannot be used. ``str()`` is the message for the operator."""

    def __init__(self, file: str | Path, problems: Sequence[Problem]) -> None:
        self.file = str(file)
        self.problems = list(problems)
        super().__init__("\n".join(p.render(self.file) for p in self.problems))


def key_path(loc: Iterable[Any]) -> str:
    """('probes', 2, 'count') -> 'probes[2].count'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _allowed_keys(model: type[BaseModel] | None, loc: Sequence[Any]) -> list[str]:
    """The keys the model accepts at ``loc`` (best effort; used for did-you-mean)."""
    cur: Any = model
    for part in loc:
        if isinstance(part, int) or cur is None:
            continue
        fields = getattr(cur, "model_fields", None)
        if not fields or part not in fields:
            return []
        ann = fields[part].annotation
        cur = _model_in(ann)
    fields = getattr(cur, "model_fields", None)
    return sorted(fields) if fields else []


def _model_in(ann: Any) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        m = _model_in(arg)
        if m is not None:
            return m
    return None


def _fix_for(err: Mapping[str, Any], allowed: list[str]) -> str:
    kind = err["type"]
    name = str(err["loc"][-1]) if err["loc"] else ""
    if kind == "missing":
        return f"add the key '{name}'"
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(name, allowed, n=1)
        if close:
            return f"did you mean '{close[0]}'? (allowed here: {', '.join(allowed)})"
        return f"remove '{name}'" + (f"; allowed here: {', '.join(allowed)}" if allowed else "")
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "give a whole number"
    if kind in ("float_parsing", "float_type"):
        return "give a number"
    if kind in ("bool_parsing", "bool_type"):
        return "write true or false"
    if kind in ("string_type",):
        return "give a text value (quote it if it looks like a number)"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return "this must be a mapping of key: value lines"
    if kind == "list_type":
        return "this must be a list (lines starting with '- ')"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected")
        return f"use one of {expected}" if expected else ""
    if kind.startswith("greater_than") or kind.startswith("less_than"):
        return "pick a value inside the allowed range"
    if kind == "string_pattern_mismatch":
        return "use only the characters allowed (see the message)"
    return ""


def problems_from(
    exc: ValidationError, model: type[BaseModel] | None = None, prefix: Sequence[Any] = ()
) -> list[Problem]:
    out: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc = tuple(prefix) + tuple(err["loc"])
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        allowed = _allowed_keys(model, err["loc"][:-1]) if err["type"] == "extra_forbidden" else []
        out.append(Problem(key_path(loc), msg, _fix_for(err, allowed)))
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read one YAML mapping, or raise ConfigError naming the line and column."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            p, [Problem("", "file not found", "check the path, or copy an example from configs/")]
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(
            p, [Problem("", f"cannot read: {e}", "check permissions and that it is UTF-8 text")]
        ) from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(
            p, [Problem(where, f"not valid YAML: {problem}", "check indentation and quoting near that line")]
        ) from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(
            p, [Problem("", "the file must be a mapping of key: value lines at the top", "see configs/ for examples")]
        )
    return doc


def validate(
    model: type[BaseModel], doc: dict[str, Any], file: str | Path, *, context: dict[str, Any] | None = None
) -> Any:
    try:
        return model.model_validate(doc, context=context)
    except ValidationError as e:
        raise ConfigError(file, problems_from(e, model)) from None
