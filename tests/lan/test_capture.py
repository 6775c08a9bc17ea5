"""What the LAN sees: a packet capture of forwarded chats, and an attacker without the token.

Three hosts of one :class:`~tests.netns.Lan`: A (a fake Ollama and node A), B
(node B, and an SDK client on B's loopback), C (the attacker). tcpdump on the
bridge records everything the three exchange. B's client asks for A's model,
so B forwards to A over the LAN, once whole and once streamed, with prompts
nobody else would write. Then C advertises a copy of A's advert (same cluster
discriminator, same key fingerprint, its own node id and address) and answers
TLS with a certificate of its own: B must try it, refuse it in the handshake,
and send it nothing. The capture must hold neither prompt, nor the answers, nor
the token; it must hold the mDNS adverts and TLS records (the capture worked).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from quorum.discovery import cluster_discriminator
from quorum.secure import Identity
from tests.discovery.harness import DEADLINE_S
from tests.lan.harness import (
    NODE_PORT,
    FakeEngineProcess,
    LineProcess,
    QuorumNode,
    SdkClient,
    base_url,
    child_env,
    poll,
)
from tests.netns import Lan, require_netns

MODEL = "llama3.2:1b"
PROMPTS = ("zebra-quartz-prompt-4411", "walrus-onyx-stream-prompt-9027")

pytestmark = [pytest.mark.netns, pytest.mark.timeout(int(8 * DEADLINE_S))]


def new_token() -> str:
    argv = [sys.executable, "-m", "quorum.cli", "token", "new"]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=DEADLINE_S, env=child_env(), check=True
    )
    return done.stdout.strip()


def start_capture(lan: Lan, pcap: Path) -> subprocess.Popen[bytes]:
    argv = ["ip", "netns", "exec", lan.switch, "tcpdump", "-i", "br0", "--immediate-mode", "-n"]
    capture = subprocess.Popen(
        [*argv, "-U", "-w", str(pcap)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    # tcpdump writes the file's header once the interface is open: from then on it captures.
    poll("tcpdump capturing", lambda: pcap.exists() and pcap.stat().st_size >= 24)
    return capture


def stop_capture(capture: subprocess.Popen[bytes]) -> None:
    capture.terminate()
    capture.wait(DEADLINE_S)


def test_the_lan_sees_no_prompt_answer_or_token_and_a_copied_advert_gets_nothing(
    tmp_path: Path,
) -> None:
    require_netns()
    assert shutil.which("tcpdump"), "tcpdump is needed (scripts/test installs it)"
    token = new_token()
    pcap = tmp_path / "bridge.pcap"
    with Lan(3) as lan:
        a, b, c = lan.hosts
        engine = FakeEngineProcess(
            lan, a, tmp_path / "engine.log", kind="ollama", port=11434, models=[MODEL]
        )
        engine.wait_ready()
        capture = start_capture(lan, pcap)
        nodes: list[QuorumNode] = []
        client = SdkClient(lan, b, tmp_path / "client.log")
        impostor: LineProcess | None = None
        try:
            for host, name, services in (
                (a, "A", [{"name": "ollama-a", "engine": "ollama", "url": engine.url}]),
                (b, "B", []),
            ):
                config = QuorumNode.write_config(
                    tmp_path / f"{name}.yaml",
                    name=name,
                    token=token,
                    data_dir=tmp_path / f"data-{name}",
                    services=services,
                )
                nodes.append(QuorumNode(lan, host, config, tmp_path / f"node-{name}.log"))
            for node in nodes:
                node.wait_ready()
            node_b = nodes[1]
            poll("A's model at B", lambda: MODEL in client.models(base_url()))

            chat = client.call("chat", base_url=base_url(), model=MODEL, prompt=PROMPTS[0])
            assert chat["status"] == 200, chat
            assert chat["content"] == f"You said: {PROMPTS[0]}"
            assert chat["headers"]["x-quorum-route"] == "lan"
            stream = client.call("stream", base_url=base_url(), model=MODEL, prompt=PROMPTS[1])
            assert stream["status"] == 200, stream
            assert "".join(stream["chunks"]) == f"You said: {PROMPTS[1]}"

            # C copies A's advert (the discriminator is public: anyone on the LAN reads it)
            # under its own node id, and answers TLS itself, without the token.
            a_key = Identity.load_or_create(tmp_path / "data-A").short
            txt = {"v": "1", "id": "impostor01", "n": "impostor", "p": str(NODE_PORT)}
            txt |= {"c": cluster_discriminator(token), "k": a_key, "m": "0" * 16}
            argv = [sys.executable, "-m", "tests.lan.impostor", c.address, str(NODE_PORT)]
            impostor = LineProcess(
                lan, c, [*argv, json.dumps(txt)], tmp_path / "impostor.log", stdin=True
            )
            impostor.wait_line("listening", lambda line: "listening" in line, timeout=DEADLINE_S)
            node_b.wait_line(
                "B finding the impostor",
                lambda line: "found peer impostor" in line,
                timeout=DEADLINE_S,
            )
            node_b.wait_line(
                "B refusing the impostor's certificate",
                lambda line: "peer impostor" in line and "no member of this cluster" in line,
                timeout=DEADLINE_S,
            )
            # A request now still goes to A, never to the impostor.
            again = client.call("chat", base_url=base_url(), model=MODEL, prompt=PROMPTS[0])
            assert again["status"] == 200 and again["headers"]["x-quorum-node"] == "A", again
        finally:
            if impostor is not None:
                impostor.stop()
            client.stop()
            for node in nodes:
                node.stop()
            engine.stop()
            stop_capture(capture)

    assert impostor is not None
    events = [json.loads(line) for line in impostor.lines if line.startswith("{")]
    assert not any(e.get("received") for e in events), events  # not one byte after a handshake
    seen = pcap.read_bytes()
    assert b"_quorum" in seen  # the adverts ...
    assert b"\x17\x03\x03" in seen  # ... and TLS application records were captured
    for secret in (*PROMPTS, "You said", token):
        assert secret.encode() not in seen, secret
