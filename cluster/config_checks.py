"""The cluster config's checks: each bad key or value raises ConfigError, naming it."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key."""


_TYPES = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "int | None": (int, type(None)),
    "str | None": (str, type(None)),
    "dict[str, str]": (dict,),
}


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def mapping(raw: Any, where: str) -> Mapping[str, Any]:
    require(isinstance(raw, Mapping), f"{where}: must be a mapping of keys to values")
    return raw


def check_keys(raw: Mapping[str, Any], cls: type, where: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    require(not unknown, f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")


def typed(cls: type, key: str, value: Any, where: str) -> Any:
    kind = next(f.type for f in dataclasses.fields(cls) if f.name == key)
    allowed = _TYPES.get(kind, (object,))
    is_bool_as_number = isinstance(value, bool) and bool not in allowed
    require(
        isinstance(value, allowed) and not is_bool_as_number,
        f"{where}: expected {kind}, got {value!r}",
    )
    return float(value) if kind == "float" else value


def secret(value: str | None, key: str) -> str | None:
    if value is None or not value.startswith("env:"):
        return value
    name = value.removeprefix("env:")
    require(bool(os.environ.get(name)), f"{key}: environment variable {name} is not set")
    return os.environ[name]
