"""What a Quorum node says about itself over DNS-SD, and the hashes it carries.

Pure: no I/O, no clock. One node advertises one ``_quorum._tcp.local.``
service; its TXT record (RFC 6763 §6) carries an :class:`Advert`:

====  ====================  =============================================
key   field                 value
====  ====================  =============================================
v     ``version``           protocol version, decimal (1..999)
id    ``node_id``           stable node id, 1-64 of ``[A-Za-z0-9._-]``
n     ``node_name``         display name, UTF-8, sanitized, at most 63 bytes
p     ``port``              HTTP port, decimal (1..65535)
c     ``cluster``           :func:`~quorum.secure.cluster_discriminator` of the token
k     ``identity``          short fingerprint of the node's identity key (16 hex)
m     ``models_digest``     :func:`models_digest` of the node's model ids
====  ====================  =============================================

Contract, following RFC 6763:

- keys are short, lower case when written and matched case-insensitively
  when read; the first occurrence of a key wins (§6.4); unknown keys are
  ignored, so adding a key does not need a new version;
- every ``key=value`` string is at most 255 bytes and the whole record stays
  under 200 bytes (§6.2 asks for "under 400, ideally under 200");
- the instance name is one DNS label of at most 63 bytes UTF-8 (§4.1.1),
  NFC-normalized, with no control characters and no dots (python-zeroconf
  treats a dot as a label separator).

Nothing in an advert is a credential, and nothing trusts one: anyone may copy
or replay it. ``c`` only tells clusters apart (an HMAC of a constant under a key
derived from the token: it reveals nothing of the token and proves nothing);
``k`` says which identity key the node will present. A peer becomes a member
only by completing mutual TLS with a certificate of the cluster CA that names
its node id and carries that key (:mod:`quorum.secure`).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from quorum.discovery.errors import BadAdvert

SERVICE_TYPE = "_quorum._tcp.local."
PROTOCOL_VERSION = 1

MAX_LABEL_BYTES = 63  # RFC 1035 §2.3.4
MAX_TXT_STRING_BYTES = 255  # RFC 6763 §6.1
MAX_TXT_RECORD_BYTES = 200  # RFC 6763 §6.2, the "ideally" size
MAX_NODE_ID_CHARS = 64
DEFAULT_NODE_NAME = "quorum"

CLUSTER_HEX_CHARS = 8
IDENTITY_HEX_CHARS = 16
DIGEST_HEX_CHARS = 16

KEY_VERSION = "v"
KEY_NODE_ID = "id"
KEY_NAME = "n"
KEY_PORT = "p"
KEY_CLUSTER = "c"
KEY_IDENTITY = "k"
KEY_MODELS = "m"

_MODELS_PERSON = b"quorum.models"  # blake2b personalisation: at most 16 bytes

_NODE_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")  # MAX_NODE_ID_CHARS
_HEX16_RE = re.compile(r"[0-9a-f]{16}")
_HEX8_RE = re.compile(r"[0-9a-f]{8}")
_DECIMAL_RE = re.compile(r"[0-9]{1,5}")
_ID_SUFFIX_CHARS = 8
_HOST_LABEL_BAD = re.compile(r"[^a-z0-9-]+")


@dataclass(frozen=True, slots=True)
class Advert:
    """One node's advertisement. Construction validates every field but the name.

    ``node_name`` may be anything; :func:`safe_name` is applied when encoding,
    so a decoded advert always carries the sanitized name.
    """

    version: int
    node_id: str
    node_name: str
    port: int
    cluster: str
    identity: str
    models_digest: str

    def __post_init__(self) -> None:
        if not 1 <= self.version <= 999:
            raise BadAdvert(f"version {self.version} out of range", field=KEY_VERSION)
        if not _NODE_ID_RE.fullmatch(self.node_id):
            raise BadAdvert("node id must be 1-64 of [A-Za-z0-9._-]", field=KEY_NODE_ID)
        if not 1 <= self.port <= 65535:
            raise BadAdvert(f"port {self.port} out of range", field=KEY_PORT)
        if not _HEX8_RE.fullmatch(self.cluster):
            raise BadAdvert("cluster must be 8 lower-case hex", field=KEY_CLUSTER)
        if not _HEX16_RE.fullmatch(self.identity):
            raise BadAdvert("identity must be 16 lower-case hex", field=KEY_IDENTITY)
        if not _HEX16_RE.fullmatch(self.models_digest):
            raise BadAdvert("models digest must be 16 lower-case hex", field=KEY_MODELS)


def encode_txt(advert: Advert) -> dict[bytes, bytes]:
    """The TXT properties for ``advert``, lower-case keys, in a fixed order."""
    props = {
        KEY_VERSION.encode(): str(advert.version).encode(),
        KEY_NODE_ID.encode(): advert.node_id.encode(),
        KEY_NAME.encode(): safe_name(advert.node_name).encode(),
        KEY_PORT.encode(): str(advert.port).encode(),
        KEY_CLUSTER.encode(): advert.cluster.encode(),
        KEY_IDENTITY.encode(): advert.identity.encode(),
        KEY_MODELS.encode(): advert.models_digest.encode(),
    }
    # Guaranteed by the field limits above; checked so a future field cannot
    # silently break the DNS-SD limits.
    size = txt_record_size(props)
    if size > MAX_TXT_RECORD_BYTES:  # pragma: no cover - unreachable with the fields above
        raise BadAdvert(f"TXT record of {size} bytes is over {MAX_TXT_RECORD_BYTES}")
    return props


def decode_txt(properties: Mapping[bytes, bytes | None]) -> Advert:
    """Read an :class:`Advert` from TXT properties as python-zeroconf hands them over.

    Raises :class:`BadAdvert` naming the key when a required key is missing,
    has no value, is not UTF-8 or is out of range. The name is sanitized with
    :func:`safe_name`, whatever the peer sent.
    """
    fields: dict[str, bytes | None] = {}
    for raw_key, value in properties.items():
        key = raw_key.decode("ascii", errors="replace").lower()
        fields.setdefault(key, value)  # RFC 6763 §6.4: the first occurrence wins

    def text(key: str) -> str:
        value = fields.get(key)
        if value is None:
            raise BadAdvert("missing", field=key)
        if len(value) + len(key) + 1 > MAX_TXT_STRING_BYTES:
            raise BadAdvert("too long", field=key)
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise BadAdvert("not UTF-8", field=key) from None

    def decimal(key: str) -> int:
        value = text(key)
        if not _DECIMAL_RE.fullmatch(value):
            raise BadAdvert("not a decimal number", field=key)
        return int(value)

    return Advert(
        version=decimal(KEY_VERSION),
        node_id=text(KEY_NODE_ID),
        node_name=safe_name(text(KEY_NAME)),
        port=decimal(KEY_PORT),
        cluster=text(KEY_CLUSTER),
        identity=text(KEY_IDENTITY),
        models_digest=text(KEY_MODELS),
    )


def txt_record_size(properties: Mapping[bytes, bytes | None]) -> int:
    """Size in bytes of the TXT record rdata these properties encode to."""
    return sum(1 + len(k) + (0 if v is None else 1 + len(v)) for k, v in properties.items())


def safe_name(name: str, max_bytes: int = MAX_LABEL_BYTES) -> str:
    """``name`` made fit for a DNS-SD instance label and for display.

    NFC-normalized; control, line-separator and bidi-override characters
    become spaces, runs of white space one space, dots become ``-``;
    truncated to ``max_bytes`` of UTF-8 without splitting a character; an
    empty result becomes ``"quorum"``. Idempotent.
    """
    cleaned = []
    for ch in unicodedata.normalize("NFC", name):
        category = unicodedata.category(ch)
        if category in ("Cc", "Cs", "Zl", "Zp") or ch in _BIDI_CONTROLS:
            cleaned.append(" ")
        elif ch in ".\\":
            cleaned.append("-")
        else:
            cleaned.append(ch)
    text = " ".join("".join(cleaned).split())
    text = _truncate_utf8(text, max_bytes)
    return text or DEFAULT_NODE_NAME


def instance_name(advert: Advert) -> str:
    """The DNS-SD instance label for ``advert``: ``"<name> (<id prefix>)"``, at most 63 bytes.

    The id prefix keeps two nodes that share a display name from colliding,
    and keeps the label the same across restarts.
    """
    suffix = f" ({advert.node_id[:_ID_SUFFIX_CHARS]})"
    head = safe_name(advert.node_name, MAX_LABEL_BYTES - len(suffix.encode()))
    return head + suffix


def host_label(node_id: str) -> str:
    """A host name label (``quorum-<id>``) for the node's A records: ``[a-z0-9-]``, ≤ 63 bytes."""
    body = _HOST_LABEL_BAD.sub("-", node_id.lower()).strip("-") or "node"
    return f"quorum-{body}"[:MAX_LABEL_BYTES].rstrip("-")


def models_digest(model_ids: Iterable[str]) -> str:
    """16 hex chars that change when the *set* of model ids changes.

    Order and duplicates do not matter; ids are length-prefixed so no two
    different sets encode alike.
    """
    h = hashlib.blake2b(digest_size=DIGEST_HEX_CHARS // 2, person=_MODELS_PERSON)
    for model_id in sorted(set(model_ids)):
        data = model_id.encode("utf-8", errors="surrogatepass")
        h.update(len(data).to_bytes(4, "big"))
        h.update(data)
    return h.hexdigest()


_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def _truncate_utf8(text: str, max_bytes: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    cut = data[:max_bytes].decode("utf-8", errors="ignore")
    # A cut may leave a joiner or a combining mark without what it joined to.
    while cut and (unicodedata.combining(cut[-1]) or cut[-1] in "\u200d\ufe0f\ufe0e"):
        cut = cut[:-1]
    return cut.rstrip()
