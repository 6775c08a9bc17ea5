"""The configuration reference, rendered from the models so the docs cannot drift.

``python -m quorum.config.reference > docs/configuration.md``; a test checks
that the committed file is what this prints.
"""

from __future__ import annotations

import enum
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from quorum.config.load import SHORT_ENV
from quorum.config.models import Config, ServiceConfig

INTRO = """\
# Configuration

Quorum reads `config.yaml` from the user config directory (`~/.config/quorum/` on
Linux, `~/Library/Application Support/quorum/` on macOS, `%LOCALAPPDATA%\\quorum\\` on
Windows), or the file named by `--config FILE` or `$QUORUM_CONFIG`. No file is fine:
every key has a default. Precedence, lowest first: defaults, the file, environment
variables, `quorum up` flags.

Any single key can be set from the environment as `QUORUM_<SECTION>__<KEY>`, e.g.
`QUORUM_NODE__PORT=9000`. Short forms: {short}.

An unknown key or a bad value stops the node with a message naming the key, e.g.
`config error in ~/.config/quorum/config.yaml at 'services.0.url': String should match
pattern '^https?://' (got 'localhost:8000')`.

_This page is generated from `quorum/config/models.py` by
`python -m quorum.config.reference`; do not edit it by hand._
"""


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " or ".join(_type_name(a) for a in args) + (
            " or null" if type(None) in typing.get_args(annotation) else ""
        )
    if origin in (tuple, frozenset, list):
        return f"list of {_type_name(args[0])}" if args else "list"
    if isinstance(annotation, type):
        if issubclass(annotation, enum.Enum):
            return " \\| ".join(f"`{m.value}`" for m in annotation)
        if issubclass(annotation, BaseModel):
            return "mapping"
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(
            annotation.__name__, annotation.__name__
        )
    return str(annotation)


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        return "(computed)"
    value = info.default
    if value is None:
        return "—"
    if isinstance(value, enum.Enum):
        return f"`{value.value}`"
    if isinstance(value, tuple) and value and isinstance(value[0], BaseModel):
        items = (" ".join(str(v) for v in m.model_dump(mode="json").values()) for m in value)
        return "<br>".join(f"`{item}`" for item in items)
    if isinstance(value, tuple | frozenset) and not value:
        return "`[]`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def _table(model: type[BaseModel], prefix: str) -> list[str]:
    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            continue
        lines.append(
            f"| `{prefix}{name}` | {_type_name(info.annotation)} | {_default(info)} "
            f"| {info.description or ''} |"
        )
    return lines


def render() -> str:
    short = ", ".join(f"`{k}` ({'.'.join(v)})" for k, v in SHORT_ENV.items())
    out = [INTRO.format(short=short)]
    for name, info in Config.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            doc = (annotation.__doc__ or "").strip().splitlines()
            out.append(f"## `{name}`\n")
            if doc and not doc[0].startswith("!!!") and "Usage docs" not in doc[0]:
                out.append(doc[0] + "\n")
            out.extend(_table(annotation, f"{name}."))
            out.append("")
    out.append("## `services`\n")
    out.append(
        "A list of engines this node fronts (the agents' manifest format). "
        "`hosts: [{id, services}]` is accepted too: the entry whose `id` is this "
        "node's name applies.\n"
    )
    out.extend(_table(ServiceConfig, "services[]."))
    out.append("")
    out.append("## Top level\n")
    out.extend(
        line for line in _table(Config, "") if not line.startswith(("| `services`", "| `hosts`"))
    )
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render(), end="")
