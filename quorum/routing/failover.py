"""Whether a failed attempt moves on to the next candidate: a pure decision.

Rules (everything that decides a retry lives here):
- Only a failure before the first byte reached the client is retried: the
  connection was refused, no response head came within the holder's header
  timeout, the answer was not HTTP, the head said 5xx or 429, or the
  connection broke before any byte was passed on. The request is replayed
  whole to the next candidate, so nothing the client saw can be duplicated.
- After the first byte nothing is retried (``BROKEN_MID_ANSWER``): the client
  sees the failure in the answer (an SSE ``error`` event, then the stream
  ends without ``[DONE]``; any other body is cut short).
- Any other status (2xx, 3xx, a 4xx but 429) is the answer, passed on as it is:
  a bad request is not made good by another holder.
- At most ``policy.max_attempts`` attempts in all (default 3), and only while
  a candidate is left.
- A body over ``policy.replay_limit_bytes`` (default 8 MiB) is not retried:
  holding several copies of large uploads for a replay costs more memory than
  a failed request costs the client.
- Retrying a POST is safe here because nothing reached the client and the
  OpenAI endpoints have no side effects beyond compute spent on the failed
  holder.
- For health (``health.finished``), every outcome but ``ANSWERED`` is a
  failure of the holder; 429 too, so a holder that keeps refusing for load
  cools down and the others take its share.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

MAX_ATTEMPTS = 3
REPLAY_LIMIT_BYTES = 8 * 1024 * 1024


class Outcome(enum.StrEnum):
    """How one attempt on one holder ended."""

    ANSWERED = "answered"  # a response head other than 5xx/429: the answer is passed on
    REFUSED = "refused"  # the connection could not be made
    HEADER_TIMEOUT = "header_timeout"  # no response head in time
    BAD_RESPONSE = "bad_response"  # not HTTP, before any byte reached the client
    SERVER_ERROR = "server_error"  # a 5xx response head
    TOO_MANY_REQUESTS = "too_many_requests"  # a 429 response head
    RESET = "reset"  # the connection broke before any byte reached the client
    BROKEN_MID_ANSWER = "broken_mid_answer"  # it broke after the first byte was passed on


RETRYABLE = frozenset(
    {
        Outcome.REFUSED,
        Outcome.HEADER_TIMEOUT,
        Outcome.BAD_RESPONSE,
        Outcome.SERVER_ERROR,
        Outcome.TOO_MANY_REQUESTS,
        Outcome.RESET,
    }
)


class Action(enum.StrEnum):
    DONE = "done"  # the answer is passed on
    RETRY = "retry"  # try the next candidate with the same body
    GIVE_UP = "give_up"  # answer the client with this attempt's error


@dataclass(frozen=True, slots=True)
class FailoverPolicy:
    max_attempts: int = MAX_ATTEMPTS
    replay_limit_bytes: int = REPLAY_LIMIT_BYTES

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.replay_limit_bytes < 0:
            raise ValueError("replay_limit_bytes must not be negative")


@dataclass(frozen=True, slots=True)
class Step:
    """What to do after an attempt, and why (for the log line)."""

    action: Action
    reason: str


def outcome_of_status(status: int) -> Outcome:
    """The outcome of a response head with this status."""
    if status == 429:
        return Outcome.TOO_MANY_REQUESTS
    if status >= 500:
        return Outcome.SERVER_ERROR
    return Outcome.ANSWERED


def is_failure(outcome: Outcome) -> bool:
    """Whether the outcome counts against the holder's health (``not ok`` in ``finished``)."""
    return outcome is not Outcome.ANSWERED


def next_step(
    outcome: Outcome,
    *,
    attempt: int,
    body_size: int,
    candidates_left: int,
    policy: FailoverPolicy = FailoverPolicy(),
) -> Step:
    """After attempt number ``attempt`` (1 for the first) ended in ``outcome``.

    ``candidates_left`` counts the candidates not tried yet that may still be
    tried (the caller skips those that became unavailable).
    """
    if outcome is Outcome.ANSWERED:
        return Step(Action.DONE, "answered")
    if outcome not in RETRYABLE:
        return Step(
            Action.GIVE_UP, "the answer had started: nothing is retried after the first byte"
        )
    if attempt >= policy.max_attempts:
        return Step(Action.GIVE_UP, f"{attempt} of at most {policy.max_attempts} attempts made")
    if body_size > policy.replay_limit_bytes:
        return Step(
            Action.GIVE_UP,
            f"a body of {body_size} bytes is over the replay limit of "
            f"{policy.replay_limit_bytes} bytes",
        )
    if candidates_left < 1:
        return Step(Action.GIVE_UP, "no other holder to try")
    return Step(Action.RETRY, f"{outcome.value}: trying the next holder")
