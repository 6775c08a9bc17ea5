"""A node's edges with the shared API vocabulary: ambiguous, deep or compressed bodies are a 400
in the caller's shape before anything reaches an engine (issue 14, findings 2 and 13)."""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.api.forms import CONTENT_TYPE, audio, form, reference_models, text
from tests.conftest import MakeRig, Rig
from tests.fakes import FakeVLLM, FakeWhisper
from tests.harness import timeout

CHAT = "/v1/chat/completions"
TRANSCRIBE = "/v1/audio/transcriptions"

# Both in the issue: a name= outside Content-Disposition, and a second model field.
SMUGGLED = form(
    text("language", "whisper-secret", 'Content-Type: text/plain; name="model"'),
    text("model", "whisper-1"),
    audio(),
)
TWO_MODELS = form(text("model", "whisper-1"), text("model", "whisper-secret"), audio())


def send(
    url: str, body: bytes, content_type: str, **headers: str
) -> tuple[int, dict[str, Any], dict[str, str]]:
    req = urllib.request.Request(url, data=body, method="POST")
    req.add_header("Content-Type", content_type)
    for name, value in headers.items():
        req.add_header(name.replace("_", "-"), value)
    try:
        with urllib.request.urlopen(req, timeout=timeout(10)) as resp:
            return resp.status, json.load(resp), dict(resp.headers)
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.load(err), dict(err.headers)


def openai_error(payload: dict[str, Any]) -> dict[str, Any]:
    assert set(payload) == {"error"}
    assert {"message", "type", "param", "code"} == set(payload["error"])
    return dict(payload["error"])


@pytest.fixture
def rig(make_rig: MakeRig) -> Rig:
    return make_rig(
        {
            "asr": (FakeWhisper(models=["whisper-1"]), {"type": "stt"}),
            "secret": (FakeWhisper(models=["whisper-secret"]), {"type": "stt"}),
            "vllm": (FakeVLLM(models=["m"]), {}),
        }
    )


def test_the_model_the_node_routes_is_the_one_the_engine_reads(rig: Rig) -> None:
    status, _, headers = send(rig.node.url + TRANSCRIBE, SMUGGLED, CONTENT_TYPE)
    assert status == 200
    assert headers["X-Quorum-Node"] == "node-a"
    (sent,) = rig.fakes["asr"].requests_to(TRANSCRIBE)  # routed to whisper-1's holder
    assert sent.body == SMUGGLED  # forwarded untouched
    assert reference_models(sent.body, sent.headers["Content-Type"]) == ["whisper-1"]
    assert not rig.fakes["secret"].requests_to(TRANSCRIBE)


def test_two_model_fields_are_a_400_and_reach_no_engine(rig: Rig) -> None:
    status, payload, _ = send(rig.node.url + TRANSCRIBE, TWO_MODELS, CONTENT_TYPE)
    assert status == 400
    error = openai_error(payload)
    assert error["param"] == "model" and "more than once" in error["message"]
    assert not rig.fakes["asr"].requests_to(TRANSCRIBE)
    assert not rig.fakes["secret"].requests_to(TRANSCRIBE)


def test_deep_json_is_a_400_not_a_500(rig: Rig) -> None:
    deep = b'{"model": "m", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    status, payload, _ = send(rig.node.url + CHAT, deep, "application/json")
    assert status == 400
    assert "nests deeper" in openai_error(payload)["message"]
    assert not rig.fakes["vllm"].requests_to(CHAT)


@pytest.mark.parametrize("coding", ["bogus", "gzip", "br, identity"])
def test_compressed_bodies_are_a_400(rig: Rig, coding: str) -> None:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    if coding == "gzip":
        body = gzip.compress(body)
    status, payload, _ = send(
        rig.node.url + CHAT, body, "application/json", Content_Encoding=coding
    )
    assert status == 400
    assert openai_error(payload)["code"] == "unsupported_content_encoding"
    assert not rig.fakes["vllm"].requests_to(CHAT)
    plain = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    ok, _, _ = send(rig.node.url + CHAT, plain, "application/json", Content_Encoding="identity")
    assert ok == 200


def test_errors_take_the_shape_of_the_path(rig: Rig) -> None:
    status, payload, _ = send(
        rig.node.url + "/v1/messages/no-such-thing", b"{}", "application/json"
    )
    assert status == 404
    assert payload["type"] == "error"
    assert payload["error"]["type"] == "not_found_error"
    assert "Unknown path" in payload["error"]["message"]
    status, payload, _ = send(rig.node.url + "/api/no-such-thing", b"{}", "application/json")
    assert status == 404
    assert set(payload) == {"error"} and isinstance(payload["error"], str)
    status, payload, _ = send(rig.node.url + "/v1/no-such-thing", b"{}", "application/json")
    assert status == 404 and openai_error(payload)["code"] == "unknown_url"
