"""One attempt to count a chat's tokens on a local engine that does not speak Anthropic's API.

:mod:`quorum.translate.count` says what to ask the engine (one request, or
two for llama.cpp) and reads its answers; this module sends them through the
proxy's opener, one after the other, and answers ``{"input_tokens": N}``.
Nothing reaches the client before the count is known, so any failure can
still go to the next holder, as for any other answer (the outcomes are the
same: a refused connection, no head in time, a 5xx, a broken answer).
"""

from __future__ import annotations

import json
import time

from quorum.errors import EngineTimeout, NoReachableHolder, UpstreamFailed
from quorum.fleet import Holder
from quorum.proxy.answer import MAX_JSON_ANSWER, Attempt, engine_error, response_headers
from quorum.proxy.exchange import Exchange
from quorum.proxy.foreign import Foreign
from quorum.proxy.sink import Sink
from quorum.proxy.upstream import Headers, Opener
from quorum.routing import Outcome, outcome_of_status
from quorum.translate import count


async def count_attempt(
    opener: Opener,
    sink: Sink,
    holder: Holder,
    headers: Headers,
    foreign: Foreign,
    ex: Exchange,
    extra: dict[str, str],
) -> Attempt:
    """Count ``foreign``'s tokens on ``holder``'s engine (which :func:`count.counter`
    knows how to ask) and answer the count into ``sink``."""
    counting = count.counter(holder.engine.value, {**foreign.body, "model": holder.upstream_model})
    if counting is None:  # the core tries only holders that can count
        raise AssertionError(f"{holder.engine} cannot count tokens")
    ask: count.Ask | int = counting.first()
    asked: list[str] = []
    while not isinstance(ask, int):
        body = json.dumps(ask.body, ensure_ascii=False).encode()
        try:
            upstream = await opener(holder, "POST", ask.path, headers, body)
        except EngineTimeout as err:
            return Attempt(Outcome.HEADER_TIMEOUT, err)
        except NoReachableHolder as err:
            return Attempt(Outcome.REFUSED, err)
        except UpstreamFailed as err:
            return Attempt(Outcome.BAD_RESPONSE, err)
        asked.append(ask.path)
        try:
            if upstream.status >= 400:
                return Attempt(
                    outcome_of_status(upstream.status), await engine_error(upstream, holder)
                )
            raw = await upstream.read(MAX_JSON_ANSWER)
            ask = counting.read(json.loads(raw))
        except UpstreamFailed as err:
            return Attempt(Outcome.BAD_RESPONSE, err)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            failed = UpstreamFailed(
                f"The engine '{holder.service}' on {holder.node_name} answered {asked[-1]} "
                "with a body that is not JSON."
            )
            return Attempt(Outcome.BAD_RESPONSE, failed)
        finally:
            upstream.release()
    ex.first_byte = time.perf_counter()
    ex.status = 200
    said = {**extra, "X-Quorum-Translated": f"count_tokens; engine spoke {', '.join(asked)}"}
    out = response_headers({"Content-Type": "application/json"}, holder, ex, said)
    await sink.whole(200, out, json.dumps(count.answer(ask)).encode())
    return Attempt(Outcome.ANSWERED)
