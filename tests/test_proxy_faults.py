"""Bad input and engine faults: clear OpenAI-shaped errors, fast, and nothing else harmed."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web

from quorum.server.app import build_app
from quorum.server.context import CONTEXT
from quorum.server.middleware import Handler
from tests.conftest import MakeRig, Rig
from tests.fakes import FakeOllama, FakeVLLM, closed_port_url
from tests.harness import timeout, wait_for

CHAT = "/v1/chat/completions"


def post(
    rig: Rig, path: str, body: bytes, ctype: str | None = "application/json"
) -> tuple[int, Any]:
    req = urllib.request.Request(rig.node.url + path, data=body, method="POST")
    if ctype:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=timeout(10)) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.load(err)


def assert_openai_error(payload: Any, code: str | None = None) -> dict[str, Any]:
    assert set(payload) == {"error"}
    err = payload["error"]
    assert {"message", "type", "code"} <= set(err)
    assert isinstance(err["message"], str) and err["message"]
    if code is not None:
        assert err["code"] == code
    return dict(err)


@pytest.fixture
def rig(make_rig: MakeRig) -> Rig:
    return make_rig({"ollama": (FakeOllama(), {})}, node={"max_body_mb": 0.05})


@pytest.mark.parametrize(
    ("body", "ctype", "status", "words"),
    [
        (b"{not json", "application/json", 400, "not valid JSON"),
        (b'{"messages": []}', "application/json", 400, "model parameter"),
        (b'{"model": 42}', "application/json", 400, "non-empty string"),
        (b"[]", "application/json", 400, "JSON object"),
        (b'{"model": "llama3.2:1b"}', "text/plain", 400, "Content-Type: application/json"),
        (b'{"model": "llama3.2:1b"}', None, 400, "JSON body"),
        (b'{"model": "x", "pad": "' + b"a" * 60_000 + b'"}', "application/json", 413, "too large"),
        (b'{"model": "nope", "messages": []}', "application/json", 404, "does not exist"),
    ],
)
def test_bad_requests(rig: Rig, body: bytes, ctype: str | None, status: int, words: str) -> None:
    got_status, payload = post(rig, CHAT, body, ctype)
    assert got_status == status
    assert words in assert_openai_error(payload)["message"]
    assert not rig.fakes["ollama"].requests_to(CHAT)  # nothing reached the engine


def test_multipart_without_model(rig: Rig) -> None:
    boundary = "xyz"
    body = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="a"\r\n\r\nA\r\n'
        f"--{boundary}--\r\n"
    )
    status, payload = post(
        rig, "/v1/audio/transcriptions", body.encode(), f"multipart/form-data; boundary={boundary}"
    )
    assert status == 400
    assert assert_openai_error(payload)["param"] == "model"


def test_unknown_path_and_method(rig: Rig) -> None:
    status, payload = post(rig, "/v1/does/not/exist", b"{}")
    assert status == 404
    assert_openai_error(payload, "unknown_url")
    req = urllib.request.Request(rig.node.url + CHAT, method="GET")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=timeout(5))
    with info.value as err:
        assert err.code == 405
        assert_openai_error(json.load(err), "method_not_allowed")


def test_oversized_upload_refused_before_reading_it(rig: Rig) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        rig.client().audio.transcriptions.create(model="w", file=("a.wav", b"\0" * 200_000))
    assert info.value.status_code == 413


def test_unknown_model_sdk_error(rig: Rig) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        rig.client().chat.completions.create(model="gpt-9", messages=[])
    assert info.value.code == "model_not_found"


def test_wrong_type_is_404(rig: Rig) -> None:
    with pytest.raises(openai.NotFoundError, match="needs a stt model"):
        rig.client().audio.transcriptions.create(model="llama3.2:1b", file=("a.wav", b"RIFF"))


def test_engine_refusing_connections_is_503(make_rig: MakeRig) -> None:
    rig = make_rig({"gone": (FakeVLLM(), {"url": closed_port_url(), "models": [{"id": "m"}]})})
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as info:
        rig.client().chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 503
    assert info.value.code in ("engine_unreachable", "no_reachable_holder")
    assert time.monotonic() - started < timeout(5)


@pytest.mark.parametrize(
    ("mode", "status", "words"),
    [
        ("garbage", 502, "valid HTTP"),
        ("bad_json", 502, "broken JSON"),
        ("error_500", 502, "failed (500)"),
    ],
)
def test_engine_garbage_is_502(make_rig: MakeRig, mode: str, status: int, words: str) -> None:
    fake = FakeOllama()
    rig = make_rig({"ollama": (fake, {})})
    fake.mode = mode  # type: ignore[assignment]
    fake.mode_paths = (CHAT,)
    with pytest.raises(openai.APIStatusError) as info:
        rig.client().chat.completions.create(
            model="llama3.2:1b", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.status_code == status
    assert words in info.value.message
    # The node is fine afterwards.
    fake.mode = "ok"
    ok = rig.client().chat.completions.create(
        model="llama3.2:1b", messages=[{"role": "user", "content": "again"}]
    )
    assert ok.choices[0].message.content == "You said: again"


def test_engine_own_404_passes_through(make_rig: MakeRig) -> None:
    fake = FakeOllama()
    rig = make_rig({"ollama": (fake, {"models": [{"id": "listed-but-not-pulled"}]})})
    with pytest.raises(openai.NotFoundError, match="try pulling it first"):
        rig.client().chat.completions.create(
            model="listed-but-not-pulled", messages=[{"role": "user", "content": "x"}]
        )


def test_engine_dying_midstream_is_an_error_not_a_short_answer(make_rig: MakeRig) -> None:
    fake = FakeVLLM(chunks=8, die_after=3)
    rig = make_rig({"vllm": (fake, {})})
    fake.mode = "die_midstream"
    got = []
    stream = rig.client().chat.completions.create(
        model="Qwen/Qwen3-0.6B",
        messages=[{"role": "user", "content": "a b c d e f g h"}],
        stream=True,
    )
    with stream, pytest.raises(openai.APIError, match="stopped in the middle"):
        for chunk in stream:
            if chunk.choices:
                got.append(chunk.choices[0].delta.content or "")
    assert got  # some pieces arrived before the failure was reported


def test_engine_dying_mid_json_answer_is_502(make_rig: MakeRig) -> None:
    fake = FakeVLLM()
    rig = make_rig({"vllm": (fake, {})})
    fake.mode = "die_midstream"
    with pytest.raises(openai.APIStatusError) as info:
        rig.client().chat.completions.create(
            model="Qwen/Qwen3-0.6B", messages=[{"role": "user", "content": "x y z"}]
        )
    assert info.value.status_code == 502


def test_slow_engine_times_out_as_503(make_rig: MakeRig) -> None:
    fake = FakeOllama(delay=5)
    rig = make_rig({"ollama": (fake, {"header_timeout_s": 0.3})})
    fake.mode = "slow_headers"
    fake.mode_paths = (CHAT,)
    with pytest.raises(openai.InternalServerError, match=r"did not answer within 0\.3 s"):
        rig.client().chat.completions.create(
            model="llama3.2:1b", messages=[{"role": "user", "content": "x"}]
        )


async def test_client_disconnect_cancels_the_engine(make_rig: MakeRig) -> None:
    fake = FakeVLLM(chunks=200, chunk_delay=0.05)
    rig = make_rig({"vllm": (fake, {})})
    async with aiohttp.ClientSession() as session:
        resp = await session.post(
            rig.base_url + "/chat/completions",
            json={
                "model": "Qwen/Qwen3-0.6B",
                "stream": True,
                "messages": [{"role": "user", "content": " ".join(["w"] * 200)}],
            },
        )
        await resp.content.readline()  # the stream is flowing
        resp.close()  # the client goes away mid-stream
    await wait_for(_async(fake.cancelled.is_set), 5)
    assert fake.streams_completed == 0


def _async(fn: Any) -> Any:
    async def check() -> bool:
        return bool(fn())

    return check


def test_node_survives_and_counts_errors(rig: Rig) -> None:
    post(rig, CHAT, b"{broken")
    ok = rig.client().chat.completions.create(
        model="llama3.2:1b", messages=[{"role": "user", "content": "still here"}]
    )
    assert ok.choices[0].message.content == "You said: still here"
    with urllib.request.urlopen(rig.node.url + "/metrics", timeout=timeout(5)) as resp:
        text = resp.read().decode()
    assert (
        'quorum_requests_total{endpoint="chat",model="llama3.2:1b",route="local",status="200"} 1.0'
        in text
    )
    assert 'quorum_request_errors_total{code="invalid_request"' in text
    assert "quorum_time_to_first_byte_seconds_bucket" in text
    with urllib.request.urlopen(rig.node.url + "/quorum/v1/status", timeout=timeout(5)) as resp:
        status = json.load(resp)
    assert [r["status"] for r in status["recent"]] == [400, 200]


def test_the_cluster_token_opens_nothing_from_the_lan(make_rig: MakeRig) -> None:
    """The auth middleware, with the client address rewritten as if it came from the LAN:
    peers prove membership with a TLS client certificate (tests/secure), never with the
    token in a header, which counts only on loopback (the relay tunnel's forwarder)."""
    rig = make_rig({"ollama": (FakeOllama(), {})}, cluster={"token": "t" * 32})

    @web.middleware
    async def from_lan(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await handler(request.clone(remote="192.0.2.10"))

    app = build_app(rig.node.ctx)
    app.middlewares.insert(0, from_lan)
    assert app[CONTEXT] is rig.node.ctx
    runner = web.AppRunner(app)

    async def serve() -> int:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return int(runner.addresses[0][1])

    port = rig.bg.run(serve())
    body = json.dumps({"model": "llama3.2:1b", "messages": [{"role": "user", "content": "x"}]})
    try:
        for auth, status in ((None, 401), ("Bearer wrong-token", 401), ("Bearer " + "t" * 32, 401)):
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}{CHAT}", data=body.encode(), method="POST"
            )
            req.add_header("Content-Type", "application/json")
            if auth:
                req.add_header("Authorization", auth)
            try:
                with urllib.request.urlopen(req, timeout=timeout(5)) as resp:
                    assert resp.status == status
            except urllib.error.HTTPError as err:
                with err:
                    assert err.code == status
                    assert_openai_error(json.load(err), "invalid_api_key")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=timeout(5)) as r:
            assert r.status == 200  # liveness stays open
    finally:
        rig.bg.run(runner.cleanup())
    assert rig.fakes["ollama"].requests_to(CHAT) == []


def test_a_huge_content_length_is_refused_before_the_body_is_read(rig: Rig) -> None:
    """2 GB announced, a few bytes sent: the 413 comes at once, from the head alone."""
    import socket

    host, port = rig.node.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout(5)) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
            b'Content-Type: application/json\r\nContent-Length: 2147483648\r\n\r\n{"model"'
        )
        started = time.monotonic()
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert time.monotonic() - started < timeout(2)
