"""Rotating a cluster's token at a real relay: members of either token work, and reach each
other, through the grace; after it, a node with only the previous token is refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import openai
import pytest

from quorum.app import Node
from quorum.errors import AuthRefused
from quorum.secure import ClusterTLS, Identity
from quorum.tunnel.dial import dial_relay
from tests.fakes import FakeVLLM, LoopThread
from tests.harness import node_config, start_node, timeout
from tests.relay.harness import Relay, create_cluster, relay_cli
from tests.relay.test_relay_e2e import holders, wait_until

OLD_MODEL, NEW_MODEL = "old-side/model", "new-side/model"


def _node(bg: LoopThread, tmp: Path, name: str, relay: Relay, cluster: Any, url: str) -> Node:
    config = node_config(
        tmp / name,
        node={"name": name},
        cluster=cluster,
        relay={"url": relay.url},
        discovery={"enabled": False},
        services=[{"name": "v", "url": url}],
    )
    return bg.run(start_node(config))


def _chat(node: Node, model: str, text: str) -> tuple[str, str]:
    with openai.OpenAI(
        base_url=node.url + "/v1", api_key="x", max_retries=0, timeout=timeout(30)
    ) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": text}]
        )
        return raw.headers["x-quorum-route"], raw.parse().choices[0].message.content or ""


def _token(out: str) -> str:
    return next(line.split()[1] for line in out.splitlines() if line.startswith("token"))


def _member(tmp: Path, name: str, token: str) -> ClusterTLS:
    where = tmp / name
    return ClusterTLS(Identity.load_or_create(where), name, token, where)


def _cli(
    *args: str, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """``quorum-relay ARGS`` as a process, not checked (its status and output, to assert)."""
    return subprocess.run(
        [sys.executable, "-m", "relay.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout(30),
        env=env,
        input=stdin,
    )


def _remote(data: Path, relay: Relay, *args: str, stdin: str = "") -> str:
    """``quorum-relay ARGS --relay URL --json`` with the relay's admin token; its output."""
    env = {**os.environ, "QUORUM_RELAY_ADMIN_TOKEN": relay_cli(data, "admin-token").strip()}
    done = _cli(*args, "--relay", relay.http, "--json", env=env, stdin=stdin)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def _refused(url: str, token: str, tls: ClusterTLS | None) -> None:
    with pytest.raises(AuthRefused):
        await dial_relay(url, token, tls)


async def _joins(url: str, token: str, tls: ClusterTLS) -> None:
    await (await dial_relay(url, token, tls)).close()


def test_members_of_both_tokens_meet_in_the_grace_and_the_old_is_refused_after(
    bg: LoopThread, tmp_path: Path
) -> None:
    data = tmp_path / "relay"
    data.mkdir()
    old = create_cluster(data, "home")
    relay = Relay(data).start()
    engines = [FakeVLLM(models=[OLD_MODEL]), FakeVLLM(models=[NEW_MODEL])]
    nodes: list[Node] = []
    try:
        urls = [bg.run(e.start()) for e in engines]
        nodes.append(_node(bg, tmp_path, "stays-old", relay, {"token": old}, urls[0]))
        out = relay_cli(data, "cluster", "rotate", "home", "--grace", "2h")
        new = _token(out)
        assert new != old and "previous accepted until" in out
        moved = {"token": new, "previous_tokens": [old]}
        nodes.append(_node(bg, tmp_path, "moved", relay, moved, urls[1]))
        stays, moved_node = nodes

        # Through the grace: each reaches the other's model through the relay, end to end.
        for node, model in ((stays, NEW_MODEL), (moved_node, OLD_MODEL)):
            wait_until(
                lambda n=node, m=model: any(h["route"] == "relay" for h in holders(n, m)),
                15,
                f"{model} at {node.config.node.name}",
            )
        assert _chat(stays, NEW_MODEL, "from the old token") == (
            "relay",
            "You said: from the old token",
        )
        assert _chat(moved_node, OLD_MODEL, "from the new token") == (
            "relay",
            "You said: from the new token",
        )
        # A member of only the previous token still joins, with its certificate or the token.
        bg.run(_joins(relay.url, "qc_not-the-token-at-all-0000", _member(tmp_path, "m1", old)))
        bg.run(_joins(relay.url, old, _member(tmp_path, "m2", old)))

        # Finished through the running relay: the previous token's tunnel closes at once.
        done = _remote(data, relay, "cluster", "rotate", "home", "--finish")
        assert '"ended": 1' in done and '"closed": 1' in done, done
        tunnel = stays.ctx.tunnel
        assert tunnel is not None
        wait_until(lambda: tunnel.status.stopped, 15, "the old-token node refused")
        assert not any(h["route"] == "relay" for h in holders(moved_node, OLD_MODEL))

        # After: a member of the previous token is refused, with its certificate or the token ...
        bg.run(_refused(relay.url, "qc_not-the-token-at-all-0000", _member(tmp_path, "m1", old)))
        bg.run(_refused(relay.url, old, _member(tmp_path, "m3", old)))
        bg.run(_refused(relay.url, old, None))  # (an older node: the token alone)
        # ... and the new token's member is not disturbed.
        assert moved_node.ctx.tunnel is not None and moved_node.ctx.tunnel.status.connected
        bg.run(_joins(relay.url, new, _member(tmp_path, "m4", new)))
    finally:
        for node in nodes:
            bg.run(node.stop())
        for engine in engines:
            bg.run(engine.stop())
        relay.kill()
    log = relay.log.read_text()
    assert "rotated and the previous one retired" in log
    for token in (old, new):
        assert token not in log


def test_a_token_the_lan_already_uses_is_adopted_on_rotation(
    bg: LoopThread, tmp_path: Path
) -> None:
    # The LAN moved first (`quorum token new` on its nodes): the relay takes that token.
    data = tmp_path / "relay"
    data.mkdir()
    old = create_cluster(data, "home")
    lan = "qc_" + "L" * 43
    given = _cli("cluster", "rotate", "home", "--token", lan, "--grace", "0", "--data", str(data))
    assert given.returncode == 0 and "the one given" in given.stdout, given.stderr
    assert lan not in given.stdout + given.stderr  # never printed back
    assert "(ps)" in given.stderr and "--token -" in given.stderr  # on the command line: told
    refused = _cli("cluster", "rotate", "home", "--token", old, "--data", str(data))
    assert refused.returncode == 1 and "before" in refused.stderr, refused.stderr
    relay = Relay(data).start()
    try:
        bg.run(_joins(relay.url, lan, _member(tmp_path, "m1", lan)))
        bg.run(_refused(relay.url, old, None))  # grace 0: the previous token is over
        # The same through a running relay's API (`--relay`): the token is not echoed.
        second = "qc_" + "M" * 43  # given on standard input, out of the process list
        done = _remote(data, relay, "cluster", "rotate", "home", "--token", "-", stdin=second)
        assert '"token": null' in done and second not in done, done
        bg.run(_joins(relay.url, second, _member(tmp_path, "m2", second)))
        bg.run(_joins(relay.url, lan, _member(tmp_path, "m3", lan)))  # in its grace (24 h)
    finally:
        relay.kill()
    assert lan not in relay.log.read_text() and second not in relay.log.read_text()
