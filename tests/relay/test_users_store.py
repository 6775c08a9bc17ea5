"""Users in the store (SQLite and PostgreSQL): accounts, the first operator, membership,
invitations, tokens, sessions, pending sign-ins, key holders and per-user usage."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from quorum.errors import StoreError
from quorum.protocol import RequestUsage
from relay.keys import secret_hash
from relay.sessions import PendingSignIns
from relay.sqlite_store import SqliteStore
from relay.store import Store, UsageBy
from relay.users import Membership, Pending, Role, UserSession, first_role, named_in
from tests.postgres import STORES, held_bytes, open_kind

T0 = 1_700_000_000.0


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """On SQLite and on PostgreSQL alike."""
    with open_kind(request.param, tmp_path) as made:
        yield made


def test_the_first_account_is_the_operator_and_a_second_sign_in_refreshes_it(
    store: Store,
) -> None:
    alice = store.sign_up("id", "a-1", name="Alice", email="a@x", operator=False, now=T0)
    bob = store.sign_up("id", "b-1", name="Bob", email=None, operator=False, now=T0 + 1)
    assert (alice.role, bob.role) == (Role.OPERATOR, Role.USER)
    again = store.sign_up("id", "a-1", name="Alice L.", email="al@x", operator=False, now=T0 + 2)
    assert again.id == alice.id and again.role is Role.OPERATOR
    assert store.user(alice.id) == again and again.name == "Alice L." and again.email == "al@x"
    # The same subject at another provider is another person.
    other = store.sign_up("github", "a-1", name="A", email=None, operator=False, now=T0 + 3)
    assert other.id != alice.id and other.role is Role.USER
    # A named operator is promoted at its next sign-in.
    assert store.sign_up("id", "b-1", name="Bob", email=None, operator=True, now=T0).operator
    assert [u.name for u in store.users()] == ["Alice L.", "Bob", "A"]


def test_concurrent_first_sign_ups_make_exactly_one_operator(tmp_path: Path) -> None:
    stores = [SqliteStore(tmp_path) for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    made = []

    def sign(i: int) -> None:
        barrier.wait()
        made.append(stores[i].sign_up("id", f"u{i}", name="u", email=None, operator=False, now=T0))

    threads = [threading.Thread(target=sign, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(u.role.value for u in made) == ["operator", "user", "user", "user"]
    for s in stores:
        s.close()


def test_members_invitations_and_key_holders(store: Store, tmp_path: Path) -> None:
    owner = store.sign_up("id", "o", name="O", email=None, operator=False, now=T0)
    guest = store.sign_up("id", "g", name="G", email=None, operator=False, now=T0)
    cluster, _ = store.create_cluster("home", now=T0)
    store.add_member(cluster.id, owner.id, Membership.OWNER, now=T0)
    assert store.owned() == {cluster.id: owner.id}
    assert store.membership(cluster.id, guest.id) is None

    code = store.create_invitation(cluster.id, owner.id, now=T0, ttl_s=60)
    assert code.startswith("qi_") and code not in str(held_bytes(store, tmp_path))
    assert store.accept_invitation(code, guest.id, now=T0 + 61) is None  # expired
    code = store.create_invitation(cluster.id, owner.id, now=T0, ttl_s=60)
    assert store.accept_invitation("qi_" + "x" * 32, guest.id, now=T0) is None
    assert store.accept_invitation(code, guest.id, now=T0 + 1) == cluster.id
    assert store.accept_invitation(code, guest.id, now=T0 + 2) is None  # used once
    assert store.membership(cluster.id, guest.id) is Membership.MEMBER
    assert [m.user_id for m in store.members(cluster.id)] == [owner.id, guest.id]
    # An owner invited to their own cluster stays its owner, and is never removed as a member.
    store.add_member(cluster.id, owner.id, Membership.MEMBER, now=T0)
    assert store.membership(cluster.id, owner.id) is Membership.OWNER
    assert not store.remove_member(cluster.id, owner.id)

    key, _ = store.create_key(cluster.id, name="g", models=None, expires_at=None, now=T0)
    admin_key, _ = store.create_key(cluster.id, name="ops", models=None, expires_at=None, now=T0)
    store.set_key_owner(key.id, guest.id)
    with pytest.raises(StoreError):
        store.set_key_owner("nope", guest.id)
    assert store.key_owner(key.id) == guest.id and store.key_owner(admin_key.id) is None
    assert store.key_owners(cluster.id) == {key.id: guest.id}
    assert store.key_holder(admin_key.id) is None
    held = store.key_holder(key.id)
    assert held is not None and held.allowed and held.membership is Membership.MEMBER

    assert store.remove_member(cluster.id, guest.id)
    held = store.key_holder(key.id)
    assert held is not None and not held.allowed  # removed: the key stops
    store.add_member(cluster.id, guest.id, Membership.MEMBER, now=T0)
    store.set_user_disabled(guest.id, True, now=T0)
    held = store.key_holder(key.id)
    assert held is not None and held.disabled and not held.allowed
    enabled = store.set_user_disabled(guest.id, False, now=T0)
    assert enabled is not None and not enabled.disabled


def test_personal_tokens_and_sessions(store: Store, tmp_path: Path) -> None:
    user = store.sign_up("id", "u", name="U", email=None, operator=False, now=T0)
    token, secret = store.create_user_token(user.id, "laptop", now=T0)
    assert secret.startswith(f"qu_{token.prefix}_") and token.shown == f"qu_{token.prefix}"
    assert secret not in str(held_bytes(store, tmp_path))
    found = store.user_for_token(secret)
    assert found is not None and found[0].id == token.id and found[1].id == user.id
    assert store.user_for_token(secret + "x") is None
    revoked = store.revoke_user_token(user.id, token.shown, now=T0 + 1)
    assert revoked is not None and revoked.revoked_at == T0 + 1
    assert store.revoke_user_token("someone-else", token.id, now=T0) is None
    with pytest.raises(StoreError):
        store.create_user_token("nobody", "x", now=T0)

    for n in range(3):
        store.add_session(UserSession(secret_hash(f"s{n}"), user.id, f"c{n}", T0, T0))
    assert store.session(secret_hash("s0")) == UserSession(secret_hash("s0"), user.id, "c0", T0, T0)
    store.touch_session(secret_hash("s0"), now=T0 + 30)  # within a minute: not written
    store.touch_session(secret_hash("s1"), now=T0 + 90)
    assert store.session(secret_hash("s0")).last_used_at == T0  # type: ignore[union-attr]
    assert store.session(secret_hash("s1")).last_used_at == T0 + 90  # type: ignore[union-attr]
    store.end_session(secret_hash("s0"))
    assert store.session(secret_hash("s0")) is None
    assert store.end_sessions(user.id) == 2
    store.add_session(UserSession(secret_hash("s9"), user.id, "c", T0, T0))
    store.set_user_disabled(user.id, True, now=T0)  # disabling ends every session
    assert store.session(secret_hash("s9")) is None


def test_usage_per_user_counts_only_their_keys(store: Store) -> None:
    a = store.sign_up("id", "a", name="A", email=None, operator=False, now=T0)
    b = store.sign_up("id", "b", name="B", email=None, operator=False, now=T0)
    cluster, _ = store.create_cluster("home", now=T0)
    ka, _ = store.create_key(cluster.id, name="a", models=None, expires_at=None, now=T0)
    kb, _ = store.create_key(cluster.id, name="b", models=None, expires_at=None, now=T0)
    store.set_key_owner(ka.id, a.id)
    store.set_key_owner(kb.id, b.id)

    def rec(rid: str, key: str | None, model: str) -> RequestUsage:
        return RequestUsage(
            rid, int(T0 * 1000), model, "chat", "relay", "n", 200, 5.0, 1.0, 2, 3, key
        )

    store.add_usage(
        cluster.id,
        [rec("1", ka.id, "m1"), rec("2", ka.id, "m2"), rec("3", kb.id, "m1"), rec("4", None, "m1")],
    )
    assert [(g.group, g.requests) for g in store.user_usage(cluster.id, a.id, UsageBy.MODEL)] == [
        ("m1", 1),
        ("m2", 1),
    ]
    assert [g.requests for g in store.user_usage(cluster.id, b.id, UsageBy.KEY)] == [1]
    assert {r.request_id for r in store.user_usage_records(cluster.id, a.id)} == {"1", "2"}
    assert [r.request_id for r in store.user_usage_records(cluster.id, b.id)] == ["3"]


def test_pure_rules() -> None:
    assert first_role(0, False) is Role.OPERATOR and first_role(3, False) is Role.USER
    assert first_role(3, True) is Role.OPERATOR
    assert named_in(("GitHub:42",), "github", "42", None)
    assert named_in(("ops@example.com",), "id", "x", "Ops@Example.com")
    assert not named_in(("github:42",), "github", "43", "x@y")


def test_a_pending_sign_in_is_taken_once_with_its_state_within_its_time(store: Store) -> None:
    clock = [T0]
    pending = PendingSignIns(store, clock=lambda: clock[0], ttl_s=600)

    def made(provider: str = "id") -> Pending:
        return Pending(provider, "state-1", "nonce", "verifier", "http://r/cb", clock[0])

    cookie = pending.add(made())
    assert pending.take(cookie, "id", "state-2") is None  # a forged state
    assert pending.take(cookie, "id", "state-1") is None  # ... and the cookie is spent
    cookie = pending.add(made())
    assert pending.take(cookie, "gh", "state-1") is None  # started with another provider
    cookie = pending.add(made())
    clock[0] += 600
    assert pending.take(cookie, "id", "state-1") is None  # too late
    cookie = pending.add(made())
    taken = pending.take(cookie, "id", "state-1")
    assert taken == made()
    assert pending.take(cookie, "id", "state-1") is None
    assert pending.take(None, "id", "state-1") is None
    assert held_rows(store) == 0


def held_rows(store: Store) -> int:
    rows = store._rows("SELECT COUNT(*) FROM pending_signins")  # type: ignore[attr-defined]
    return int(rows[0][0])


def test_pending_sign_ins_expire_and_are_bounded(store: Store) -> None:
    clock = [T0]
    pending = PendingSignIns(store, clock=lambda: clock[0], ttl_s=600, max_rows=3)
    old = pending.add(Pending("id", "s", "n", "v", "http://r/cb", clock[0]))
    clock[0] += 601
    cookies = [
        pending.add(Pending("id", f"s{i}", "n", "v", "http://r/cb", clock[0] + i)) for i in range(4)
    ]
    assert held_rows(store) == 3  # the expired one went, then the oldest beyond three
    assert pending.take(old, "id", "s") is None
    assert pending.take(cookies[0], "id", "s0") is None
    assert [pending.take(c, "id", f"s{i}") is not None for i, c in enumerate(cookies)][1:] == [
        True
    ] * 3


def test_two_relays_taking_one_sign_in_at_once_get_it_once(store: Store, tmp_path: Path) -> None:
    pending = PendingSignIns(store, clock=lambda: T0)
    for _ in range(5):
        cookie = pending.add(Pending("id", "s", "n", "v", "http://r/cb", T0))
        got: list[object] = []

        def take(cookie: str = cookie, got: list[object] = got) -> None:
            got.append(pending.take(cookie, "id", "s"))

        threads = [threading.Thread(target=take) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(g is not None for g in got) == 1
