"""The pure parts of users: ID token checks, the relay config and sessions on a clock the
test moves (pending sign-ins: ``test_users_store``). Tokens are signed with real keys
(joserfc); no sockets."""

from __future__ import annotations

import hashlib
from base64 import urlsafe_b64encode
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, OctKey, RSAKey

from quorum.errors import QuorumError, Unauthorized
from relay.oidc import check_claims, decode_id_token, primary_email
from relay.open_store import open_store
from relay.sessions import UserSessions
from relay.users_config import load_config, parse_config

ISSUER = "https://id.example.test"
CLIENT = "quorum-relay"
NOW = 1_800_000_000
KEY = RSAKey.generate_key(2048, parameters={"kid": "k1"})
PUBLIC = KeySet.import_key_set({"keys": [KEY.as_dict(private=False)]})


def at_hash(token: str) -> str:
    digest = hashlib.sha256(token.encode()).digest()
    return urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


def id_token(key: Any = KEY, alg: str = "RS256", **over: Any) -> str:
    claims = {
        "iss": ISSUER,
        "sub": "alice",
        "aud": CLIENT,
        "iat": NOW,
        "exp": NOW + 600,
        "nonce": "n-1",
        "at_hash": at_hash("access-1"),
    }
    claims.update(over)
    return jwt.encode(
        {"alg": alg, "kid": "k1"}, {k: v for k, v in claims.items() if v is not None}, key
    )


def check(raw: str, *, nonce: str = "n-1", now: int = NOW + 10) -> dict[str, Any]:
    token = decode_id_token(raw, PUBLIC, ["RS256"])
    return check_claims(
        token, issuer=ISSUER, client_id=CLIENT, nonce=nonce, access_token="access-1", now=now
    )


def test_a_good_id_token_passes() -> None:
    assert check(id_token())["sub"] == "alice"
    assert check(id_token(aud=[CLIENT]))["sub"] == "alice"


@pytest.mark.parametrize(
    ("claims", "nonce", "now"),
    [
        ({"iss": "https://evil.example.test"}, "n-1", NOW + 10),  # another issuer
        ({"aud": "another-client"}, "n-1", NOW + 10),  # for another client
        ({"aud": ["another-client", "third"]}, "n-1", NOW + 10),
        ({"aud": [CLIENT, "other"], "azp": "other"}, "n-1", NOW + 10),  # authorized for another
        ({}, "n-2", NOW + 10),  # another sign-in's nonce (a replay)
        ({"nonce": None}, "n-1", NOW + 10),  # no nonce
        ({}, "n-1", NOW + 600 + 61),  # expired (past the minute of leeway)
        ({"exp": None}, "n-1", NOW + 10),  # no expiry
        ({"at_hash": at_hash("another-access")}, "n-1", NOW + 10),  # for another access token
        ({"iss": None}, "n-1", NOW + 10),
    ],
)
def test_each_bad_claim_is_refused(claims: dict[str, Any], nonce: str, now: int) -> None:
    with pytest.raises(Unauthorized) as refused:
        check(id_token(**claims), nonce=nonce, now=now)
    assert refused.value.code == "signin_failed"


def test_a_bad_signature_none_and_symmetric_algorithms_are_refused() -> None:
    other = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    with pytest.raises(JoseError):
        decode_id_token(id_token(key=other), PUBLIC, ["RS256"])
    # HS256 keyed with the public key's bytes (the classic confusion), and alg "none".
    secret = OctKey.import_key(b"x" * 32, parameters={"kid": "k1"})
    with pytest.raises(JoseError):
        decode_id_token(id_token(key=secret, alg="HS256"), PUBLIC, ["RS256", "HS256"])
    _, payload, _ = id_token().split(".")
    unsigned = urlsafe_b64encode(b'{"alg":"none","kid":"k1"}').rstrip(b"=").decode()
    with pytest.raises(JoseError):
        decode_id_token(f"{unsigned}.{payload}.", PUBLIC, ["none", "RS256"])


def test_the_config_names_each_bad_key_and_keeps_secrets_out_of_sight(tmp_path: Path) -> None:
    secret = tmp_path / "id.secret"
    secret.write_text("s3cret-value\n")
    config = parse_config(
        {
            "users": {
                "operators": ["github:1"],
                "providers": [
                    {
                        "name": "id",
                        "issuer": ISSUER,
                        "client_id": "c",
                        "client_secret_file": str(secret),
                    },
                    {
                        "name": "gh",
                        "github": True,
                        "client_id": "g",
                        "client_secret_env": "GH_SECRET",
                    },
                ],
            }
        }
    )
    oidc, github = config.users.providers
    assert oidc.client_secret().get_secret_value() == "s3cret-value"
    assert "s3cret" not in repr(oidc.client_secret()) and "s3cret" not in repr(config)
    assert github.client_secret({"GH_SECRET": "from-env"}).get_secret_value() == "from-env"
    with pytest.raises(QuorumError, match=r"providers\[gh\].client_secret_env: \$GH_SECRET"):
        github.client_secret({})
    bad: list[tuple[dict[str, Any], str]] = [
        (
            {"users": {"providers": [{"name": "x", "client_id": "c", "client_secret_env": "E"}]}},
            "issuer",
        ),
        (
            {
                "users": {
                    "providers": [
                        {
                            "name": "Bad Name",
                            "github": True,
                            "client_id": "c",
                            "client_secret_env": "E",
                        }
                    ]
                }
            },
            "name",
        ),
        (
            {"users": {"providers": [{"name": "x", "github": True, "client_id": "c"}]}},
            "client_secret",
        ),
        ({"users": {"provders": []}}, "users.provders"),
        ({"users": {"public_url": "relay.example.com"}}, "public_url"),
    ]
    for data, named in bad:
        with pytest.raises(QuorumError, match=named):
            parse_config(data)
    assert load_config(None, env={}).users.providers == ()
    path = tmp_path / "relay.yaml"
    path.write_text("users: {providers: [}")
    with pytest.raises(QuorumError, match="not YAML"):
        load_config(path)


def test_user_sessions_end_when_idle_too_old_disabled_or_signed_out_everywhere(
    tmp_path: Path,
) -> None:
    store = open_store(tmp_path)
    clock = [1000.0]
    sessions = UserSessions(store, clock=lambda: clock[0], absolute_s=3600, idle_s=600)
    user = store.sign_up("id", "u", name="U", email=None, operator=False, now=clock[0])
    sid, _ = sessions.create(user.id)
    held = b"".join(p.read_bytes() for p in sorted(tmp_path.glob("relay.sqlite3*")))
    assert sid.encode() not in held  # only its hash is kept
    found = sessions.get(sid)
    assert found is not None and found[1].id == user.id
    assert sessions.get(sid + "x") is None and sessions.get(None) is None
    clock[0] += 599
    assert sessions.get(sid) is not None
    clock[0] += 601  # idle past 10 minutes (the last use was noted above)
    assert sessions.get(sid) is None
    sid, _ = sessions.create(user.id)
    for _ in range(7):
        clock[0] += 500
        assert sessions.get(sid) is not None
    clock[0] += 500  # past the absolute hour, however busy
    assert sessions.get(sid) is None
    one, _ = sessions.create(user.id)
    two, _ = sessions.create(user.id)
    assert sessions.end_all(user.id) == 2
    assert sessions.get(one) is None and sessions.get(two) is None
    three, _ = sessions.create(user.id)
    store.set_user_disabled(user.id, True, now=clock[0])
    assert sessions.get(three) is None
    store.close()


def test_github_s_primary_verified_email_is_the_only_one_taken() -> None:
    listed = [
        {"email": "a@example.test", "primary": False, "verified": True},
        {"email": "b@example.test", "primary": True, "verified": True, "visibility": None},
    ]
    assert primary_email(listed) == "b@example.test"
    assert primary_email([{"email": "c@example.test", "primary": True, "verified": False}]) is None
    odd: list[object] = [None, {}, [], ["x"], [{"email": 3, "primary": True, "verified": True}]]
    for answer in odd:
        assert primary_email(answer) is None
