"""Discovery over real multicast between network namespaces (root only).

Each node is a separate process (``tests.discovery.mdns_node``) in its own
namespace on one private bridge; every wait has a deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from quorum.discovery import cluster_discriminator, models_digest
from tests.discovery.harness import DEADLINE_S, Avahi, Event, Node
from tests.netns import TIMEOUT_FACTOR, Lan, require_netns

GOODBYE_S = 5.0 * TIMEOUT_FACTOR  # zeroconf reports a goodbye about 1 s after it arrives

pytestmark = [pytest.mark.netns, pytest.mark.timeout(int(10 * DEADLINE_S))]


@pytest.fixture
def lan(request: pytest.FixtureRequest) -> Iterator[Lan]:
    require_netns()
    hosts = getattr(request, "param", 2)
    with Lan(hosts) as built:
        yield built


def started(nodes: list[Node]) -> None:
    for node in nodes:
        node.wait_for("ready", lambda e: e["event"] == "ready")


def stop_all(nodes: list[Node]) -> None:
    for node in nodes:
        code = node.stop()
        assert code == 0, f"{node.node_id} exited {code}:\n{node.log_tail()}"
        closed = [e for e in node.events if e["event"] == "closed"]
        assert closed == [{"event": "closed", "tasks_left": []}], node.events


@pytest.mark.parametrize("lan", [4], indirect=True)
def test_nodes_of_one_cluster_find_each_other_and_no_other(lan: Lan, tmp_path: Path) -> None:
    x = [
        Node(lan, lan.hosts[i], tmp_path, node_id=f"x{i}node", name=f"x {i}", token="token-X")
        for i in (0, 1)
    ]
    y = [
        Node(lan, lan.hosts[2 + i], tmp_path, node_id=f"y{i}node", name=f"y {i}", token="token-Y")
        for i in (0, 1)
    ]
    try:
        started(x + y)
        for me, other in ((x[0], x[1]), (x[1], x[0]), (y[0], y[1]), (y[1], y[0])):
            index = me.wait_for(f"found {other.node_id}", me.found(other.node_id))
            assert me.events[index]["addresses"] == [other.host.address]
            assert me.events[index]["cluster"] == cluster_discriminator(
                "token-X" if me in x else "token-Y"
            )
        # x0 heard y's adverts (y found each other over the same bridge) and
        # said so once at warning level, then only at debug.
        y0_instance = "y 0 (y0node)._quorum._tcp.local."
        warning = f"WARNING quorum.discovery ignoring {y0_instance}: it belongs to another cluster"
        _wait_for_log(x[0], warning)
    finally:
        stop_all(x + y)
    for me in x:
        assert me.seen_ids() <= {"x0node", "x1node"}, me.events
    for me in y:
        assert me.seen_ids() <= {"y0node", "y1node"}, me.events
    assert x[0].log_path.read_text().count(warning) == 1


def test_update_pause_resume_and_goodbye(lan: Lan, tmp_path: Path) -> None:
    a = Node(lan, lan.hosts[0], tmp_path, node_id="anode", name="a", token="t", models="m1")
    b = Node(lan, lan.hosts[1], tmp_path, node_id="bnode", name="b", token="t", models="m1")
    nodes = [a, b]
    try:
        started(nodes)
        seen = a.wait_for("found b", a.found("bnode"))
        b.wait_for("found a", b.found("anode"))

        b.send("models m1,m2")
        digest = models_digest(["m2", "m1"])
        seen = a.wait_for("b's new digest", _updated("bnode", digest), after=seen)

        b.send("pause")
        seen = a.wait_for("b gone on pause", _removed("bnode"), after=seen)
        # b still browses while paused: it sees a's update.
        a.send("models m3")
        b.wait_for("a's update while paused", _updated("anode", models_digest(["m3"])))

        b.send("resume")
        seen = a.wait_for("b back on resume", a.found("bnode"), after=seen)

        start = time.monotonic()
        assert b.stop() == 0, b.log_tail()
        a.wait_for("b's goodbye", _removed("bnode"), after=seen, timeout=GOODBYE_S)
        assert time.monotonic() - start < GOODBYE_S
    finally:
        stop_all(nodes)


def test_avahi_sees_the_node(lan: Lan, tmp_path: Path) -> None:
    avahi = Avahi(lan, lan.hosts[1], tmp_path)
    avahi.start()
    node = Node(lan, lan.hosts[0], tmp_path, node_id="avnode01", name="Ünïcode box", token="tk")
    try:
        started([node])
        deadline = time.monotonic() + DEADLINE_S
        while not (found := avahi.browse("_quorum._tcp")):
            assert time.monotonic() < deadline, f"avahi saw nothing:\n{avahi.log_tail()}"
            time.sleep(0.2)
    finally:
        stop_all([node])
    (entry,) = {(r.name, r.address, r.port, r.txt) for r in found}
    name, address, port, txt = entry
    assert name == "Ünïcode box (avnode01)"
    assert address == lan.hosts[0].address
    assert port == 32768
    assert f"c={cluster_discriminator('tk')}" in txt
    assert "id=avnode01" in txt
    assert "n=Ünïcode box" in txt


def _updated(node_id: str, digest: str) -> Callable[[Event], bool]:
    return lambda e: (
        e["event"] == "updated" and e["node_id"] == node_id and e["models_digest"] == digest
    )


def _removed(node_id: str) -> Callable[[Event], bool]:
    return lambda e: e["event"] == "removed" and e["node_id"] == node_id


def _wait_for_log(node: Node, text: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while text not in node.log_path.read_text():
        assert time.monotonic() < deadline, f"no log line {text!r}:\n{node.log_tail()}"
        time.sleep(0.1)
