"""Pausing sharing shows in status and withdraws this node's models from the cluster."""

from __future__ import annotations

import json
import urllib.request

from tests.conftest import MakeRig
from tests.fakes import FakeOllama
from tests.harness import timeout


def test_pause_shows_in_status_and_offers_nothing(make_rig: MakeRig) -> None:
    rig = make_rig({"ollama": (FakeOllama(), {})})

    def status() -> dict[str, object]:
        with urllib.request.urlopen(rig.node.url + "/quorum/v1/status", timeout=timeout(5)) as r:
            data: dict[str, object] = json.load(r)
            return data

    assert status()["sharing"] == {"paused": False}
    assert [m.id for m in rig.node._model_infos()] == ["llama3.2:1b"]
    rig.bg.run(rig.node.pause_sharing())
    assert status()["sharing"] == {"paused": True}
    assert rig.node._model_infos() == []  # the relay is told: nothing offered while paused
    # This machine keeps using the node.
    done = rig.client().chat.completions.create(
        model="llama3.2:1b", messages=[{"role": "user", "content": "still mine"}]
    )
    assert done.choices[0].message.content == "You said: still mine"
    rig.bg.run(rig.node.resume_sharing())
    assert status()["sharing"] == {"paused": False}
