"""Model aliases: other names for models the cluster holds.

Rules:
- ``aliases`` maps an alias to a model name (``{"llama3": "llama3.1:8b"}``),
  from the config's top-level ``aliases`` key. Names match exactly.
- An alias resolves in one step; the config refuses an alias whose target is
  itself an alias, so there are no chains and no cycles.
- An alias wins over a model of the same name: the config says what a name
  means, whatever peers come and go.
- The service type still decides: an alias of a chat model is a chat model.
- ``/v1/models`` lists an alias as a model of its own while its target is
  held (``listed``), pointing at the target.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from types import MappingProxyType

NO_ALIASES: Mapping[str, str] = MappingProxyType({})


def resolve_alias(aliases: Mapping[str, str], model: str) -> str:
    """The model ``model`` names: its alias target, or itself."""
    return aliases.get(model, model)


def listed(aliases: Mapping[str, str], held: Collection[str]) -> tuple[tuple[str, str], ...]:
    """``(alias, target)`` pairs to show in ``/v1/models``: those whose target is held."""
    return tuple(sorted((a, t) for a, t in aliases.items() if t in held))
