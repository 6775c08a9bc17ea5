"""The failover decision as a table, and the wait queue's decision."""

from __future__ import annotations

import pytest

from quorum.config import EngineKind
from quorum.routing import (
    REPLAY_LIMIT_BYTES,
    Action,
    FailoverPolicy,
    Health,
    Outcome,
    Verdict,
    admission,
    estimated_wait_s,
    is_failure,
    key_of,
    next_step,
    outcome_of_status,
    retry_after,
    set_limits,
    started,
)
from tests.routing.helpers import fail, holder, succeed

MIB = 1024 * 1024


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.ANSWERED),
        (302, Outcome.ANSWERED),
        (400, Outcome.ANSWERED),
        (404, Outcome.ANSWERED),
        (413, Outcome.ANSWERED),
        (429, Outcome.TOO_MANY_REQUESTS),
        (500, Outcome.SERVER_ERROR),
        (502, Outcome.SERVER_ERROR),
        (503, Outcome.SERVER_ERROR),
        (504, Outcome.SERVER_ERROR),
    ],
)
def test_outcome_of_status(status: int, outcome: Outcome) -> None:
    assert outcome_of_status(status) is outcome


@pytest.mark.parametrize(
    ("outcome", "attempt", "body", "left", "action"),
    [
        # Before the first byte: the next candidate.
        (Outcome.REFUSED, 1, 100, 2, Action.RETRY),
        (Outcome.HEADER_TIMEOUT, 1, 100, 2, Action.RETRY),
        (Outcome.BAD_RESPONSE, 1, 100, 2, Action.RETRY),
        (Outcome.SERVER_ERROR, 1, 100, 2, Action.RETRY),
        (Outcome.TOO_MANY_REQUESTS, 1, 100, 2, Action.RETRY),
        (Outcome.RESET, 2, 100, 1, Action.RETRY),
        # The answer is the answer.
        (Outcome.ANSWERED, 1, 100, 2, Action.DONE),
        (Outcome.ANSWERED, 3, 100, 0, Action.DONE),
        # After the first byte, never.
        (Outcome.BROKEN_MID_ANSWER, 1, 100, 2, Action.GIVE_UP),
        # Three attempts at most.
        (Outcome.REFUSED, 3, 100, 5, Action.GIVE_UP),
        # Nobody left.
        (Outcome.SERVER_ERROR, 1, 100, 0, Action.GIVE_UP),
        # Body size against the replay limit (8 MiB).
        (Outcome.REFUSED, 1, 8 * MIB, 2, Action.RETRY),
        (Outcome.REFUSED, 1, 8 * MIB + 1, 2, Action.GIVE_UP),
        (Outcome.REFUSED, 1, 0, 2, Action.RETRY),
    ],
)
def test_failover_table(
    outcome: Outcome, attempt: int, body: int, left: int, action: Action
) -> None:
    step = next_step(outcome, attempt=attempt, body_size=body, candidates_left=left)
    assert step.action is action, step.reason
    assert step.reason


def test_failover_policy_is_configurable() -> None:
    one = FailoverPolicy(max_attempts=1)
    step = next_step(Outcome.REFUSED, attempt=1, body_size=0, candidates_left=3, policy=one)
    assert step.action is Action.GIVE_UP
    five = FailoverPolicy(max_attempts=5, replay_limit_bytes=10)
    step = next_step(Outcome.RESET, attempt=4, body_size=10, candidates_left=1, policy=five)
    assert step.action is Action.RETRY
    step = next_step(Outcome.RESET, attempt=1, body_size=11, candidates_left=1, policy=five)
    assert "replay limit" in step.reason
    assert FailoverPolicy().replay_limit_bytes == REPLAY_LIMIT_BYTES == 8 * MIB
    with pytest.raises(ValueError):
        FailoverPolicy(max_attempts=0)


def test_every_outcome_but_an_answer_is_a_failure() -> None:
    assert [o for o in Outcome if not is_failure(o)] == [Outcome.ANSWERED]


@pytest.mark.parametrize(
    ("free", "ahead", "size", "deadline", "now", "verdict"),
    [
        (True, 0, 8, 10.0, 0.0, Verdict.ADMIT),
        (True, 0, 0, 10.0, 0.0, Verdict.ADMIT),  # no queue needed when a slot is free
        (True, 0, 8, 10.0, 11.0, Verdict.ADMIT),  # a free slot wins over the deadline
        (True, 2, 8, 10.0, 0.0, Verdict.WAIT),  # others wait first: first come, first served
        (False, 0, 8, 10.0, 0.0, Verdict.WAIT),
        (False, 7, 8, 10.0, 9.9, Verdict.WAIT),
        (False, 8, 8, 10.0, 0.0, Verdict.REJECT),  # queue full
        (False, 0, 0, 10.0, 0.0, Verdict.REJECT),  # no queue at all
        (False, 0, 8, 10.0, 10.0, Verdict.REJECT),  # deadline reached
        (True, 3, 8, 10.0, 10.0, Verdict.REJECT),
    ],
)
def test_admission_table(
    free: bool, ahead: int, size: int, deadline: float, now: float, verdict: Verdict
) -> None:
    got = admission(free_slot=free, ahead=ahead, queue_size=size, deadline=deadline, now=now)
    assert got.verdict is verdict
    if verdict is Verdict.REJECT:
        assert got.retry_after_s >= 1
        assert got.reason
    else:
        assert got.retry_after_s == 0


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert [retry_after(s) for s in (-3.0, 0.0, 0.2, 1.0, 1.01, 59.5)] == [1, 1, 1, 1, 2, 60]
    assert retry_after(float("inf")) == 1
    rejected = admission(
        free_slot=False, ahead=9, queue_size=9, deadline=5.0, now=0.0, wait_hint_s=7.2
    )
    assert rejected.retry_after_s == 8


def test_estimated_wait_from_limits_and_latency() -> None:
    a = holder(engine=EngineKind.OLLAMA)  # limit 4
    b = holder(engine=EngineKind.LMSTUDIO, service="studio")  # limit 1
    h = succeed(succeed(Health(), key_of(a), 0.0, latency_s=2.0), key_of(b), 0.0, latency_s=4.0)
    # 10 ahead + this one drain at 4 slots / 2 s + 1 slot / 4 s = 2.25 requests a second.
    assert estimated_wait_s(h, [a, b], ahead=10, now=1.0) == pytest.approx(11 / 2.25)
    assert estimated_wait_s(Health(), [a], ahead=3, now=0.0) == pytest.approx(1.0)
    h = set_limits(h, {key_of(a): 1})
    # One slot each: 1 / 2 s + 1 / 4 s = 0.75 requests a second.
    assert estimated_wait_s(h, [a, b], ahead=0, now=1.0) == pytest.approx(1 / 0.75)


def test_estimated_wait_when_everything_cools_is_the_first_reopening() -> None:
    a, b = holder(), holder(node="b")
    h = fail(fail(Health(), key_of(a), 10.0, times=3), key_of(b), 12.0, times=3)
    assert estimated_wait_s(h, [a, b], ahead=0, now=11.0) == pytest.approx(4.0)
    probing = started(h, key_of(a), 15.0)
    assert estimated_wait_s(probing, [a, b], ahead=0, now=15.0) == pytest.approx(2.0)
