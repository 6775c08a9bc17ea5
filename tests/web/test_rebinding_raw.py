"""DNS rebinding and cross-site requests against the node's loopback trust, as raw requests.

(The same attack from a real browser page is in test_rebinding_browser.py.)
"""

from __future__ import annotations

import json
import socket

import pytest

from tests.conftest import MakeRig, Rig
from tests.fakes import FakeOllama, FakeWhisper

CHAT = b'{"model": "llama3.2:1b", "messages": [{"role": "user", "content": "hi"}]}'


@pytest.fixture
def rig(make_rig: MakeRig) -> Rig:
    return make_rig(
        {"ollama": (FakeOllama(), {}), "asr": (FakeWhisper(), {"type": "stt"})},
        node={"allowed_origins": ["https://app.example"]},
    )


def raw(rig: Rig, head: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    host, port = rig.node.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head_bytes, _, rest = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, rest


def get(rig: Rig, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    extra = "".join(f"{k.replace('_', '-')}: {v}\n" for k, v in headers.items())
    return raw(rig, f"GET {path} HTTP/1.1\n{extra}Connection: close\n")


def post(rig: Rig, path: str, body: bytes, ctype: str, **headers: str) -> tuple[int, bytes]:
    extra = "".join(f"{k.replace('_', '-')}: {v}\n" for k, v in headers.items())
    status, _, rest = raw(
        rig,
        f"POST {path} HTTP/1.1\n{extra}Content-Type: {ctype}\n"
        f"Content-Length: {len(body)}\nConnection: close\n",
        body,
    )
    return status, rest


def test_a_rebound_host_gets_nothing(rig: Rig) -> None:
    status, _, body = get(rig, "/quorum/v1/status", Host="evil.example:32768")
    assert status == 403
    assert json.loads(body)["error"]["code"] == "origin_not_allowed"
    status, _ = post(rig, "/v1/chat/completions", CHAT, "application/json", Host="evil.example")
    assert status == 403
    for host in ("localhost:32768", "127.0.0.1", "[::1]:32768", "app.localhost"):
        assert get(rig, "/quorum/v1/status", Host=host)[0] == 200, host


def test_a_cross_site_page_cannot_post(rig: Rig) -> None:
    form = (
        b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\nRIFF\r\n--b--\r\n"
    )
    status, body = post(
        rig,
        "/v1/audio/transcriptions",
        form,
        "multipart/form-data; boundary=b",
        Host="127.0.0.1",
        Origin="https://evil.example",
    )
    assert status == 403 and b"node.allowed_origins" in body
    assert rig.fakes["asr"].requests_to("/v1/audio/transcriptions") == []
    status, _ = post(
        rig,
        "/v1/chat/completions",
        CHAT,
        "application/json",
        Host="127.0.0.1",
        Sec_Fetch_Site="cross-site",
    )
    assert status == 403


def test_local_and_listed_web_apps_keep_working(rig: Rig) -> None:
    status, headers, _ = get(
        rig, "/v1/models", Host="localhost:32768", Origin="http://localhost:3000"
    )
    assert status == 200 and headers["access-control-allow-origin"] == "http://localhost:3000"
    status, headers, _ = raw(
        rig,
        "OPTIONS /v1/chat/completions HTTP/1.1\nHost: localhost\nOrigin: https://app.example\n"
        "Access-Control-Request-Method: POST\n"
        "Access-Control-Request-Headers: content-type\nConnection: close\n",
    )
    assert status == 204 and headers["access-control-allow-origin"] == "https://app.example"
    status, _ = post(
        rig, "/v1/chat/completions", CHAT, "application/json", Host="localhost",
        Origin="https://app.example", Sec_Fetch_Site="cross-site",
    )  # fmt: skip
    assert status == 200
