"""One mapping from reset codes to the errors the proxy shows, for node and relay."""

from __future__ import annotations

import pytest

from quorum.errors import NoReachableHolder, StreamBroken, StreamRefused, UpstreamFailed
from quorum.link import reset_error
from quorum.protocol import ResetCode


@pytest.mark.parametrize(
    ("code", "kind", "status"),
    [
        (ResetCode.REFUSED, StreamRefused, 503),
        (ResetCode.NO_ROUTE, NoReachableHolder, 503),
        (ResetCode.PEER_GONE, NoReachableHolder, 503),
        (ResetCode.CANCEL, UpstreamFailed, 502),
        (ResetCode.TIMEOUT, UpstreamFailed, 502),
        (ResetCode.PROTOCOL_ERROR, UpstreamFailed, 502),
        (ResetCode.FLOW_CONTROL, UpstreamFailed, 502),
        (ResetCode.INTERNAL, UpstreamFailed, 502),
        (ResetCode.TOO_LARGE, UpstreamFailed, 502),
    ],
)
def test_before_the_answer_the_code_decides(
    code: ResetCode, kind: type[Exception], status: int
) -> None:
    error = reset_error(code, "why", peer="node studio", opener=True, answered=False)
    assert type(error) is kind and error.status == status
    assert str(error).startswith("Node studio ") and str(error).endswith(": why.")
    if status == 503:
        assert error.headers()["Retry-After"]


@pytest.mark.parametrize("code", list(ResetCode))
def test_after_the_answer_started_it_is_cut_off(code: ResetCode) -> None:
    error = reset_error(code, "", peer="the relay", opener=True, answered=True)
    assert type(error) is StreamBroken and error.status == 502
    assert (
        str(error)
        == f"The answer from the relay was cut off: {code.name.lower().replace('_', ' ')}."
    )


def test_the_side_that_answers_sees_its_request_cut_off() -> None:
    error = reset_error(ResetCode.REFUSED, "gone", peer="the relay", opener=False, answered=False)
    assert type(error) is StreamBroken
    assert str(error) == "The request from the relay was cut off: gone."
