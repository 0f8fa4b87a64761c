"""What the chat UX tests run in a pseudo-terminal: a slow tool, and a chat whose model
reports its phases (loading, prompt, generating) with pauses long enough to see each one.

`python ux_helpers.py` runs that chat (the real ChatApp, in a real terminal); the tools are
also loaded by the CLI with `--tools ux_helpers:slow_sum`.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

PAUSE = 1.5  # seconds in each phase: several spinner frames


async def slow_sum(a: int, b: int) -> str:
    """Add two numbers, slowly.

    Args:
        a: The first number.
        b: The second number.
    """
    await asyncio.sleep(PAUSE)
    return f"{a} + {b} = {a + b}"


class PhasedModel:
    """Reports what a local model reports, with a pause in each phase; then a tool call to
    `slow_sum`, then the answer (ModelDone counts 30 tokens for it)."""

    name = "phased"

    def __init__(self) -> None:
        self.calls = 0

    async def stream(self, messages, tools, settings=None):
        from glm_agent.core.events import ModelDone, TextDelta, ToolCallReady
        from glm_agent.core.messages import ToolCall
        from glm_agent.core.progress import report_progress

        self.calls += 1
        if self.calls == 1:
            report_progress("loading")
            await asyncio.sleep(PAUSE)
        report_progress("prompt", 1234)
        await asyncio.sleep(PAUSE)
        report_progress("generating")
        await asyncio.sleep(PAUSE)  # text held back: a tool call being written
        if self.calls == 1:
            yield ToolCallReady(call=ToolCall(name="slow_sum", arguments={"a": 2, "b": 3}))
            yield ModelDone(finish_reason="tool_calls", prompt_tokens=1234, completion_tokens=12)
            return
        for word in "The sum is **5**, computed slowly.".split(" "):
            yield TextDelta(text=word + " ")
            await asyncio.sleep(0.05)
        yield ModelDone(prompt_tokens=1300, completion_tokens=30)

    async def aclose(self) -> None:
        return None


def main() -> None:
    from glm_agent.agent.loop import Agent
    from glm_agent.cli.chat import ChatApp
    from glm_agent.tools.function import tool

    agent = Agent(PhasedModel(), tools=[tool(slow_sum)], workspace=Path(sys.argv[1]))
    asyncio.run(ChatApp(agent).run())


if __name__ == "__main__":
    main()
