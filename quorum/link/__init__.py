"""The tunnel's asyncio adapter, one for the node and the relay alike.

:mod:`quorum.protocol` decides everything and does no I/O; this package moves
its bytes and turns its events into awaitable objects, and nothing else:

- :mod:`.transport`: ``Transport``, what a socket must offer (send one
  message, receive one, close). The node wraps its ``websockets`` client
  connection, the relay its aiohttp WebSocket, tests an in-memory pair.
- :mod:`.pump`: ``Pump``, one connection's reader and writer tasks; it
  fails every stream at once when the connection ends.
- :mod:`.keepalive`: its heartbeat (pings, and the death verdict, on a
  timer); and how a connection ended (``Ended``).
- :mod:`.stream`: ``TunnelStream``, one tunnel stream as an async byte stream
  (``send_all`` / ``receive_some`` / ``send_eof`` / ``aclose``, plus
  ``reset`` and the response head), with credit granted back only as the
  reader comes back for more.
- :mod:`.resets`: which error a reset stream raises.

Layering: this package imports asyncio, the stdlib, ``quorum.protocol`` and
``quorum.errors``, nothing else of ``quorum`` and no third-party library, so
the relay may import it (``tests/test_layout.py`` checks both directions).
"""

from .keepalive import Ended, EndReason, Keepalive
from .pump import OnEvent, OnStream, Pump
from .resets import reset_error
from .stream import ResetInfo, TunnelStream
from .transport import Transport

__all__ = [
    "EndReason",
    "Ended",
    "Keepalive",
    "OnEvent",
    "OnStream",
    "Pump",
    "ResetInfo",
    "Transport",
    "TunnelStream",
    "reset_error",
]
