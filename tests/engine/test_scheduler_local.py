"""The scheduler under a real LocalModel (SmolLM2-135M): agents share one batch, steps reuse
the prefix cache, leaving a stream frees its blocks."""

from __future__ import annotations

import asyncio

import pytest

from glm_agent import Agent
from glm_agent.core.contracts import GenerationSettings
from glm_agent.core.events import ModelDone, TextDelta
from glm_agent.core.messages import AssistantMessage, UserMessage
from glm_agent.models.local import LocalModel

QUESTIONS = ["What is the capital of France?", "Name three colours.", "What is 2 + 2?"]
SETTINGS = GenerationSettings(max_new_tokens=16)


@pytest.fixture(scope="module")
def smol() -> LocalModel:
    return LocalModel("smollm2", dtype="float32", progress=False).load()


async def _answer(model, question, tmp_path):
    agent = Agent(model, settings=SETTINGS, workspace=tmp_path)
    try:
        return (await agent.run(question)).output
    finally:
        await agent.aclose()


async def test_concurrent_agents_get_the_same_greedy_text_as_alone(smol, tmp_path):
    alone = [await _answer(smol, q, tmp_path / f"a{i}") for i, q in enumerate(QUESTIONS)]
    sizes = []
    smol.scheduler.on_step = lambda batch: sizes.append(len(batch))
    try:
        together = await asyncio.wait_for(asyncio.gather(
            *(_answer(smol, q, tmp_path / f"b{i}") for i, q in enumerate(QUESTIONS))), 300)
    finally:
        smol.scheduler.on_step = None
    assert together == alone and all(alone)
    assert max(sizes) == len(QUESTIONS)  # they really ran in one batch
    assert smol.engine.cache.num_used_blocks == 0


async def test_next_turn_computes_only_what_was_added(smol):
    turn1 = [UserMessage(content="Tell me about Paris in one sentence.")]
    events = [ev async for ev in smol.stream(turn1, [], SETTINGS)]
    first = events[-1]
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    turn2 = turn1 + [AssistantMessage(content=text), UserMessage(content="And Rome?")]
    done = [ev async for ev in smol.stream(turn2, [], SETTINGS)][-1]
    assert isinstance(done, ModelDone) and done.prompt_tokens > first.prompt_tokens
    # Every full block of turn 1's prompt is reused (block size 16).
    assert done.cached_tokens >= first.prompt_tokens - 16
    assert done.prompt_tokens - done.cached_tokens < done.prompt_tokens // 2


async def test_leaving_a_stream_early_frees_its_blocks(smol):
    agen = smol.stream([UserMessage(content="Count to one hundred.")], [], GenerationSettings(max_new_tokens=200))
    async for _ in agen:
        break
    await agen.aclose()
    assert smol.engine.cache.num_used_blocks == 0
    assert smol.scheduler.num_running == 0
