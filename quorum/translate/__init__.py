"""One pure translation layer between the chat-completions shape and the other APIs
clients speak (no I/O, no asyncio: values in, values and bytes out).

Rules of the layer:

- One module per foreign API, each with both directions: a request in
  (``chat_request``, or ``*_request`` for Ollama) gives the OpenAI-shaped body
  to send to the engine; a whole answer out (``answer``) and a stream out (a
  :class:`~.stream.StreamTranslator`) give back that API's shape.
  :mod:`.responses` + :mod:`.responses_stream` (OpenAI Responses; the
  response object and its items in :mod:`.responses_items`),
  :mod:`.anthropic` + :mod:`.anthropic_stream` (Anthropic Messages),
  :mod:`.ollama` + :mod:`.ollama_stream` + :mod:`.ollama_models` (Ollama's
  native API). :mod:`.chat` reads the engine's side once for all of them (its SSE
  through :mod:`.sse`, plain token chunks by their learned shape through
  :mod:`.shape`), :mod:`.stream` is the frame of every translated stream;
  :mod:`.common` holds the small shared helpers. :mod:`.count` is not a
  translation: it says how to ask each engine to count a chat's tokens, for
  Anthropic's ``count_tokens``.
- Bad input raises :class:`~quorum.errors.InvalidRequest` naming the field by
  its path; an unusable engine answer raises :class:`~quorum.errors.UpstreamFailed`.
  The caller renders either in the client's API shape (``anthropic.error_body``,
  ``ollama.error_body``; OpenAI's is ``ApiError.body()``).
- A stream ends in exactly one way: the API's normal end only when the engine
  finished a choice (a ``finish_reason``), its error event otherwise.
- Ids and clocks can be passed in; by default they are made fresh.

How the proxy uses a module (Responses shown; Anthropic and Ollama alike)::

    req = responses.chat_request(body)          # InvalidRequest -> 400 in the client's shape
    # send req.chat to the holder's POST /v1/chat/completions (Ollama: req.path, req.body)
    if not req.stream:
        out = responses.answer(req, engine_json)   # UpstreamFailed -> 502
    else:
        tr = ResponsesStream(req)                   # content type: tr.media_type
        for data in engine_bytes: write(tr.feed_sse(data))
        write(tr.end())                             # completed, or the error event if cut
        # on a broken upstream: write(tr.fail(message)); tr.usage has the token counts
"""
