"""Reading the configuration: YAML file, then ``QUORUM_*`` env vars, then flags.

Precedence, lowest first: built-in defaults, the YAML file, environment
variables, command-line flags. The file is ``--config FILE``, else
``$QUORUM_CONFIG``, else ``config.yaml`` in the platform's user config dir
(absent is fine: the defaults apply).

Environment variables name one key each: ``QUORUM_<SECTION>__<KEY>`` (double
underscore between levels), e.g. ``QUORUM_NODE__PORT=9000`` or
``QUORUM_CLUSTER__TOKEN=...``; values are parsed as YAML scalars. A few short
forms exist for the common ones: ``QUORUM_PORT``, ``QUORUM_NAME``,
``QUORUM_BIND``, ``QUORUM_TOKEN``, ``QUORUM_RELAY``, ``QUORUM_LOG_LEVEL``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import platformdirs
import yaml
from pydantic import ValidationError

from quorum.config.models import Config
from quorum.errors import ConfigError

ENV_PREFIX = "QUORUM_"
SHORT_ENV: dict[str, tuple[str, ...]] = {
    "QUORUM_PORT": ("node", "port"),
    "QUORUM_NAME": ("node", "name"),
    "QUORUM_BIND": ("node", "bind"),
    "QUORUM_TOKEN": ("cluster", "token"),
    "QUORUM_RELAY": ("relay", "url"),
    "QUORUM_LOG_LEVEL": ("log_level",),
}
NOT_KEYS = {"QUORUM_CONFIG", "QUORUM_TEST_TIMEOUT_FACTOR"}


def default_config_path() -> Path:
    return Path(platformdirs.user_config_dir("quorum")) / "config.yaml"


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("quorum"))


def config_path(explicit: str | None, env: Mapping[str, str]) -> tuple[Path, bool]:
    """The file to read, and whether the user named it (then it must exist)."""
    if explicit:
        return Path(explicit).expanduser(), True
    if env.get("QUORUM_CONFIG"):
        return Path(env["QUORUM_CONFIG"]).expanduser(), True
    return default_config_path(), False


def read_yaml(path: Path, *, required: bool) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            raise ConfigError("file not found", source=str(path)) from None
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror}", source=str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{problem}{where}", source=str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a mapping of sections", source=str(path))
    return data


def env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """The nested dict that ``QUORUM_*`` variables describe."""
    out: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name in NOT_KEYS:
            continue
        path = SHORT_ENV.get(name)
        if path is None:
            parts = name[len(ENV_PREFIX) :].lower().split("__")
            if len(parts) < 2 or not all(parts):
                continue
            path = tuple(parts)
        try:
            value = yaml.safe_load(raw) if raw else raw
        except yaml.YAMLError:
            value = raw
        if isinstance(value, int | float) and path[-1] in {"name", "token", "url"}:
            value = raw
        set_path(out, path, value)
    return out


def set_path(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = tree
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[path[-1]] = value


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def validate(data: Mapping[str, Any], *, source: str = "") -> Config:
    """Validate a merged dict; the first problem becomes a ConfigError naming its key."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise config_error_from(exc, source) from None


def config_error_from(exc: ValidationError, source: str) -> ConfigError:
    problems = exc.errors(include_url=False)
    first = problems[0]
    key = ".".join(str(p) for p in first["loc"])
    message = str(first["msg"])
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif first["type"] == "missing":
        message = "this key is required"
    else:
        message = message.removeprefix("Value error, ")
        if "input" in first and not isinstance(first["input"], dict | list):
            message = f"{message} (got {first['input']!r})"
    more = len(problems) - 1
    if more:
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    return ConfigError(message, key=key, source=source)


def load_config(
    explicit_path: str | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Build the effective config: file < env < ``overrides`` (from flags)."""
    env = os.environ if env is None else env
    path, required = config_path(explicit_path, env)
    data = read_yaml(path, required=required)
    data = deep_merge(data, env_overrides(env))
    if overrides:
        data = deep_merge(data, overrides)
    return validate(data, source=str(path))
