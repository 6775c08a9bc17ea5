"""``quorum-relay`` for users against a real relay process: what the dashboard's buttons do,
with a personal token (``$QUORUM_RELAY_TOKEN``) over ``--relay``, and the operator's
commands on the store. The two accounts are made in the store, as a first sign-in would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.open_store import open_store
from tests.harness import timeout
from tests.relay.harness import Relay


def cli(*args: str, token: str | None = None, data: Path | None = None) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUORUM_RELAY_")}
    if token is not None:
        env["QUORUM_RELAY_TOKEN"] = token
    done = subprocess.run(
        [sys.executable, "-m", "relay.cli", *args, *(["--data", str(data)] if data else [])],
        capture_output=True,
        text=True,
        timeout=timeout(30),
        env=env,
    )
    return done.returncode, done.stdout + done.stderr


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Relay, dict[str, str]]]:
    data = tmp_path_factory.mktemp("users-cli")
    store = open_store(data)
    people: dict[str, str] = {}
    for name in ("alice", "bob"):
        user = store.sign_up("id", name, name=name.title(), email=None, operator=False, now=1.0)
        people[name] = store.create_user_token(user.id, "cli", now=1.0)[1]
        people[name + "_id"] = user.id
    store.close()
    relay = Relay(data).start()
    try:
        yield relay, people
    finally:
        relay.kill()


def test_the_cli_does_what_the_dashboard_does_as_each_user(
    world: tuple[Relay, dict[str, str]],
) -> None:
    relay, people = world
    alice, bob = people["alice"], people["bob"]
    url = ["--relay", relay.http]

    rc, out = cli("whoami", *url, token=alice)
    assert rc == 0 and out.startswith("Alice\toperator\tid\t"), out
    rc, out = cli("cluster", "create", "home", *url, token=alice)
    assert rc == 0 and "token    qc_" in out, out
    rc, out = cli(
        "key", "create", "--cluster", "home", "--name", "laptop", "--json", *url, token=alice
    )
    assert rc == 0, out
    prefix = out.split('"prefix": "')[1][:11]

    # Bob learns nothing of it: not listed, and named, the same answer as a made-up name.
    assert cli("cluster", "list", *url, token=bob) == (0, "")
    assert cli("key", "list", "--all", *url, token=bob) == (0, "")
    for args in (
        ("key", "revoke", prefix),
        ("node", "list", "--cluster", "home"),
        ("usage", "--cluster", "home"),
        ("cluster", "members", "home"),
        ("cluster", "invite", "home"),
        ("cluster", "rotate", "home"),
    ):
        rc, out = cli(*args, *url, token=bob)
        assert rc == 1 and ("No API key" in out or "No cluster 'home'" in out), (args, out)
    # Alice's cluster is answered exactly as one that does not exist.
    assert cli("node", "list", "--cluster", "home", *url, token=bob)[1] == cli(
        "node", "list", "--cluster", "elsewhere", *url, token=bob
    )[1].replace("elsewhere", "home")

    # Invited, he is a member; removed, he is not.
    rc, out = cli("cluster", "invite", "home", *url, token=alice)
    code = out.split()[1]
    assert rc == 0 and code.startswith("qi_"), out
    rc, out = cli("cluster", "join", code, *url, token=bob)
    assert rc == 0 and "joined   home (member)" in out, out
    rc, out = cli("cluster", "join", code, *url, token=bob)
    assert rc == 1 and "unknown, used or expired" in out  # one use
    assert cli("cluster", "list", *url, token=bob)[1].startswith("home\t")
    rc, out = cli("cluster", "rotate", "home", *url, token=bob)
    assert rc == 1 and "Only the owner" in out, out  # a member uses it, the owner runs it
    rc, out = cli("cluster", "rotate", "home", "--grace", "1h", *url, token=alice)
    assert rc == 0 and "qc_" in out, out
    rc, out = cli("cluster", "members", "home", *url, token=alice)
    assert rc == 0 and "Alice\towner" in out and "Bob\tmember" in out, out
    rc, out = cli("cluster", "remove-member", "home", people["bob_id"], *url, token=alice)
    assert rc == 0, out
    assert cli("cluster", "list", *url, token=bob) == (0, "")

    # Personal tokens: made, listed (prefix only), revoked, refused.
    rc, out = cli("token", "create", "--name", "spare", *url, token=bob)
    spare = out.split()[1]
    assert rc == 0 and spare.startswith("qu_"), out
    rc, out = cli("token", "list", *url, token=bob)
    assert rc == 0 and spare not in out and spare[:11] in out, out
    assert cli("token", "revoke", spare[:11], *url, token=bob)[0] == 0
    rc, out = cli("whoami", *url, token=spare)
    assert rc == 1 and "401" in out, out

    # The operator's commands on the store: a disabled user's token stops at once.
    rc, out = cli("user", "list", data=relay.data)
    assert rc == 0 and "Bob\tuser\tactive" in out, out
    assert cli("user", "disable", people["bob_id"], data=relay.data)[0] == 0
    rc, out = cli("whoami", *url, token=bob)
    assert rc == 1 and "401" in out, out
    rc, out = cli("user", "enable", people["bob_id"], *url, token=alice)  # or over --relay
    assert rc == 0, out
    assert cli("whoami", *url, token=bob)[0] == 0
    rc, out = cli("user", "list", *url, token=bob)
    assert rc == 1 and "operator" in out, out  # not Bob's to see
    rc, out = cli("whoami", data=relay.data)
    assert rc == 1 and "--relay" in out, out
    assert alice not in relay.log.read_text() and bob not in relay.log.read_text()
