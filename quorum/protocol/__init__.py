"""The Quorum tunnel protocol, sans-I/O. Everything that decides what may be
sent or received, and what it does to the state, is written down here.

Rule 0: this package is stdlib only and never touches a socket, a clock or a
task (no asyncio, aiohttp or websockets); node and relay both import it.
Callers pass bytes in, take bytes and events out, and pass ``now`` in.

Frames
------
One binary WebSocket message carries exactly one frame: a 7-byte header
(``struct "!BBBI"``: version, type, flags, stream id u32) and a payload; the
WebSocket layer delimits it, so there is no length field. Version is 1; any
other version is a connection error. The largest frame is 7 + 65536 bytes.

======  ==============  ======  =============================================
type    name            stream  payload
======  ==============  ======  =============================================
0x01    HELLO           0       JSON: version, node_id, role, max_streams,
                                capabilities
0x02    PING            0       8 opaque bytes; answered by PONG (automatic)
0x03    PONG            0       the PING's 8 bytes
0x04    GOAWAY          0       JSON: last_stream_id, reason, message
0x05    PRESENCE        0       JSON: node_id, models[{id, type, service,
                                features}], online, age_ms
0x06    USAGE           0       JSON: records[{model, requests,
                                prompt_tokens, completion_tokens, errors}]
0x07    REVOCATION      0       JSON: message (relay to node only, and only
                                if its HELLO announced ``revocations``)
0x10    REQUEST         odd/ev  JSON request head: method, path, headers
                                [[name, value]...], node, model, deadline_ms
0x11    RESPONSE        odd/ev  JSON response head: status, headers
0x12    DATA            odd/ev  0..65536 body bytes (flow controlled)
0x13    RESET           odd/ev  u16 ResetCode + UTF-8 message (<= 1 KiB)
0x14    WINDOW_UPDATE   any     u32 increment, 1..2**31-1 (0: connection)
======  ==============  ======  =============================================

Flags: ``END_STREAM`` (0x01; REQUEST, RESPONSE, DATA; an empty DATA with
END_STREAM is a bare end), ``BLOCKED`` (0x02; DATA only: the sender has more
but ran out of stream credit; may ride an empty DATA) and ``IGNORABLE``
(0x80; any frame). A frame of unknown type is dropped if it carries
IGNORABLE and is a connection error otherwise: a future version can add
advisory frames without breaking old peers, and nothing that changes state
can be lost silently. Any other flag bit, a payload of the wrong size, a
control type off stream 0 or a stream type on stream 0 is a connection
error. JSON payloads are decoded strictly (``messages.py``): unknown keys,
wrong types and out-of-range values are connection errors; new fields ride
on a capability named in HELLO.

Connection
----------
- HELLO is the first frame each side sends, and must be the first it
  receives (else connection error). ``data_to_send`` returns nothing until
  our HELLO is queued, and HELLO jumps ahead of anything queued before it.
  The peer must announce the opposite role. A second HELLO is an error.
- Streams are opened only after both HELLOs; nodes open odd ids, the relay
  even ids; stream 0 is the connection. Each side's ids strictly increase.
- GOAWAY (either side): no new streams in either direction from then on.
  ``last_stream_id`` is the highest stream *the receiver* opened that the
  sender accepted; the receiver's streams above it are reported
  ``StreamReset(REFUSED, remote=True)`` at once (never processed, safe to
  retry). A later GOAWAY may lower ``last_stream_id``, never raise it. The
  sender refuses (RESET REFUSED) any stream still arriving; a REQUEST from a
  side that sent GOAWAY is a connection error. Running streams finish
  normally; the adapter closes once ``active_streams == 0``.
- REVOCATION: the relay tells a node that credentials of its cluster stopped
  counting (a key revoked, a member removed, a user disabled); the node drops
  its cached key checks. A new frame type, so it is sent only to a node whose
  HELLO announced the capability ``revocations`` (``send_revocation`` raises
  ``LocalProtocolError`` otherwise); one received by a relay, or by a node that
  did not announce it, is a connection error.
- A connection error (``RemoteProtocolError``) closes the connection: state
  CLOSED, queued DATA is dropped and a GOAWAY(PROTOCOL_ERROR) is queued.
  ``connection_lost()`` then resets every running stream locally
  (PROTOCOL_ERROR, or PEER_GONE when the socket just died).

Streams
-------
``REQUEST`` opens (OPEN, or HALF_CLOSED_* with END_STREAM). The opener sends
the request body as DATA and ends it; the acceptor answers with exactly one
``RESPONSE`` before any of its own DATA, then DATA, then END_STREAM. Either
side may RESET at any time; RESET closes both halves at once and drops
unsent data. A stream is CLOSED when both halves ended or on RESET.

==================  ======================  ==================================
state               we may send             peer may send
==================  ======================  ==================================
OPEN                DATA, END, RESET        DATA, END, RESET, WINDOW_UPDATE
HALF_CLOSED_LOCAL   RESET, WINDOW_UPDATE    DATA, END, RESET, WINDOW_UPDATE
HALF_CLOSED_REMOTE  DATA, END, RESET        RESET, WINDOW_UPDATE
CLOSED              (nothing)               late frames, silently ignored
==================  ======================  ==================================

The opener may receive DATA only after RESPONSE. A stream-rule violation on
a live stream (DATA after END, DATA before RESPONSE, a second RESPONSE,
RESPONSE on the peer's own stream) resets that stream with PROTOCOL_ERROR and
leaves the others alone. Frames for a stream id that was opened and has
since closed are ignored, because a RESET crosses frames already in flight;
frames for an id never opened (by either side's counter) are a connection
error, as is a REQUEST with our parity or a non-increasing id.

Flow control
------------
Every stream has a credit window per direction, and each connection one
more, counting DATA payload bytes only. Each starts at a protocol constant
(256 KiB per stream, 1 MiB per connection) so nobody waits for a setting;
a receiver whose ``Limits`` ask for more grants the difference at once (for
the connection, right after HELLO). ``send_data`` accepts only
min(stream credit, connection credit) bytes, returns that count and emits
``StreamWritable`` when credit returns, so the protocol never buffers more
than the peer granted. Credit returns to the peer *only* when the app calls
``consumed(stream_id, n)``: the relay calls it after writing those bytes
downstream, so a frozen reader stops its sender after exactly one window and
never grows memory. Grants are batched (half a window). A stream window
doubles, up to ``max_window``, when the sender ran dry while the reader kept
up: the sender flags the DATA that exhausted its stream credit BLOCKED, and
the window grows at the next grant if the reader has meanwhile caught up to
within a quarter window (``streams.RecvWindow``). The connection window is
fixed. DATA over a stream's credit resets that stream FLOW_CONTROL; over the
connection's credit it is a connection error. A WINDOW_UPDATE pushing a window past
2**31-1 resets the stream (or, on stream 0, fails the connection). Bytes of
a reset stream are released automatically; bytes of a cleanly ended stream
must still be ``consumed``.

Send order: ``data_to_send`` returns control frames (stream 0, REQUEST,
RESPONSE, RESET, WINDOW_UPDATE) in the order queued, then DATA frames
round-robin across streams. END travels as DATA, so it never overtakes its
stream's body.

Limits (``Limits``, all bounding the peer)
------------------------------------------
max_streams (announced in HELLO; one more is RESET REFUSED), opens per second
(token bucket, injected ``now``; over it: REFUSED), max_header_block (a
larger REQUEST is RESET TOO_LARGE, a larger RESPONSE resets the stream
TOO_LARGE), initial/max/connection windows as above. The frame size is fixed
at 64 KiB payload.

Reset codes (``ResetCode``)
---------------------------
CANCEL 1, REFUSED 2 (not processed; retry elsewhere), NO_ROUTE 3, TIMEOUT 4,
PROTOCOL_ERROR 5, FLOW_CONTROL 6, INTERNAL 7, PEER_GONE 8, TOO_LARGE 9. Any
other code is a connection error.

Errors
------
Only ``quorum.errors.ProtocolError`` subclasses leave this package:
``RemoteProtocolError`` when the peer broke a rule (from ``receive_frame``
and the ``decode`` functions), ``LocalProtocolError`` when our own caller
asked for something forbidden (the call then changes nothing). ``liveness``
and ``backoff`` raise ``ValueError`` for nonsensical arguments.
"""

from .backoff import Reconnect, Rng, backoff
from .connection import Connection, ConnectionState
from .events import (
    DataReceived,
    Event,
    GoAwayReceived,
    HelloReceived,
    PingReceived,
    PongReceived,
    PresenceReceived,
    ResponseReceived,
    RevocationReceived,
    StreamEnded,
    StreamOpened,
    StreamReset,
    StreamWritable,
    UsageReceived,
)
from .frames import (
    MAX_DATA,
    MAX_FRAME_SIZE,
    VERSION,
    Flag,
    Frame,
    FrameType,
    ResetCode,
    Role,
    decode_frame,
    encode_frame,
)
from .limits import CONNECTION_WINDOW_BASE, STREAM_WINDOW_BASE, Limits
from .liveness import Liveness
from .messages import (
    GoAway,
    GoAwayReason,
    Headers,
    Hello,
    ModelInfo,
    Presence,
    RequestHead,
    ResponseHead,
    Usage,
    UsageRecord,
)
from .records import MAX_USAGE_BATCH, RequestUsage, UsageBatch
from .revocations import REVOCATIONS, Revocation
from .streams import StreamState

__all__ = [
    "CONNECTION_WINDOW_BASE",
    "MAX_DATA",
    "MAX_FRAME_SIZE",
    "MAX_USAGE_BATCH",
    "REVOCATIONS",
    "STREAM_WINDOW_BASE",
    "VERSION",
    "Connection",
    "ConnectionState",
    "DataReceived",
    "Event",
    "Flag",
    "Frame",
    "FrameType",
    "GoAway",
    "GoAwayReason",
    "GoAwayReceived",
    "Headers",
    "Hello",
    "HelloReceived",
    "Limits",
    "Liveness",
    "ModelInfo",
    "PingReceived",
    "PongReceived",
    "Presence",
    "PresenceReceived",
    "Reconnect",
    "RequestHead",
    "RequestUsage",
    "ResetCode",
    "ResponseHead",
    "ResponseReceived",
    "Revocation",
    "RevocationReceived",
    "Rng",
    "Role",
    "StreamEnded",
    "StreamOpened",
    "StreamReset",
    "StreamState",
    "StreamWritable",
    "Usage",
    "UsageBatch",
    "UsageReceived",
    "UsageRecord",
    "backoff",
    "decode_frame",
    "encode_frame",
]
