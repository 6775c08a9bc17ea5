"""Pause sharing on the node, and the node thread the tray runs it on (no display needed)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from quorum.errors import Forbidden
from quorum.tray.runner import NodeReport, NodeThread
from tests.harness import node_config, start_node, timeout


class PeerTransport:
    """The only thing a request asks its transport here: who is on the other end."""

    def __init__(self, peer: tuple[str, int]) -> None:
        self.peer = peer

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def is_closing(self) -> bool:
        return False


async def ok(request: web.Request) -> web.StreamResponse:
    return web.Response(text="served")


async def test_pause_refuses_other_machines_and_keeps_serving_this_one(tmp_path: Path) -> None:
    node = await start_node(node_config(tmp_path))
    try:
        remote = make_mocked_request(
            "GET", "/v1/models", transport=PeerTransport(("192.0.2.7", 40000))
        )
        local = make_mocked_request(
            "GET", "/v1/models", transport=PeerTransport(("127.0.0.1", 40001))
        )
        assert (await node._sharing_gate(remote, ok)).status == 200

        await node.pause_sharing()
        await node.pause_sharing()  # idempotent
        assert node.sharing_paused
        with pytest.raises(Forbidden) as refused:
            await node._sharing_gate(remote, ok)
        assert refused.value.code == "sharing_paused"
        assert (await node._sharing_gate(local, ok)).status == 200
        relayed = make_mocked_request(
            "GET",
            "/v1/models",
            headers={"X-Quorum-Hop": "1"},
            transport=PeerTransport(("127.0.0.1", 40002)),
        )
        with pytest.raises(Forbidden):  # a peer's request through the relay tunnel
            await node._sharing_gate(relayed, ok)
        # Through the whole app, over loopback: still served.
        async with (
            aiohttp.ClientSession() as session,
            session.get(node.url + "/v1/models") as resp,
        ):
            assert resp.status == 200

        await node.resume_sharing()
        assert not node.sharing_paused
        assert (await node._sharing_gate(remote, ok)).status == 200
    finally:
        await node.stop()


class Reports:
    """Collects a NodeThread's reports; ``wait`` blocks until one matches (with a deadline)."""

    def __init__(self) -> None:
        self.items: list[NodeReport] = []
        self._changed = threading.Condition()

    def __call__(self, report: NodeReport) -> None:
        with self._changed:
            self.items.append(report)
            self._changed.notify_all()

    def wait(
        self, what: str, predicate: Callable[[NodeReport], bool], after: int = -1
    ) -> tuple[int, NodeReport]:
        """The first report after index ``after`` matching ``predicate``, and its index."""

        def match() -> tuple[int, NodeReport] | None:
            for index, report in enumerate(self.items):
                if index > after and predicate(report):
                    return index, report
            return None

        with self._changed:
            found = self._changed.wait_for(match, timeout(20))
            assert found, f"no report {what}: {self.items[-3:]}"
            return found


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_the_node_thread_reports_pauses_and_stops(tmp_path: Path) -> None:
    reports = Reports()
    runner = NodeThread(node_config(tmp_path), reports, interval_s=60)
    runner.start()
    try:
        _, first = reports.wait("with a status", lambda r: r.status is not None)
        assert first.error is None and not first.paused
        assert first.status is not None and first.status["node"]["ready"]
        port = int(first.status["node"]["url"].rsplit(":", 1)[1].split("/")[0])
        assert port_open(port)

        runner.set_paused(True).result(timeout(10))
        # The change is reported at once, not at the next 60 s tick.
        index, _ = reports.wait("paused", lambda r: r.paused)
        runner.set_paused(False).result(timeout(10))
        reports.wait("resumed", lambda r: not r.paused, after=index)
    finally:
        runner.stop()
    assert not any(t.name == "quorum-node" for t in threading.enumerate())
    assert not port_open(port)


def test_a_node_that_cannot_start_is_reported_and_stops_cleanly(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        port = squatter.getsockname()[1]
        reports = Reports()
        runner = NodeThread(node_config(tmp_path, node={"port": port}), reports)
        runner.start()
        try:
            _, failed = reports.wait("with an error", lambda r: r.error is not None)
        finally:
            runner.stop()
    assert failed.status is None
    assert failed.error is not None and f"port {port}" in failed.error
    assert not any(t.name == "quorum-node" for t in threading.enumerate())
