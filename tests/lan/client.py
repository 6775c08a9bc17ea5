"""An OpenAI SDK client as a process, for a network namespace: ``python3 -m tests.lan.client``.

Each command is one JSON object, given as an argument or, with no
arguments, one per line on stdin; each result is one JSON object on its own
line of stdout, carrying the command's ``id`` back. Commands:

- ``{"op": "models", "base_url": ..., "api_key": ...}`` (``api_key`` null:
  no ``Authorization`` header at all; absent: ``"unused"``):
  ``client.models.list()``; result ``models`` (each model as the SDK parsed
  it, extra fields such as ``quorum`` included);
- ``{"op": "chat", "base_url", "api_key", "model", "prompt"}``: a
  non-streaming chat completion; result ``content``;
- ``{"op": "stream", ...same, "stop": N}``: a streamed chat completion (an error event
  mid-stream, a cut answer, gives ``error: "cut"`` with the chunks before it);
  result ``chunks``, the non-empty content deltas in the order they
  arrived, and ``times``, when each arrived (seconds after the request
  started); with ``stop``, the client hangs up after N chunks;
- ``{"op": "get", "url": ..., "token": ...}``: a plain HTTP GET (for the
  ``/quorum/v1`` endpoints, which are not OpenAI's), with
  ``Authorization: Bearer <token>`` when a token is given; result ``body``.

Any command may carry ``tls``: ``{"ca": path}`` trusts that CA for ``https://``
URLs (the cluster CA: nodes are addressed by IP, so no host name is checked),
and with ``"cert"`` and ``"key"`` presents that client certificate (a member's).

Every result has ``status`` (None when no HTTP answer came), ``headers``
(lower-case names), ``elapsed_s``, and on failure ``body`` (the error as
JSON, or text) or ``error`` (``timeout`` / ``connection``). ``timeout``
(seconds, default 10) bounds each command; the SDK never retries.
"""

from __future__ import annotations

import json
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any

import openai

Result = dict[str, Any]


class Clients:
    """One SDK client per (base_url, api_key), closed on exit."""

    def __init__(self) -> None:
        self._made: dict[tuple[str, str, float, str], openai.OpenAI] = {}

    def get(
        self, base_url: str, api_key: str, timeout: float, tls: Mapping[str, str] | None
    ) -> openai.OpenAI:
        key = (base_url, api_key, timeout, json.dumps(tls, sort_keys=True))
        if key not in self._made:
            context = _context(tls)
            self._made[key] = openai.OpenAI(
                base_url=base_url,
                api_key=api_key,
                timeout=timeout,
                max_retries=0,
                http_client=openai.DefaultHttpxClient(verify=context) if context else None,
            )
        return self._made[key]

    def close(self) -> None:
        for client in self._made.values():
            client.close()
        self._made.clear()


def _context(tls: Mapping[str, str] | None) -> ssl.SSLContext | None:
    if not tls:
        return None
    context = ssl.create_default_context(cafile=tls["ca"])
    context.check_hostname = False  # nodes are addressed by IP; the CA is pinned
    if "cert" in tls:
        context.load_cert_chain(tls["cert"], tls["key"])
    return context


def _headers(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {k.lower(): v for k, v in items}


def _body(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def run(clients: Clients, command: Mapping[str, Any]) -> Result:
    op = command["op"]
    timeout = float(command.get("timeout", 10.0))
    if op == "get":
        return _get(command["url"], command.get("token"), timeout, command.get("tls"))
    api_key = command.get("api_key", "unused")
    client = clients.get(command["base_url"], api_key or "unused", timeout, command.get("tls"))
    # The SDK insists on a key; an explicitly omitted header is how it sends none.
    extra_headers = {"Authorization": openai.Omit()} if api_key is None else None
    try:
        if op == "models":
            raw_models = client.models.with_raw_response.list(extra_headers=extra_headers)
            page = raw_models.parse()
            return {
                "status": raw_models.status_code,
                "headers": _headers(raw_models.headers.items()),
                "models": [m.model_dump() for m in page.data],
            }
        messages: list[Any] = [{"role": "user", "content": command.get("prompt", "hello")}]
        if op == "chat":
            raw_chat = client.chat.completions.with_raw_response.create(
                model=command["model"], messages=messages, extra_headers=extra_headers
            )
            done = raw_chat.parse()
            return {
                "status": raw_chat.status_code,
                "headers": _headers(raw_chat.headers.items()),
                "content": done.choices[0].message.content,
            }
        if op == "stream":
            return _stream(client, command["model"], messages, extra_headers, command.get("stop"))
    except openai.APIStatusError as exc:
        return {
            "status": exc.status_code,
            "headers": _headers(exc.response.headers.items()),
            "body": _body(exc.response.text),
        }
    except openai.APITimeoutError:
        return {"status": None, "error": "timeout"}
    except openai.APIConnectionError as exc:
        return {"status": None, "error": "connection", "detail": repr(exc.__cause__ or exc)}
    raise ValueError(f"unknown op {op!r}")


def _stream(
    client: openai.OpenAI,
    model: str,
    messages: list[Any],
    extra_headers: dict[str, openai.Omit] | None,
    stop_after: int | None,
) -> Result:
    """Stream a chat; with ``stop_after``, hang up after that many content chunks."""
    started = time.monotonic()
    chunks: list[str] = []
    times: list[float] = []
    with client.chat.completions.with_streaming_response.create(
        model=model, messages=messages, stream=True, extra_headers=extra_headers
    ) as response:
        result: Result = {
            "status": response.status_code,
            "headers": _headers(response.headers.items()),
            "chunks": chunks,
            "times": times,
        }
        try:
            for chunk in response.parse():
                if chunk.choices and chunk.choices[0].delta.content:
                    chunks.append(chunk.choices[0].delta.content)
                    times.append(round(time.monotonic() - started, 3))
                    if stop_after is not None and len(chunks) >= stop_after:
                        break  # leaving the block closes the connection mid-stream
        except openai.APIError as exc:  # an error event: the answer was cut
            result.update(error="cut", detail=str(exc), cut_at_s=time.monotonic() - started)
        return result


def _get(url: str, token: str | None, timeout: float, tls: Mapping[str, str] | None) -> Result:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=_context(tls)) as response:
            status: int = response.status
            return {
                "status": status,
                "headers": _headers(response.headers.items()),
                "body": _body(response.read().decode()),
            }
    except urllib.error.HTTPError as exc:
        return {
            "status": exc.code,
            "headers": _headers(exc.headers.items()),
            "body": _body(exc.read().decode()),
        }
    except TimeoutError:
        return {"status": None, "error": "timeout"}
    except (urllib.error.URLError, OSError) as exc:
        return {"status": None, "error": "connection", "detail": repr(exc)}


def serve(lines: Iterable[str]) -> None:
    clients = Clients()
    try:
        for line in lines:
            if not line.strip():
                continue
            command = json.loads(line)
            started = time.monotonic()
            result = run(clients, command)
            result.update(id=command.get("id"), op=command["op"])
            result["elapsed_s"] = round(time.monotonic() - started, 3)
            print(json.dumps(result), flush=True)
    finally:
        clients.close()


def main() -> None:
    serve(sys.argv[1:] or sys.stdin)


if __name__ == "__main__":
    main()
