"""The control plane of a real relay process: keys by CLI and /api, admin auth, failed-attempt
limits, isolation of two clusters on every endpoint, nothing secret at rest or in the log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from quorum.protocol import RequestUsage, UsageBatch
from tests.control.harness import ServingNode
from tests.harness import timeout, wait_for
from tests.relay.harness import Relay, create_cluster, relay_cli


@dataclass
class Plane:
    data: Path
    relay: Relay
    admin: str
    tokens: dict[str, str]

    def cli(self, *args: str, remote: bool = False) -> Any:
        """``quorum-relay ... --json``, on the store or (remote) through the running relay."""
        if not remote:
            return json.loads(relay_cli(self.data, *args, "--json"))
        done = subprocess.run(
            [sys.executable, "-m", "relay.cli", *args, "--relay", self.relay.url, "--json"],
            capture_output=True,
            text=True,
            timeout=timeout(30),
            env={**os.environ, "QUORUM_RELAY_ADMIN_TOKEN": self.admin},
            check=True,
        )
        return json.loads(done.stdout)

    def secrets(self) -> list[str]:
        return [self.admin, *self.tokens.values()]


def start_plane(tmp: Path) -> Plane:
    data = tmp / "relay"
    data.mkdir()
    tokens = {name: create_cluster(data, name) for name in ("home", "away")}
    admin = relay_cli(data, "admin-token").strip()
    return Plane(data, Relay(data).start(), admin, tokens)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    p = start_plane(tmp_path_factory.mktemp("control-plane"))
    try:
        yield p
    finally:
        p.relay.kill()


async def call(
    plane: Plane,
    method: str,
    path: str,
    credential: str | None,
    body: Any = None,
    source: str = "127.0.0.1",
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as s,
        s.request(method, plane.relay.http + path, json=body, headers=headers) as resp,
    ):
        raw = await resp.read()
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, raw


def test_key_lifecycle_by_cli_on_the_store_and_through_the_relay(plane: Plane) -> None:
    made = plane.cli("key", "create", "--cluster", "home", "--name", "ci", "--models", "a,b")
    assert made["key"].startswith(made["prefix"] + "_") and made["models"] == ["a", "b"]
    listed = plane.cli("key", "list", "--cluster", "home", remote=True)
    (entry,) = [k for k in listed if k["id"] == made["id"]]
    assert "key" not in entry and entry["state"] == "active" and entry["name"] == "ci"
    rotated = plane.cli("key", "rotate", made["prefix"], "--expires", "30d", remote=True)
    assert rotated["replaces"] == made["id"] and rotated["models"] == ["a", "b"]
    assert rotated["expires_at"] is not None and rotated["key"] != made["key"]
    states = {k["id"]: k["state"] for k in plane.cli("key", "list", "--all")}
    assert states[made["id"]] == "revoked" and states[rotated["id"]] == "active"
    revoked = plane.cli("key", "revoke", rotated["id"], remote=True)
    assert revoked["state"] == "revoked"
    assert rotated["id"] not in {k["id"] for k in plane.cli("key", "list")}


def test_cli_errors_are_one_clear_line(plane: Plane) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "relay.cli",
            "key",
            "create",
            "--cluster=nope",
            f"--data={plane.data}",
        ],
        capture_output=True,
        text=True,
        timeout=timeout(30),
    )
    assert done.returncode == 1 and done.stderr.strip() == "quorum-relay: No cluster 'nope'."
    bad = subprocess.run(
        [sys.executable, "-m", "relay.cli", "key", "list", "--relay", plane.relay.url],
        capture_output=True,
        text=True,
        timeout=timeout(30),
        env={**os.environ, "QUORUM_RELAY_ADMIN_TOKEN": "qa_wrong-admin-token-000000"},
    )
    assert bad.returncode == 1 and "401" in bad.stderr


async def test_keys_over_the_api(plane: Plane) -> None:
    status, made = await call(
        plane, "POST", "/api/v1/keys", plane.admin, {"cluster": "home", "expires": "1d"}
    )
    assert status == 201 and made["key"].startswith("qk_")
    status, one = await call(plane, "GET", f"/api/v1/keys/{made['prefix']}", plane.admin)
    assert status == 200 and one["id"] == made["id"] and "key" not in one
    status, _ = await call(plane, "GET", "/v1/models", made["key"])
    assert status == 200
    status, rotated = await call(plane, "POST", f"/api/v1/keys/{made['id']}/rotate", plane.admin)
    assert status == 201
    assert (await call(plane, "GET", "/v1/models", made["key"]))[0] == 401
    assert (await call(plane, "GET", "/v1/models", rotated["key"]))[0] == 200
    status, gone = await call(plane, "DELETE", f"/api/v1/keys/{rotated['id']}", plane.admin)
    assert status == 200 and gone["state"] == "revoked"
    assert (await call(plane, "GET", "/v1/models", rotated["key"]))[0] == 401
    status, err = await call(plane, "POST", "/api/v1/keys", plane.admin, {"cluster": "nope"})
    assert status == 404 and err["error"]["code"] == "cluster_not_found"
    status, err = await call(
        plane, "POST", "/api/v1/keys", plane.admin, {"cluster": "home", "expires": "soon"}
    )
    assert status == 400 and err["error"]["param"] == "expires"


async def test_the_control_plane_needs_the_admin_token(plane: Plane) -> None:
    key = plane.cli("key", "create", "--cluster", "home")["key"]
    paths = ("/api/v1/clusters", "/api/v1/keys", "/api/v1/nodes", "/api/v1/usage?cluster=home")
    for i, path in enumerate(paths):
        source = f"127.0.1.{i + 1}"  # four failures each: under the burst of ten
        for credential in (None, plane.tokens["home"], key, "qa_" + "x" * 40):
            status, body = await call(plane, "GET", path, credential, source=source)
            assert status == 401, (path, credential)
            assert body["error"]["type"] == "authentication_error"
        status, _ = await call(plane, "GET", path, plane.admin, source=source)
        assert status == 200


async def test_two_clusters_stay_apart_on_every_endpoint(plane: Plane) -> None:
    home_key = plane.cli("key", "create", "--cluster", "home")["key"]
    away_key = plane.cli("key", "create", "--cluster", "away")["key"]
    home, away = plane.tokens["home"], plane.tokens["away"]
    src = "127.0.0.5"
    # Key verification: a cluster's token never validates, or learns of, another's keys.
    status, body = await call(plane, "POST", "/api/v1/keys/verify", home, {"key": away_key})
    assert status == 401 and body["error"]["message"] == "Incorrect API key provided."
    status, body = await call(plane, "POST", "/api/v1/keys/verify", home, {"key": home_key})
    assert status == 200 and body["valid"] is True
    # Usage: a token writes only into its own cluster, whatever the records say.
    record = RequestUsage("same-id", 1, "m", "chat", "local", "n", 200, 1.0, None, 5, 5)
    payload = json.loads(UsageBatch((record,)).encode())
    assert (await call(plane, "POST", "/api/v1/usage", home, payload))[1] == {
        "accepted": 1,
        "duplicates": 0,
    }
    assert (await call(plane, "POST", "/api/v1/usage", away, payload))[1]["accepted"] == 1
    assert (await call(plane, "POST", "/api/v1/usage", home, payload))[1]["duplicates"] == 1
    report = (await call(plane, "GET", "/api/v1/usage?cluster=away", plane.admin))[1]
    assert [row["requests"] for row in report["data"]] == [1]
    # Credentials are not interchangeable: a key is no token, a token no key.
    for credential in (home_key, plane.admin):
        assert (await call(plane, "POST", "/api/v1/usage", credential, payload, src))[0] == 401
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(src, 0))) as s:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await s.ws_connect(
                    plane.relay.url, headers={"Authorization": f"Bearer {credential}"}
                )
            assert refused.value.status == 401
    assert (await call(plane, "GET", "/v1/models", home, source=src))[0] == 401
    # Nodes: each cluster's nodes are listed under it alone, and routed to within it alone.
    async with (
        ServingNode(plane.relay.url, home, "home-node") as hn,
        ServingNode(plane.relay.url, away, "away-node") as an,
    ):
        await hn.heartbeat([("shared", "llm")])
        await an.heartbeat([("shared", "llm"), ("secret-model", "llm")])

        async def both_listed() -> bool:
            _, nodes = await call(plane, "GET", "/api/v1/nodes", plane.admin)
            return {n["name"] for n in nodes["data"]} >= {"home-node", "away-node"}

        await wait_for(both_listed, 10)
        _, nodes = await call(plane, "GET", "/api/v1/nodes?cluster=home", plane.admin)
        assert [(n["name"], n["online"], n["connected"]) for n in nodes["data"]] == [
            ("home-node", True, True)
        ]
        _, models = await call(plane, "GET", "/v1/models", home_key)
        assert [m["id"] for m in models["data"]] == ["shared"]
        status, _ = await call(plane, "GET", "/v1/models/secret-model", home_key)
        assert status == 404
        chat = {"model": "shared", "messages": [{"role": "user", "content": "x"}]}
        for _ in range(4):
            assert (await call(plane, "POST", "/v1/chat/completions", home_key, chat))[0] == 200
        chat["model"] = "secret-model"
        assert (await call(plane, "POST", "/v1/chat/completions", home_key, chat))[0] == 404
        assert hn.served == ["/v1/chat/completions"] * 4 and an.served == []


async def test_failed_attempts_are_limited_per_address_and_kind(plane: Plane) -> None:
    """Failures are limited per credential kind and address; a valid credential from that
    address (another client behind the same NAT or proxy) is never refused for them."""
    attacker, bystander = "127.0.0.7", "127.0.0.8"
    for i in range(10):
        status, _ = await call(
            plane, "GET", "/v1/models", f"qk_00000000_{'g' * 40}{i}", None, attacker
        )
        assert status == 401
    status, body = await call(plane, "GET", "/v1/models", f"qk_00000000_{'h' * 41}", None, attacker)
    assert status == 429 and body["error"]["code"] == "rate_limited"
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(attacker, 0))) as s,
        s.get(plane.relay.http + "/v1/models") as resp,
    ):
        assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
    # The same address with a good credential of any kind: served.
    assert (await call(plane, "GET", "/api/v1/clusters", plane.admin, source=attacker))[0] == 200
    # Another kind has its own bucket: a bad admin token is a plain 401, not 429.
    assert (await call(plane, "GET", "/api/v1/clusters", "qa_wrong" * 4, source=attacker))[0] == 401
    assert (await call(plane, "GET", "/api/v1/clusters", plane.admin, source=bystander))[0] == 200


async def test_bad_admin_tokens_lock_out_no_key_and_no_node(plane: Plane) -> None:
    source = "127.0.0.9"
    for _ in range(12):
        await call(plane, "GET", "/api/v1/clusters", "qa_wrong" * 4, source=source)
    assert (await call(plane, "GET", "/api/v1/clusters", "qa_wrong" * 4, source=source))[0] == 429
    key = plane.cli("key", "create", "--cluster", "home")["key"]
    assert (await call(plane, "GET", "/v1/models", key, None, source))[0] == 200
    verified = await call(
        plane, "POST", "/api/v1/keys/verify", plane.tokens["home"], {"key": key}, source
    )
    assert verified[0] == 200  # a node's credential from that address: served too


def test_nothing_secret_at_rest_or_in_the_log(plane: Plane) -> None:
    keys = [plane.cli("key", "create", "--cluster", c)["key"] for c in ("home", "away")]
    at_rest = b"".join(p.read_bytes() for p in sorted(plane.data.glob("relay.sqlite3*")))
    log = plane.relay.log.read_text()
    for secret in [*plane.secrets(), *keys]:
        assert secret.encode() not in at_rest
        assert secret[-16:].encode() not in at_rest  # no part of its random tail either
        assert secret not in log
    assert "refused key credential" in log  # failures are logged, without the credential
