"""Which of a peer relay's sessions is the other side of our connection to it. Pure: no I/O.

A relay numbers the connections it starts (1, 2, ..., one count for all its peers, so a
number never repeats, even to a peer it forgot and found again), and sends every frame
under its connection's *session*: its number, and the peer's session it answers (0 when
it starts over by itself). Both go in one integer token (``token``), so a relay of an
earlier version, which sends and orders bare numbers, still sees them grow.

The rules, for the frames of one peer (``Sessions.heard``):

- A connection takes the frames of exactly one peer session, from its first frame (the
  peer's HELLO): a session heard already goes to the connection paired with it, or is
  dropped (an older session, or one whose connection ended: its last frames are late).
- A peer session that *answers* ours is the peer's side of it: paired, if it is the
  connection we wait on; an answer to a connection we replaced since is dropped (the
  peer answers the newer one too).
- A peer session that *starts over* is answered: a new connection of ours takes it (the
  one in use ends). Unless both relays started over at once: the relay with the lower id
  wins, the loser answers the winner's start and the winner pairs the answer. A start sent
  as NATS came back may be lost (the peer was not subscribed again yet): a winner waiting
  on such an *unsure* start starts over again instead, once it hears the loser's.

So an answer never causes another answer: two relays cannot keep replacing each other's
new connection, and a connection never gets frames from the middle of a session (the
peer's frames for streams it never opened). A relay of an earlier version does not say
what it answers: its next session is the answer while we wait, else it started over.
"""

from __future__ import annotations

from enum import Enum

SPAN = 1 << 32
"""A token is ``number * SPAN + answered``: an earlier version's bare numbers stay below."""


class Heard(Enum):
    DELIVER = "deliver"  # to the connection in use
    DROP = "drop"
    ANSWER = "answer"  # a new connection answers it (the one in use ends) and takes it
    START = "start"  # a new connection of our own starts over (the frame is dropped)


def token(number: int, answered: int = 0) -> int:
    """Our session ``number``'s token: answering the peer's ``answered`` (0: none)."""
    return number * SPAN + answered


class Sessions:
    """One peer's sessions, and the connection we have with it (``started`` and
    ``answering`` open one, ``ended`` says it is over).

    ``wins``: when both relays start over at once, ours is the start that counts (the
    lower relay id)."""

    __slots__ = ("latest", "ours", "paired", "unsure", "waiting", "wins")

    def __init__(self, *, wins: bool) -> None:
        self.wins = wins
        self.latest: int | None = None  # the newest session number the peer used
        self.ours: int | None = None  # our connection's number (None: we have none)
        self.paired: int | None = None  # the peer session it takes
        self.waiting = False  # ours started over by itself: waiting for the peer's answer
        self.unsure = False  # and its start may have been lost

    def started(self, number: int, *, sure: bool = True) -> int:
        """Our new connection ``number`` starts over by itself (``sure``: the peer hears its
        start, unless the relay dies): its token."""
        self.ours, self.paired, self.waiting, self.unsure = number, None, True, not sure
        return token(number)

    def answering(self, number: int) -> int:
        """Our new connection ``number`` answers the peer's latest session: its token."""
        assert self.latest is not None
        self.ours, self.paired, self.waiting = number, self.latest, False
        return token(number, self.latest)

    def ended(self) -> None:
        """Our connection ended: the rest of its peer session is late, and dropped."""
        self.ours = self.paired = None
        self.waiting = False

    def heard(self, session: int) -> Heard:
        """What to do with a frame of the peer's ``session`` token."""
        number, answered = divmod(session, SPAN) if session >= SPAN else (session, None)
        latest = self.latest
        if latest is not None and number <= latest:
            return Heard.DELIVER if number == self.paired else Heard.DROP
        self.latest = number
        if answered is None:  # an earlier version: its next session answers ours, if we wait
            if self.waiting:
                self.paired, self.waiting = number, False
                return Heard.DELIVER
            return Heard.ANSWER
        if answered == 0:  # the peer started over
            if self.waiting and self.wins:  # as we did: it answers ours, if it heard it
                return Heard.START if self.unsure else Heard.DROP
            return Heard.ANSWER
        if self.waiting and answered == self.ours:
            self.paired, self.waiting = number, False
            return Heard.DELIVER
        return Heard.DROP  # it answers a connection of ours that is gone (or not waiting)
