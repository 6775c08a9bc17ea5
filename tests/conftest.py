"""Shared fixtures: a background loop, and a rig of fake engines behind a real node."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
from hypothesis import HealthCheck, settings

from quorum.app import Node
from tests.fakes import FakeEngine, LoopThread
from tests.harness import node_config, start_node, timeout

# These machines are shared and noisy: a property test may not fail for being slow.
settings.register_profile("quorum", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("quorum")


@pytest.fixture(scope="module")
def bg() -> Iterator[LoopThread]:
    with LoopThread("test-servers") as loop:
        yield loop


@dataclass
class Rig:
    """Fake engines and one node in front of them, all on ``bg``'s loop."""

    bg: LoopThread
    node: Node
    fakes: dict[str, FakeEngine] = field(default_factory=dict)
    clients: list[openai.OpenAI | openai.AsyncOpenAI] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return self.node.url + "/v1"

    def client(self, **kw: Any) -> openai.OpenAI:
        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", timeout(20))
        client = openai.OpenAI(base_url=self.base_url, api_key="unused", **kw)
        self.clients.append(client)
        return client

    def async_client(self, **kw: Any) -> openai.AsyncOpenAI:
        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", timeout(20))
        return openai.AsyncOpenAI(base_url=self.base_url, api_key="unused", **kw)


MakeRig = Callable[..., Rig]


@pytest.fixture
def make_rig(bg: LoopThread, tmp_path: Path) -> Iterator[MakeRig]:
    """``make_rig(services={"name": (fake, {service config})}, **config)`` -> Rig."""
    made: list[Rig] = []

    def make(
        services: dict[str, tuple[FakeEngine, dict[str, Any]]] | None = None, **over: Any
    ) -> Rig:
        fakes: dict[str, FakeEngine] = {}
        entries = []
        for name, (fake, extra) in (services or {}).items():
            url = extra.pop("url", None) or bg.run(fake.start())
            fakes[name] = fake
            entries.append({"name": name, "url": url, **extra})
        config = node_config(tmp_path / f"node{len(made)}", services=entries, **over)
        rig = Rig(bg, bg.run(start_node(config)), fakes)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        for client in rig.clients:
            if isinstance(client, openai.OpenAI):
                client.close()
        with contextlib.suppress(Exception):
            bg.run(rig.node.stop())
        for fake in rig.fakes.values():
            with contextlib.suppress(Exception):
                bg.run(fake.stop())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under CI (``CI`` set) a skipped test fails: CI installs everything every test needs,
    so a skip can only hide something broken."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and os.environ.get("CI") and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under CI (CI is set, so a skip fails the run): {reason}"
