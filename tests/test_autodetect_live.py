"""Auto-detection against running fake engines: models come and go without a restart."""

from __future__ import annotations

import asyncio

import openai

from tests.conftest import MakeRig
from tests.fakes import FakeLMStudio, FakeOllama, LoopThread
from tests.harness import timeout


def model_ids(client: openai.OpenAI) -> set[str]:
    return {m.id for m in client.models.list()}


def wait_models(client: openai.OpenAI, bg: LoopThread, want: set[str], seconds: float) -> None:
    async def poll() -> None:
        deadline = asyncio.get_running_loop().time() + timeout(seconds)
        while asyncio.get_running_loop().time() < deadline:
            if await asyncio.to_thread(model_ids, client) == want:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"models never became {want}: {await asyncio.to_thread(model_ids, client)}"
        )

    bg.run(poll(), seconds + 5)


def test_pull_stop_and_restart_are_noticed(make_rig: MakeRig, bg: LoopThread) -> None:
    ollama = FakeOllama(models=["llama3.2:1b"])
    studio = FakeLMStudio(models=["qwen2.5-0.5b-instruct"])
    ollama_url = bg.run(ollama.start())
    studio_url = bg.run(studio.start())
    rig = make_rig(
        autodetect={
            "enabled": True,
            "interval_s": 0.1,
            "targets": [
                {"engine": "ollama", "url": ollama_url},
                {"engine": "lmstudio", "url": studio_url},
            ],
        }
    )
    rig.fakes.update(ollama=ollama, studio=studio)
    client = rig.client()
    assert model_ids(client) == {"llama3.2:1b", "qwen2.5-0.5b-instruct"}
    services = {s.name: s.engine.value for s in rig.node.ctx.services}
    assert services == {"ollama": "ollama", "lmstudio": "lmstudio"}

    ollama.add_model("qwen3:0.6b")  # `ollama pull qwen3:0.6b`
    wait_models(client, bg, {"llama3.2:1b", "qwen3:0.6b", "qwen2.5-0.5b-instruct"}, 5)
    done = client.chat.completions.create(
        model="qwen3:0.6b", messages=[{"role": "user", "content": "fresh model"}]
    )
    assert done.choices[0].message.content == "You said: fresh model"

    bg.run(studio.stop())  # LM Studio quits
    wait_models(client, bg, {"llama3.2:1b", "qwen3:0.6b"}, 5)
    bg.run(studio.start(port=studio.port))  # and comes back
    wait_models(client, bg, {"llama3.2:1b", "qwen3:0.6b", "qwen2.5-0.5b-instruct"}, 5)
