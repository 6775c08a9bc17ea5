"""The OpenAI Agents SDK with its default model (the Responses API, under the SDK's default
model name) pointed at a node: a run that calls a function tool and answers with its result,
whole and streamed, through a node whose engine serves only chat completions."""

from __future__ import annotations

import json
from typing import Any

import openai
from agents import Agent, RunConfig, Runner, function_tool
from agents.models import get_default_model
from agents.models.openai_provider import OpenAIProvider

from tests.conftest import MakeRig
from tests.fakes import FakeVLLM
from tests.harness import timeout

MODEL = "Qwen/Qwen3-0.6B"


@function_tool
def lookup(query: str) -> str:
    """Look something up.

    Args:
        query: What to look up.
    """
    return f"sunny in {query.split()[-1]}"


def agent_and_config(base_url: str) -> tuple[Agent[Any], RunConfig, openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(
        base_url=base_url, api_key="unused", max_retries=0, timeout=timeout(30)
    )
    agent: Agent[Any] = Agent(name="Helper", instructions="Use the tool.", tools=[lookup])
    config = RunConfig(model_provider=OpenAIProvider(openai_client=client), tracing_disabled=True)
    return agent, config, client


async def test_agent_runs_a_tool_through_the_node(make_rig: MakeRig) -> None:
    default = get_default_model()
    rig = make_rig({"vllm": (FakeVLLM(models=[MODEL]), {})}, aliases={default: MODEL})
    agent, config, client = agent_and_config(rig.base_url)
    async with client:
        result = await Runner.run(agent, "weather in Paris", run_config=config)
        assert result.final_output == "The tool said: sunny in Paris"
        streamed = Runner.run_streamed(agent, "weather in Oslo", run_config=config)
        kinds = [event.type async for event in streamed.stream_events()]
        assert streamed.final_output == "The tool said: sunny in Oslo"
        assert "raw_response_event" in kinds and "run_item_stream_event" in kinds
    chats = [r.json() for r in rig.fakes["vllm"].requests_to("/v1/chat/completions")]
    assert len(chats) == 4  # a call and an answer, twice
    assert all(c["model"] == MODEL for c in chats)
    first, second = chats[0], chats[1]
    assert first["messages"][0] == {"role": "system", "content": "Use the tool."}
    assert first["tools"][0]["function"]["name"] == "lookup"
    (call,) = second["messages"][-2]["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == {"query": "weather in Paris"}
    assert second["messages"][-1]["content"] == "sunny in Paris"
    assert chats[3]["stream"] is True
