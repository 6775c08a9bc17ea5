"""The pure answer filters: cut detection, and verbose_json made from json."""

from __future__ import annotations

import io
import json
import wave

from hypothesis import given
from hypothesis import strategies as st

from quorum.answers.cut import StreamCheck, finished
from quorum.answers.verbose import verbose_from_json, wav_seconds


def _event(obj: object) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def _chunk(content: str | None, finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    return _event({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


DONE = b"data: [DONE]\n\n"
COMPLETE = _chunk("Hel") + _chunk("lo") + _chunk(None, "stop") + DONE
CUT = _chunk("Hel") + _chunk("lo") + DONE  # llama-cpp-python, interrupted


def _run(stream: bytes, cuts: list[int]) -> tuple[bytes, StreamCheck]:
    check = StreamCheck()
    out = b""
    last = 0
    for at in [*sorted(set(cuts)), len(stream)]:
        out += check.feed(stream[last:at])
        last = at
    return out + check.end(), check


@given(st.lists(st.integers(0, len(COMPLETE)), max_size=8))
def test_a_complete_stream_passes_byte_for_byte(cuts: list[int]) -> None:
    out, check = _run(COMPLETE, cuts)
    assert out == COMPLETE
    assert not check.cut and check.done


@given(st.lists(st.integers(0, len(CUT)), max_size=8))
def test_a_done_without_finish_reason_is_held_back(cuts: list[int]) -> None:
    out, check = _run(CUT, cuts)
    assert out == _chunk("Hel") + _chunk("lo")
    assert check.cut and check.withheld


def test_a_stream_that_just_stops_is_cut() -> None:
    out, check = _run(_chunk("Hel"), [])
    assert out == _chunk("Hel")
    assert check.cut and not check.done


def test_crlf_events_and_a_finish_in_the_last_chunk() -> None:
    stream = (_chunk("a") + _chunk("b", "length")).replace(b"\n", b"\r\n") + b"data: [DONE]\r\n\r\n"
    out, check = _run(stream, [5, 40])
    assert out == stream and not check.cut


def test_a_finish_reason_written_in_the_content_does_not_count() -> None:
    fooled = _chunk('{"finish_reason": "stop"}') + DONE
    out, check = _run(fooled, [])
    assert check.cut and DONE not in out


def test_whole_answers() -> None:
    assert finished({"choices": [{"finish_reason": "stop", "message": {}}]})
    assert not finished({"choices": [{"finish_reason": None}]})
    assert not finished({"choices": [{"finish_reason": "stop"}, {"finish_reason": None}]})
    assert not finished({"choices": []})
    assert not finished([])


def _wav(seconds: float, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * int(seconds * rate))
    return buf.getvalue()


def test_verbose_json_from_json() -> None:
    made = verbose_from_json({"text": "hello"}, task="transcribe", language="fr", audio=_wav(1.5))
    assert made == {
        "task": "transcribe",
        "language": "fr",
        "duration": 1.5,
        "text": "hello",
        "segments": [],
    }
    billed = verbose_from_json(
        {"text": "x", "usage": {"type": "duration", "seconds": 3}},
        task="translate",
        language=None,
        audio=b"ID3 not a wav",
    )
    assert billed is not None
    assert (billed["duration"], billed["language"], billed["task"]) == (3.0, "unknown", "translate")
    assert verbose_from_json({"nope": 1}, task="transcribe", language=None, audio=None) is None
    assert wav_seconds(b"RIFF broken") is None


def test_a_finish_reason_with_unusual_spacing_counts() -> None:
    for spelled in (
        b'"finish_reason" : "stop"',
        b'"finish_reason":\t"stop"',
        b'"finish_reason":  "x"',
    ):
        stream = _chunk("a") + b'data: {"choices":[{"index":0,' + spelled + b"}]}\n\n" + DONE
        out, check = _run(stream, [])
        assert out == stream and not check.cut, spelled


def test_a_batch_of_a_thousand_events_is_checked_as_one() -> None:
    events = b"".join(_chunk(f"t{i} ") for i in range(1000))
    out, check = _run(events + _chunk(None, "stop") + DONE, [])
    assert not check.cut and check.done and check.events == 1002
    out, check = _run(events + DONE, [])  # cut: the [DONE] at the end of a big batch is held
    assert out == events and check.withheld


def test_done_only_as_a_line_of_its_own() -> None:
    fooled = _chunk("data: [DONE]") + b"xdata: [DONE]\n\n"
    out, check = _run(fooled, [])
    assert out == fooled and not check.done
