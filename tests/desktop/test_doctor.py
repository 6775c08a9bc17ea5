"""``quorum doctor``: real sockets on loopback, a fake engine and a stand-in relay."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from quorum.cli import main
from quorum.config.load import deep_merge, validate
from quorum.config.models import Config
from quorum.doctor import Check, Finding, Report, Status, Timeouts, diagnose, render
from quorum.doctor.relay import MAX_SKEW_S, judge_skew
from quorum.doctor.report import make_report
from tests.fakes import FakeVLLM, closed_port
from tests.harness import node_config, start_node, timeout

TOKEN = "qc_doctor-test-token-0123456789"
FAST = Timeouts(connect_s=timeout(3), http_s=timeout(5), multicast_s=timeout(1))


def doctor_config(tmp: Path, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "node": {"name": "doc", "port": 0, "data_dir": str(tmp / "data")},
        "cluster": {"token": TOKEN},
        "autodetect": {"enabled": False},
        "embedded": {"mode": "off"},
        "discovery": {"interfaces": ["lo"]},  # multicast stays on this machine
    }
    return deep_merge(base, over)


def by_check(report: Report, check: Check) -> list[Finding]:
    return [f for f in report.findings if f.check is check]


def test_a_stopped_engine_and_an_unreachable_relay_are_named_with_their_fixes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    engine_port, relay_port = closed_port(), closed_port()
    config = doctor_config(
        tmp_path,
        services=[
            {"name": "vllm-main", "engine": "vllm", "url": f"http://127.0.0.1:{engine_port}/v1"}
        ],
        relay={"url": f"ws://127.0.0.1:{relay_port}/tunnel"},
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))

    started = time.monotonic()
    assert main(["doctor", "--config", str(path)]) == 1
    assert time.monotonic() - started < timeout(15)
    out = capsys.readouterr().out

    engine = f"service 'vllm-main' (vllm) at http://127.0.0.1:{engine_port}/v1 does not answer"
    assert f"FAIL  {engine}: connection refused" in out
    assert "fix: start vLLM ('vllm serve MODEL --port PORT')" in out
    assert "remove the service 'vllm-main'" in out
    assert (
        f"FAIL  relay unreachable at 127.0.0.1:{relay_port}: connection refused "
        "(nothing listens there)"
    ) in out
    assert "fix: check that the relay runs" in out
    assert "no engine answers on this machine" in out  # nothing else serves either
    assert "3 problems found" in out
    assert "clock not checked (the relay did not answer)" in out

    assert main(["doctor", "--config", str(path), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    failed = [f for f in data["findings"] if f["status"] == "fail"]
    assert {f["check"] for f in failed} == {"engines", "relay"}
    assert all(f["fix"] for f in failed)


class StandInRelay:
    """Just enough of a relay: ``/healthz`` with a chosen Date, ``/tunnel`` checking a token."""

    def __init__(self, token: str, clock_offset_s: float = 0.0) -> None:
        self.token = token
        self.clock_offset_s = clock_offset_s
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def healthz(self, request: web.Request) -> web.Response:
        date = formatdate(time.time() + self.clock_offset_s, usegmt=True)
        return web.json_response({"status": "ok"}, headers={"Date": date})

    async def tunnel(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"error": "invalid token"}, status=401)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.close()
        return ws

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/tunnel", self.tunnel)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self.runner.addresses[0][1])
        return f"ws://127.0.0.1:{self.port}/tunnel"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def engine() -> AsyncIterator[FakeVLLM]:
    fake = FakeVLLM(models=["Qwen/Qwen3-0.6B", "Qwen/Qwen3-8B"])
    await fake.start()
    yield fake
    await fake.stop()


async def relay_and_config(
    tmp: Path, engine: FakeVLLM, *, token: str, offset: float, **over: Any
) -> tuple[StandInRelay, Config]:
    relay = StandInRelay(TOKEN, clock_offset_s=offset)
    url = await relay.start()
    config = doctor_config(
        tmp,
        services=[{"name": "vllm-main", "engine": "vllm", "url": engine.url + "/v1"}],
        relay={"url": url},
        cluster={"token": token},
        **over,
    )
    return relay, validate(config)


async def test_a_healthy_machine_has_no_problems(tmp_path: Path, engine: FakeVLLM) -> None:
    relay, config = await relay_and_config(tmp_path, engine, token=TOKEN, offset=0)
    try:
        report = await diagnose(config, FAST)
    finally:
        await relay.stop()
    assert report.exit_code == 0, render(report)
    assert [f.summary for f in by_check(report, Check.ENGINES)] == [
        f"service 'vllm-main' (vllm) at {engine.url}/v1: 2 model(s)"
    ]
    relay_lines = [f.summary for f in by_check(report, Check.RELAY)]
    assert relay_lines == [
        f"TCP connects to 127.0.0.1:{relay.port}",
        f"http://127.0.0.1:{relay.port}/healthz answers 200",
        "the relay accepted the cluster token",
    ]
    assert by_check(report, Check.CLOCK)[0].status is Status.OK
    assert by_check(report, Check.MULTICAST)[0].summary.startswith("multicast works on lo")
    assert "No problems found." in render(report)


async def test_a_refused_token_and_a_wrong_clock_are_problems(
    tmp_path: Path, engine: FakeVLLM
) -> None:
    relay, config = await relay_and_config(
        tmp_path, engine, token="qc_not-the-cluster-token-000", offset=-120
    )
    try:
        report = await diagnose(config, FAST)
    finally:
        await relay.stop()
    problems = {(f.check, f.summary) for f in report.problems}
    assert problems == {
        (Check.RELAY, "the relay refused the cluster token (HTTP 401)"),
        (Check.CLOCK, "this machine's clock is 120 s ahead of the relay's"),
    }, render(report)
    assert all(f.fix for f in report.problems)
    assert report.exit_code == 1


async def test_port_taken_by_a_node_is_fine_by_another_program_is_not(
    tmp_path: Path, engine: FakeVLLM
) -> None:
    node = await start_node(node_config(tmp_path / "node"))
    try:
        config = validate(doctor_config(tmp_path, node={"port": node.port}))
        findings = by_check(await diagnose(config, FAST), Check.PORT)
        assert findings[0] == Finding(
            Check.PORT, Status.OK, f"port {node.port} is in use by a running Quorum node (node-a)"
        )
    finally:
        await node.stop()

    with socket.socket() as squatter:
        squatter.bind(("0.0.0.0", 0))
        squatter.listen(1)
        port = squatter.getsockname()[1]
        config = validate(doctor_config(tmp_path, node={"port": port}))
        findings = by_check(await diagnose(config, FAST), Check.PORT)
    assert findings[0].status is Status.FAIL
    assert findings[0].summary == f"port {port} is taken by another program"
    assert findings[0].fix is not None and f"ss -ltnp 'sport = :{port}'" in findings[0].fix


async def test_no_relay_and_no_discovery_are_information_not_problems(
    tmp_path: Path, engine: FakeVLLM
) -> None:
    config = validate(
        doctor_config(
            tmp_path,
            services=[{"name": "v", "url": engine.url}],
            discovery={"enabled": False},
        )
    )
    report = await diagnose(config, FAST)
    assert report.exit_code == 0
    assert [(f.check, f.status) for f in report.findings if f.status is Status.INFO] == [
        (Check.PORT, Status.INFO),  # port 0: the system picks
        (Check.MULTICAST, Status.INFO),
        (Check.RELAY, Status.INFO),
        (Check.CLOCK, Status.INFO),
    ]


def test_skew_judgement() -> None:
    assert judge_skew(None, reachable=False)[0].summary == (
        "clock not checked (no relay to compare with)"
    )
    assert judge_skew(MAX_SKEW_S, reachable=True)[0].status is Status.OK
    late = judge_skew(-MAX_SKEW_S - 30, reachable=True)[0]
    assert late.status is Status.FAIL and "35 s behind" in late.summary
    assert late.fix is not None and "timedatectl set-ntp true" in late.fix


def test_render_groups_by_check_and_prints_fixes_for_problems_only() -> None:
    report = make_report(
        [
            Finding(Check.RELAY, Status.FAIL, "relay down", "start it"),
            Finding(Check.ENGINES, Status.OK, "ollama fine", "never shown"),
            Finding(Check.ENGINES, Status.WARN, "odd", "look"),
        ]
    )
    assert render(report) == (
        "Engines\n"
        "  ok    ollama fine\n"
        "  warn  odd\n"
        "        fix: look\n"
        "\n"
        "Relay\n"
        "  FAIL  relay down\n"
        "        fix: start it\n"
        "\n"
        "1 problem found, 1 warning: see 'fix' above, and docs/troubleshooting.md.\n"
    )
    assert report.exit_code == 1
