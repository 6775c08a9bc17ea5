"""Model aliases: one step, exact names, listed while their target is held."""

from __future__ import annotations

from quorum.routing import NO_ALIASES, listed, resolve_alias


def test_resolve_alias_is_one_exact_step() -> None:
    aliases = {"llama3": "llama3.1:8b", "small": "gemma-3-270m"}
    assert resolve_alias(aliases, "llama3") == "llama3.1:8b"
    assert resolve_alias(aliases, "Llama3") == "Llama3"
    assert resolve_alias(aliases, "llama3.1:8b") == "llama3.1:8b"
    assert resolve_alias(NO_ALIASES, "llama3") == "llama3"


def test_listed_only_while_the_target_is_held() -> None:
    aliases = {"z": "m1", "a": "m2", "gone": "nowhere"}
    assert listed(aliases, {"m1", "m2"}) == (("a", "m2"), ("z", "m1"))
    assert listed(aliases, set()) == ()
