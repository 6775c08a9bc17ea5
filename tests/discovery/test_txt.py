"""The advert's TXT encoding, names and hashes (pure; no network)."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import unicodedata
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from quorum.discovery.errors import BadAdvert
from quorum.discovery.txt import (
    MAX_LABEL_BYTES,
    MAX_TXT_RECORD_BYTES,
    MAX_TXT_STRING_BYTES,
    PROTOCOL_VERSION,
    Advert,
    decode_txt,
    encode_txt,
    host_label,
    instance_name,
    models_digest,
    safe_name,
    txt_record_size,
)
from quorum.secure import cluster_discriminator

PINNED_X = "e13a061c"

HEX16 = st.text("0123456789abcdef", min_size=16, max_size=16)
HEX8 = st.text("0123456789abcdef", min_size=8, max_size=8)
NODE_IDS = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", min_size=1, max_size=64
)
ADVERTS = st.builds(
    Advert,
    version=st.integers(1, 999),
    node_id=NODE_IDS,
    node_name=st.text(max_size=300),
    port=st.integers(1, 65535),
    cluster=HEX8,
    identity=HEX16,
    models_digest=HEX16,
)
CLUSTER = cluster_discriminator("token")
LONG_NAMES = [
    "",
    "   ",
    "a" * 400,
    "é" * 200,
    "👩‍👩‍👧‍👦" * 30,
    "e\u0301" * 60,
    "studio.local\x00\n\u202eevil",
    "\ud800 lone surrogate",
]


def advert(**over: Any) -> Advert:
    base = Advert(
        version=PROTOCOL_VERSION,
        node_id="3f2a9c1b7d",
        node_name="studio",
        port=32768,
        cluster=CLUSTER,
        identity="0123456789abcdef",
        models_digest=models_digest(["qwen3"]),
    )
    return dataclasses.replace(base, **over)


@given(ADVERTS)
def test_round_trip_keeps_everything_but_an_unsafe_name(a: Advert) -> None:
    decoded = decode_txt(encode_txt(a))
    assert decoded == dataclasses.replace(a, node_name=safe_name(a.node_name))
    assert encode_txt(decoded) == encode_txt(a)


@given(ADVERTS)
@example(advert(node_id="x" * 64, node_name="é" * 300, version=999, port=65535))
def test_txt_respects_dns_sd_limits(a: Advert) -> None:
    props = encode_txt(a)
    assert all(len(k) + 1 + len(v) <= MAX_TXT_STRING_BYTES for k, v in props.items())
    assert txt_record_size(props) <= MAX_TXT_RECORD_BYTES
    assert all(k == k.lower() and 1 <= len(k) <= 2 for k in props)


@given(st.text(max_size=300), st.sampled_from(LONG_NAMES))
@example("", "")
def test_names_fit_one_dns_label_and_are_stable(name: str, extra: str) -> None:
    for candidate in (name, extra, extra + name):
        label = instance_name(advert(node_name=candidate))
        assert len(label.encode("utf-8")) <= MAX_LABEL_BYTES
        assert label.endswith(" (3f2a9c1b)")
        assert "." not in label and "\\" not in label
        assert not any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in label)
        assert label == unicodedata.normalize("NFC", label)
        safe = safe_name(candidate)
        assert safe and safe == safe_name(safe) and safe == safe.strip()
        assert len(safe.encode("utf-8")) <= MAX_LABEL_BYTES


def test_name_truncation_never_splits_a_character() -> None:
    assert safe_name("é" * 40) == "é" * 31  # 62 bytes: a 32nd would need 64
    assert safe_name("a" * 62 + "é") == "a" * 62
    assert safe_name("a" * 60 + "e\u0301\u0301") == "a" * 60 + "é"  # NFC first, then cut
    assert safe_name("") == safe_name(" \n ") == "quorum"
    assert safe_name("my.box\tone") == "my-box one"


@given(NODE_IDS)
def test_host_label_is_a_valid_host_name(node_id: str) -> None:
    label = host_label(node_id)
    assert re.fullmatch(r"quorum-[a-z0-9-]*[a-z0-9]", label)
    assert len(label) <= MAX_LABEL_BYTES


def test_keys_are_case_insensitive_and_the_first_wins() -> None:
    props: dict[bytes, bytes | None] = {k.upper(): v for k, v in encode_txt(advert()).items()}
    assert decode_txt(props) == advert()
    props = {b"P": b"1234", **{k: v for k, v in encode_txt(advert()).items()}}
    assert decode_txt(props).port == 1234


def test_unknown_keys_are_ignored() -> None:
    props: dict[bytes, bytes | None] = {**encode_txt(advert()), b"future": b"x", b"flag": None}
    assert decode_txt(props) == advert()


@pytest.mark.parametrize("key", [b"v", b"id", b"n", b"p", b"c", b"m"])
def test_a_missing_key_is_named(key: bytes) -> None:
    props: dict[bytes, bytes | None] = dict(encode_txt(advert()))
    del props[key]
    with pytest.raises(BadAdvert) as raised:
        decode_txt(props)
    assert raised.value.field == key.decode()
    props[key] = None  # RFC 6763 boolean attribute: present, no value
    with pytest.raises(BadAdvert):
        decode_txt(props)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (b"v", b"0"),
        (b"v", b"x"),
        (b"v", b"1000"),
        (b"p", b"0"),
        (b"p", b"65536"),
        (b"p", b"+80"),
        (b" p", b" 80"),
        (b"p", b"8_0"),
        (b"p", b"\xd9\xa3"),  # an Arabic-Indic digit: int() would take it
        (b"id", b""),
        (b"id", b"has space"),
        (b"id", b"x" * 65),
        (b"c", b"ABCDEF0123456789"),
        (b"c", b"abc"),
        (b"m", b"zz" * 8),
        (b"n", b"\xff\xfe"),
    ],
)
def test_bad_values_are_rejected(key: bytes, value: bytes) -> None:
    props: dict[bytes, bytes | None] = {**encode_txt(advert()), key.strip(): value}
    with pytest.raises(BadAdvert):
        decode_txt(props)


def test_a_bad_advert_cannot_be_built() -> None:
    with pytest.raises(BadAdvert):
        advert(node_id="")
    with pytest.raises(BadAdvert):
        advert(port=0)
    with pytest.raises(BadAdvert):
        advert(cluster="secret-token")
    with pytest.raises(BadAdvert):
        advert(identity="0123")


def test_discriminator_is_stable_short_and_per_token() -> None:
    # Pinned: nodes of every version must agree on it.
    assert cluster_discriminator("token-X") == PINNED_X
    tokens = ["token-X", "token-Y", "", "tokeN-X", "token-X "]
    prints = [cluster_discriminator(t) for t in tokens]
    assert len(set(prints)) == len(tokens)
    assert all(re.fullmatch(r"[0-9a-f]{8}", p) for p in prints)


@pytest.mark.parametrize("token", ["qk_3hR9xv2LmP0sT8wYbN4cE", "short", "0123456789abcdef"])
def test_discriminator_reveals_neither_the_token_nor_a_plain_hash(token: str) -> None:
    fingerprint = cluster_discriminator(token)
    assert token not in fingerprint and fingerprint not in token
    data = token.encode()
    for algorithm in sorted(hashlib.algorithms_guaranteed):
        h = hashlib.new(algorithm, data)
        plain = h.hexdigest(64) if algorithm.startswith("shake") else h.hexdigest()  # type: ignore[call-arg]
        assert fingerprint not in plain, algorithm
    assert fingerprint not in hashlib.pbkdf2_hmac("sha256", data, b"", 1).hex()


@given(st.lists(st.text(max_size=40), max_size=20), st.randoms(use_true_random=False))
def test_models_digest_ignores_order_and_duplicates(ids: list[str], rnd: object) -> None:
    shuffled = list(ids)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert models_digest(shuffled) == models_digest(ids) == models_digest(ids + ids)
    assert models_digest(iter(ids)) == models_digest(ids)
    assert re.fullmatch(r"[0-9a-f]{16}", models_digest(ids))


def test_models_digest_separates_sets() -> None:
    digests = [
        models_digest([]),
        models_digest([""]),
        models_digest(["ab"]),
        models_digest(["a", "b"]),
        models_digest(["a,b"]),
        models_digest(["a\nb"]),
        models_digest(["qwen3:8b"]),
        models_digest(["qwen3:8B"]),
    ]
    assert len(set(digests)) == len(digests)
