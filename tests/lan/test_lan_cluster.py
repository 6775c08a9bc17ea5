"""The LAN cluster end to end: real ``quorum up`` nodes on one bridge, SDK clients in namespaces.

Five hosts of one :class:`~tests.netns.Lan`, started once for the module:

- A, B, C: nodes of one cluster (one token from ``quorum token new``); only
  A fronts engines, a fake Ollama and a slow fake LM Studio on its loopback;
- D: a node of another cluster (another token) with its own fake vLLM;
- E: a machine that runs no node, for the requests "from another machine"
  (over TLS, presenting a member's certificate made from the token) and for avahi.

Nodes find each other over real multicast, fetch each other's models over
mutual TLS (no token on the wire) and forward requests; every wait polls with
a deadline. A is
stopped (SIGTERM, then SIGKILL after a restart) by the last two tests, which
therefore come last.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from quorum.discovery import cluster_discriminator
from quorum.secure import ClusterCA, ClusterTLS, Identity
from tests.discovery.harness import DEADLINE_S, Avahi
from tests.lan.harness import (
    NODE_PORT,
    FakeEngineProcess,
    Json,
    QuorumNode,
    SdkClient,
    base_url,
    child_env,
    node_url,
    poll,
)
from tests.netns import TIMEOUT_FACTOR, Host, Lan, require_netns

MODEL_A = "llama3.2:1b"  # on A's fake Ollama
SLOW_A = "qwen2.5-7b-instruct"  # on A's fake LM Studio, which streams slowly
MODEL_D = "Qwen/Qwen3-0.6B"  # on D's fake vLLM, in the other cluster
GOODBYE_S = 10.0 * TIMEOUT_FACTOR  # an mDNS goodbye takes a peer away in about 1 s
SILENCE_S = 65.0 * TIMEOUT_FACTOR  # the 60 s presence window, and a little
ANSWER_S = 5.0 * TIMEOUT_FACTOR  # a failing request answers at once, never hangs

pytestmark = [pytest.mark.netns, pytest.mark.timeout(int(12 * DEADLINE_S))]


@dataclass
class Cluster:
    """The module's LAN, its processes and where they write."""

    lan: Lan
    workdir: Path
    token: str
    other_token: str
    hosts: dict[str, Host]
    nodes: dict[str, QuorumNode] = field(default_factory=dict)
    engines: dict[str, FakeEngineProcess] = field(default_factory=dict)
    clients: dict[str, SdkClient] = field(default_factory=dict)
    configs: dict[str, Path] = field(default_factory=dict)
    starts: int = 0

    def start_node(self, name: str) -> QuorumNode:
        self.starts += 1
        log = self.workdir / f"node-{name}-{self.starts}.log"
        node = QuorumNode(self.lan, self.hosts[name], self.configs[name], log)
        self.nodes[name] = node
        return node

    def running(self, name: str) -> QuorumNode:
        """Node ``name``, started again (same config, same node id) if a test stopped it."""
        node = self.nodes[name]
        if not node.running:
            node = self.start_node(name)
            node.wait_ready()
        return node

    def client(self, name: str) -> SdkClient:
        return self.clients[name]


def new_token() -> str:
    result = subprocess.run(
        [sys.executable, "-m", "quorum.cli", "token", "new"],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        env=child_env(),
        check=True,
    )
    token = result.stdout.strip()
    assert token.startswith("qc_") and len(token) > 40, token
    return token


def member_tls(workdir: Path, token: str, name: str) -> Json:
    """A member's client certificate (made from the token, as a node makes its own) and the
    cluster CA, as ``tests.lan.client`` takes them; ``anonymous``: the CA alone."""
    where = workdir / f"member-{name}"
    tls = ClusterTLS(Identity.load_or_create(where), f"client-{name}", token, where)
    ca = where / "ca.pem"
    ca.write_text(ClusterCA.from_token(token).cert_pem)
    return {"ca": str(ca), "cert": str(tls.cert_path), "key": str(tls.key_path)}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_netns()
    workdir = tmp_path_factory.mktemp("lan")
    token, other_token = new_token(), new_token()
    with Lan(5) as lan:
        hosts = dict(zip("ABCDE", lan.hosts, strict=True))
        cl = Cluster(lan, workdir, token, other_token, hosts)
        try:
            cl.engines["A"] = FakeEngineProcess(
                lan, hosts["A"], workdir / "engine-A.log",
                kind="ollama", port=11434, models=[MODEL_A], chunk_delay=0.1,
            )  # fmt: skip
            cl.engines["A-slow"] = FakeEngineProcess(
                lan, hosts["A"], workdir / "engine-A-slow.log",
                kind="lmstudio", port=1234, models=[SLOW_A], chunks=50, chunk_delay=0.1,
            )  # fmt: skip
            cl.engines["D"] = FakeEngineProcess(
                lan, hosts["D"], workdir / "engine-D.log", kind="vllm", port=8000, models=[MODEL_D]
            )
            cl.clients["C"] = SdkClient(lan, hosts["C"], workdir / "client-C.log")
            cl.clients["E"] = SdkClient(
                lan, hosts["E"], workdir / "client-E.log", tls=member_tls(workdir, token, "E")
            )
            for engine in cl.engines.values():
                engine.wait_ready()
            services = {
                "A": [
                    {"name": "ollama-a", "engine": "ollama", "url": cl.engines["A"].url},
                    {"name": "lms-a", "engine": "lmstudio", "url": cl.engines["A-slow"].url},
                ],
                "D": [{"name": "vllm-d", "engine": "vllm", "url": cl.engines["D"].url + "/v1"}],
            }
            for name in "ABCD":
                cl.configs[name] = QuorumNode.write_config(
                    workdir / f"{name}.yaml",
                    name=name,
                    token=other_token if name == "D" else token,
                    data_dir=workdir / f"data-{name}",
                    services=services.get(name, ()),
                )
                cl.start_node(name)
            for node in cl.nodes.values():
                node.wait_ready()
            yield cl
        finally:
            problems = _stop_all(cl)
    assert not problems, "\n".join(problems)


def _stop_all(cl: Cluster) -> list[str]:
    """Stop everything; what went wrong with the nodes that were still running."""
    problems: list[str] = []
    for client in cl.clients.values():
        client.stop()
    for name, node in cl.nodes.items():
        was_running = node.running
        code = node.stop()
        if was_running and code != 0:
            problems.append(f"node {name} exited {code}:\n{node.tail()}")
        problems += [f"node {name}: {line}" for line in node.problems()]
    for engine in cl.engines.values():
        engine.stop()
    return problems


def listed(client: SdkClient, url: str, model: str, api_key: str = "unused") -> Json:
    """``model``'s entry in ``/v1/models`` at ``url``, once it appears there."""
    return poll(f"{model} in {url}/models", lambda: client.models(url, api_key).get(model))


def error_of(answer: Json) -> Json:
    """The ``error`` object of an OpenAI-shaped error answer; fails on any other shape."""
    body = answer.get("body")
    assert isinstance(body, dict) and set(body) == {"error"}, answer
    error: Json = body["error"]
    assert {"message", "type", "code"} <= set(error), answer
    assert isinstance(error["message"], str) and error["message"], answer
    return error


def test_c_serves_a_model_only_a_holds(cluster: Cluster) -> None:
    c = cluster.client("C")
    cluster.running("A")
    entry = listed(c, base_url(), MODEL_A)
    assert entry["owned_by"] == "A"
    holders = [(h["node"], h["route"], h["online"]) for h in entry["quorum"]["holders"]]
    assert holders == [("A", "lan", True)]
    engine = cluster.engines["A"]
    before = len(engine.requests("/v1/chat/completions"))

    chat = c.call("chat", base_url=base_url(), model=MODEL_A, prompt="hello from C")
    assert chat["status"] == 200, chat
    assert chat["content"] == "You said: hello from C"
    assert chat["headers"]["x-quorum-route"] == "lan"
    assert chat["headers"]["x-quorum-node"] == "A"

    prompt = "one two three four five six"
    stream = c.call("stream", base_url=base_url(), model=MODEL_A, prompt=prompt)
    assert stream["status"] == 200, stream
    assert stream["headers"]["x-quorum-route"] == "lan"
    assert stream["headers"]["x-quorum-node"] == "A"
    assert stream["headers"]["content-type"].startswith("text/event-stream")
    assert len(stream["chunks"]) > 1, stream
    assert "".join(stream["chunks"]) == f"You said: {prompt}"
    # Chunk by chunk through both nodes: the engine's 0.1 s pauses survive the trip.
    assert stream["times"][-1] - stream["times"][0] >= 0.2, stream

    # Both reached A's engine through A's node, which kept the cluster token
    # and the hop header to itself.
    def two_chats() -> list[Json] | None:
        sent = engine.requests("/v1/chat/completions")[before:]
        return sent if len(sent) >= 2 else None

    sent = poll("two chats at A's engine", two_chats)
    assert [r["model"] for r in sent] == [MODEL_A, MODEL_A]
    assert not any(r["authorization"] or r["hop"] for r in sent), sent


def test_hanging_up_at_c_stops_the_generation_at_a(cluster: Cluster) -> None:
    c, engine = cluster.client("C"), cluster.engines["A-slow"]
    cluster.running("A")
    entry = listed(c, base_url(), SLOW_A)
    assert [(h["node"], h["engine"]) for h in entry["quorum"]["holders"]] == [("A", "lmstudio")]
    before = engine.cancelled()

    # 50 chunks 0.1 s apart; the client hangs up after the second one.
    cut = c.call("stream", base_url=base_url(), model=SLOW_A, prompt="word " * 60, stop=2)
    assert cut["status"] == 200, cut
    assert cut["headers"]["x-quorum-node"] == "A"
    assert len(cut["chunks"]) == 2
    # C's handler is cancelled, which closes its request to A, whose handler is
    # cancelled in turn and closes the engine's connection: the engine stops.
    poll("the engine noticing the hang-up", lambda: engine.cancelled() > before)
    assert not any(e["event"] == "cancelled" and e["streams_completed"] for e in engine.events())


def test_another_cluster_stays_apart(cluster: Cluster) -> None:
    c, e = cluster.client("C"), cluster.client("E")
    cluster.running("A")
    listed(c, base_url(), MODEL_A)
    # C and D heard each other's adverts (same bridge) and ignored them.
    for name in "CD":
        cluster.nodes[name].wait_line(
            "another cluster's advert ignored",
            lambda line: "belongs to another cluster" in line,
            timeout=DEADLINE_S,
        )

    assert set(c.models(base_url())) == {MODEL_A, SLOW_A}
    answer = c.call("chat", base_url=base_url(), model=MODEL_D)
    assert answer["status"] == 404, answer
    assert error_of(answer)["code"] == "model_not_found"

    # D and our members do not talk: E's certificate is not of D's cluster, nor D's of ours.
    d = cluster.hosts["D"]
    refused = e.call("get", url=node_url(d, "/v1/models"))
    assert (refused["status"], refused["error"]) == (None, "connection"), refused
    e.tls = {"ca": str(cluster.workdir / "d-ca.pem")}
    (cluster.workdir / "d-ca.pem").write_text(ClusterCA.from_token(cluster.other_token).cert_pem)
    try:
        # Trusting D's CA, without a member's certificate: D answers only to D's members.
        anonymous = e.call("get", url=node_url(d, "/v1/models"))
        assert anonymous["status"] == 401, anonymous
    finally:
        e.tls = member_tls(cluster.workdir, cluster.token, "E")


def test_quorum_peers_on_c_lists_its_cluster(cluster: Cluster) -> None:
    c = cluster.client("C")
    cluster.running("A")

    def online() -> bool:
        status = c.call("get", url=node_url(None, "/quorum/v1/status"))
        return {p["name"] for p in status["body"]["peers"] if p["online"]} == {"A", "B"}

    poll("A and B online at C", online)
    argv = [sys.executable, "-m", "quorum.cli", "peers", "--json"]
    argv += ["--config", str(cluster.configs["C"])]
    result = cluster.lan.run(cluster.hosts["C"], argv, env=child_env(), timeout=DEADLINE_S)
    assert result.returncode == 0, result.stderr
    peers = {p["name"]: p for p in json.loads(result.stdout)["peers"]}
    assert set(peers) == {"A", "B"}  # never D, of another cluster
    assert peers["A"]["addresses"] == [cluster.hosts["A"].address]
    assert peers["A"]["port"] == NODE_PORT
    assert sorted(peers["A"]["models"]) == sorted([MODEL_A, SLOW_A])
    assert peers["B"]["models"] == []
    assert all(p["online"] and p["last_answer_age_s"] is not None for p in peers.values())


def test_lan_clients_need_a_members_certificate(cluster: Cluster) -> None:
    e, b = cluster.client("E"), cluster.hosts["B"]
    cluster.running("A")
    plain = node_url(b, "/v1", scheme="http")
    # Plain HTTP from E, another machine of the LAN: refused, whatever it carries.
    for key in (None, cluster.token):
        chat = e.call("chat", base_url=plain, api_key=key, model=MODEL_A, tls=None)
        assert chat["status"] == 403, chat
        assert error_of(chat)["code"] == "tls_required"
    # TLS without a member's certificate: neither nothing nor the token as a bearer opens it.
    anonymous = {"ca": e.tls["ca"]} if e.tls else None
    for key, says in ((None, "members of its cluster"), (cluster.token, "not valid")):
        chat = e.call("chat", base_url=base_url(b), api_key=key, model=MODEL_A, tls=anonymous)
        assert chat["status"] == 401, chat
        error = error_of(chat)
        assert (error["type"], error["code"]) == ("authentication_error", "invalid_api_key")
        assert says in error["message"]
        local = e.call("get", url=node_url(b, "/quorum/v1/local"), token=key, tls=anonymous)
        assert local["status"] == 401, local
        assert error_of(local)["code"] == "invalid_api_key"

    # With a member's certificate, B answers, and forwards to A.
    local = e.call("get", url=node_url(b, "/quorum/v1/local"))
    assert local["status"] == 200, local
    assert local["body"]["node"]["name"] == "B"
    assert local["body"]["models"] == []  # what B holds itself: nothing
    listed(e, base_url(b), MODEL_A)
    chat = e.call("chat", base_url=base_url(b), model=MODEL_A)
    assert chat["status"] == 200, chat
    assert chat["content"] == "You said: hello"
    assert (chat["headers"]["x-quorum-node"], chat["headers"]["x-quorum-route"]) == ("A", "lan")


def test_avahi_sees_a_quorum_node(cluster: Cluster) -> None:
    a = cluster.running("A")
    avahi_dir = cluster.workdir / "avahi"
    avahi_dir.mkdir(exist_ok=True)
    avahi = Avahi(cluster.lan, cluster.hosts["E"], avahi_dir)
    avahi.start()
    instance = f"A ({a.node_id()[:8]})"

    def seen() -> list[tuple[str, int, tuple[str, ...]]]:
        return sorted(
            {(r.address, r.port, r.txt) for r in avahi.browse("_quorum._tcp") if r.name == instance}
        )

    ((address, port, txt),) = poll(f"{instance} in avahi-browse", seen)
    assert address == cluster.hosts["A"].address
    assert port == NODE_PORT
    assert f"c={cluster_discriminator(cluster.token)}" in txt
    assert f"id={a.node_id()}" in txt
    assert "n=A" in txt


LIVENESS_S = 10.0  # node.peer_liveness_s's default: silence before a peer's health is asked
FROZEN_S = (2 * LIVENESS_S + 5.0) * TIMEOUT_FACTOR  # silent, then no health answer, and a little


def test_a_frozen_peer_fails_fast_and_recovers(cluster: Cluster) -> None:
    """SIGSTOP A (its kernel still accepts and acknowledges): C's stream from A is cut
    visibly, and a new request at B for A's model fails with a 503, each within the liveness
    check, never at the header timeout; after SIGCONT, A serves again by itself."""
    c, e, b = cluster.client("C"), cluster.client("E"), cluster.hosts["B"]
    a, engine = cluster.running("A"), cluster.engines["A-slow"]
    listed(c, base_url(), SLOW_A)
    listed(e, base_url(b), MODEL_A)
    before = len(engine.requests("/v1/chat/completions"))
    results: dict[str, Json] = {}

    def stream() -> None:  # 50 chunks 0.1 s apart
        results["stream"] = c.call(
            "stream", base_url=base_url(), model=SLOW_A, prompt="w " * 20, timeout=FROZEN_S * 3
        )

    streaming = threading.Thread(target=stream, name="stream-from-a")
    streaming.start()
    try:
        poll(
            "the stream at A's engine",
            lambda: len(engine.requests("/v1/chat/completions")) > before,
        )
        os.kill(a.process.pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            answer = e.call("chat", base_url=base_url(b), model=MODEL_A, timeout=FROZEN_S * 3)
            streaming.join(FROZEN_S * 3)
        finally:
            os.kill(a.process.pid, signal.SIGCONT)
    finally:
        streaming.join(DEADLINE_S)
    # The new request: a 503 in OpenAI's shape, once the health check went unanswered.
    assert answer["status"] == 503, answer
    assert error_of(answer)["code"] in ("engine_unreachable", "no_reachable_holder"), answer
    assert answer["elapsed_s"] < FROZEN_S, answer
    # The stream: cut visibly (an error event, never a clean end), within the same bound.
    cut = results["stream"]
    assert cut["status"] == 200 and cut.get("error") == "cut", cut
    assert 0 < len(cut["chunks"]) < 50, cut
    assert cut["cut_at_s"] < FROZEN_S + (time.monotonic() - frozen_at), cut
    print(f"frozen A: request failed in {answer['elapsed_s']:.1f} s, stream cut at "
          f"{cut['cut_at_s']:.1f} s after {len(cut['chunks'])} chunks")  # fmt: skip

    # Thawed, A answers again through B and through C, with nothing restarted.
    def served() -> bool:
        again = e.call("chat", base_url=base_url(b), model=MODEL_A)
        return bool(again["status"] == 200 and again["headers"]["x-quorum-node"] == "A")

    poll("A serving again through B after SIGCONT", served)
    done = c.call("stream", base_url=base_url(), model=SLOW_A, prompt="w")
    assert done["status"] == 200 and "error" not in done, done
    assert "".join(done["chunks"]) == "You said: w", done
    assert a.running and a.problems() == [], a.tail()


def test_sigterm_goodbye_takes_a_away_at_once(cluster: Cluster) -> None:
    e, b = cluster.client("E"), cluster.hosts["B"]
    a = cluster.running("A")
    listed(e, base_url(b), MODEL_A)
    seen = cluster.nodes["B"].count("peer A said goodbye")

    started = time.monotonic()
    assert a.stop() == 0, a.tail()
    assert a.problems() == [], a.tail()
    assert a.count("stopped advertising") == 1, a.tail()
    poll(
        "A's model gone from B",
        lambda: MODEL_A not in e.models(base_url(b)),
        timeout=GOODBYE_S,
    )
    took = time.monotonic() - started
    assert took < GOODBYE_S
    print(f"A's model left B {took:.1f} s after A exited")
    assert cluster.nodes["B"].count("peer A said goodbye") == seen + 1
    assert cluster.nodes["B"].count("peer A is offline") >= 1  # named, not by node id

    # Gone moments ago: unreachable (503, try again), not unknown (SDKs give up on a 404).
    answer = e.call("chat", base_url=base_url(b), model=MODEL_A)
    assert answer["status"] == 503, answer
    assert error_of(answer)["code"] == "no_reachable_holder", answer
    assert "s ago" in error_of(answer)["message"], answer
    assert answer["elapsed_s"] < ANSWER_S, answer


@pytest.mark.slow
def test_sigkill_a_is_dropped_within_the_presence_window(cluster: Cluster) -> None:
    """No goodbye: B notices on its next heartbeat (connection refused) or after 60 s of silence.

    Until then the stale holder is tried, and the request fails at once (503), never hangs.
    """
    e, b = cluster.client("E"), cluster.hosts["B"]
    a = cluster.running("A")
    listed(e, base_url(b), MODEL_A)

    a.kill()
    started = time.monotonic()
    stale_answers: list[Json] = []

    def gone() -> bool:
        if MODEL_A not in e.models(base_url(b)):
            return True
        answer = e.call("chat", base_url=base_url(b), model=MODEL_A)
        stale_answers.append(answer)
        assert answer["status"] == 503, answer
        # Refused at first; after repeated failures the holder cools down and is skipped.
        assert error_of(answer)["code"] in ("engine_unreachable", "no_reachable_holder"), answer
        assert answer["elapsed_s"] < ANSWER_S, answer
        return False

    poll("A's model gone from B after SIGKILL", gone, timeout=SILENCE_S)
    took = time.monotonic() - started
    assert took < SILENCE_S
    print(f"A dropped {took:.1f} s after SIGKILL; {len(stale_answers)} request(s) got 503 before")
    answer = e.call("chat", base_url=base_url(b), model=MODEL_A)
    assert answer["status"] == 503, answer  # gone moments ago: try again, not unknown
    assert error_of(answer)["code"] == "no_reachable_holder"
    assert cluster.nodes["B"].count("peer A is offline") >= 1
