"""The relay's edges: /metrics protectable, /healthz honest about a damaged store."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from tests.relay.harness import Relay, create_cluster


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read()


def test_metrics_can_be_protected(tmp_path: Path) -> None:
    create_cluster(tmp_path, "home")
    relay = Relay(tmp_path, None, "--protect-metrics").start()
    try:
        status, body = get(relay.http + "/metrics")
        assert status == 401 and b"quorum_relay" not in body
        admin = (tmp_path / "admin_token").read_text().strip()
        status, body = get(relay.http + "/metrics", admin)
        assert status == 200 and b"quorum_relay_connections" in body
    finally:
        relay.stop()
    assert admin not in relay.log.read_text()


def test_healthz_checks_the_store(tmp_path: Path) -> None:
    create_cluster(tmp_path, "home")
    relay = Relay(tmp_path).start()
    try:
        assert get(relay.http + "/healthz")[0] == 200
        store = tmp_path / "relay.sqlite3"
        data = bytearray(store.read_bytes())
        data[:16] = b"not a database!!"  # its header, damaged under the running relay
        store.write_bytes(bytes(data))
        status, body = get(relay.http + "/healthz")
        assert status == 503
        answer = json.loads(body)
        assert answer["status"] == "store_damaged" and str(store) in answer["error"]
    finally:
        relay.kill()


def test_deep_json_is_a_400_on_the_control_plane(tmp_path: Path) -> None:
    token = create_cluster(tmp_path, "home")
    relay = Relay(tmp_path).start()
    deep = b"[" * 50_000 + b"]" * 50_000
    admin = (tmp_path / "admin_token").read_text().strip()
    try:
        for path, credential in (("/api/v1/keys/verify", token), ("/api/v1/keys", admin)):
            request = urllib.request.Request(relay.http + path, data=deep, method="POST")
            request.add_header("Content-Type", "application/json")
            if credential:
                request.add_header("Authorization", f"Bearer {credential}")
            try:
                with urllib.request.urlopen(request, timeout=10) as resp:
                    status = resp.status
            except urllib.error.HTTPError as err:
                with err:
                    status = err.code
            assert status == 400, (path, status)  # never a 500
    finally:
        relay.stop()
    assert "RecursionError" not in relay.log.read_text()
