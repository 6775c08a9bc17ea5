"""Which error a reset stream raises: one mapping for the node and the relay.

The error is chosen by who opened the stream, whether its answer had
started, and the reset code:

=====================  ===================================  ====================
side                   code                                 error
=====================  ===================================  ====================
opener, no answer yet  REFUSED                              ``StreamRefused``
                                                            (not processed: retry)
opener, no answer yet  NO_ROUTE, PEER_GONE                  ``NoReachableHolder``
opener, no answer yet  anything else                        ``UpstreamFailed``
opener, answer started any                                  ``StreamBroken``
acceptor               any                                  ``StreamBroken``
=====================  ===================================  ====================

All of them are ``ApiError``: the proxy answers them as they are (503 or
502 before the answer started; a visibly truncated answer after).
"""

from __future__ import annotations

from quorum.errors import ApiError, NoReachableHolder, StreamBroken, StreamRefused, UpstreamFailed
from quorum.protocol import ResetCode

_NOT_REACHED = frozenset({ResetCode.NO_ROUTE, ResetCode.PEER_GONE})


def reset_error(
    code: ResetCode, message: str, *, peer: str, opener: bool, answered: bool
) -> ApiError:
    """The error for a stream reset with ``code`` and ``message``.

    ``peer`` names the far end in the sentence ("node studio", "the node
    through the relay"); ``opener``: we opened the stream (we sent the
    request); ``answered``: the response head had arrived.
    """
    why = message or code.name.lower().replace("_", " ")
    if not opener:
        return StreamBroken(f"The request from {peer} was cut off: {why}.")
    if answered:
        return StreamBroken(f"The answer from {peer} was cut off: {why}.")
    subject = peer[:1].upper() + peer[1:]
    if code is ResetCode.REFUSED:
        return StreamRefused(f"{subject} refused the request: {why}.")
    if code in _NOT_REACHED:
        return NoReachableHolder(f"{subject} could not be reached: {why}.")
    return UpstreamFailed(f"{subject} failed the request: {why}.")
