"""The `python` tool end to end: real sandboxed ipykernel, real matplotlib, real Agent loop."""

from __future__ import annotations

import asyncio

import pytest

from glm_agent.core.contracts import ToolContext
from glm_agent.core.messages import ToolCall
from glm_agent.sandbox import SandboxConfig, bwrap_available
from glm_agent.tools.python import PythonTool, clean_code

needs_bwrap = pytest.mark.skipif(not bwrap_available(), reason="bubblewrap is not installed")

CFG = SandboxConfig(memory_mb=1024, nprocs=64, timeout=3)


@pytest.fixture(scope="module")
def shared_ws(tmp_path_factory):
    return tmp_path_factory.mktemp("pyws")


@pytest.fixture(scope="module")
def tool():
    # One tool shared by several tests: each test runs in its own event loop, which the
    # tool must survive (Agent.run_sync and pytest-asyncio both change loops).
    t = PythonTool(sandbox=CFG, timeout=3, max_output_chars=2000, interrupt_grace=1.5)
    yield t
    asyncio.run(t.aclose())


def ctx(ws):
    return ToolContext(session_id="test", workspace=ws)


def test_clean_code_unwraps_fences_json_and_leaked_tokens():
    assert clean_code("```python\nprint(1)\n```<|observation|>") == "print(1)"
    assert clean_code("Here it is:\n```py\n    x = 1\n    print(x)\n```\nthen\n```\ny = 2\n```") == \
        "x = 1\nprint(x)\n\ny = 2"
    assert clean_code('{"code": "print(2)"}') == "print(2)"
    assert clean_code('print("``` inline")') == 'print("``` inline")'
    assert clean_code("<|assistant|>python\nprint(3)") == "print(3)"
    assert clean_code("```bash\nls\n```\n```python\nprint(4)\n```") == "print(4)"


def test_spec_is_the_glm_builtin():
    from glm_agent.models.dialects import get_dialect

    t = PythonTool()
    spec = t.spec()
    glm4 = get_dialect("glm4")
    assert "\n## python\n\n当你向 `python` 发送" in glm4.render([], [spec])  # GLM-4's built-in text
    assert [(c.name, c.arguments) for c in glm4.parse("python\nprint(1)", [spec])[1]] == [("python", {"code": "print(1)"})]
    assert spec.parameters["required"] == ["code"]
    assert "60 seconds" in t.description and "/mnt/data" in t.description


@needs_bwrap
async def test_state_persists_and_output_keeps_order(tool, shared_ws):
    r1 = await tool.call({"code": "x = 20"}, ctx(shared_ws))
    assert r1.content == "(no output)" and not r1.is_error
    r2 = await tool.call({"code": "```python\nimport sys\nprint('你好，世界')\nprint('warn', file=sys.stderr)\nx * 2\n```"},
                         ctx(shared_ws))
    assert r2.content == "你好，世界\nwarn\n40"
    assert r2.data["status"] == "ok"


@needs_bwrap
async def test_traceback_is_readable_and_not_a_tool_failure(tool, shared_ws):
    r = await tool.call({"code": "def f(d):\n    return d['missing']\nf({})"}, ctx(shared_ws))
    assert "\x1b[" not in r.content
    assert "KeyError: 'missing'" in r.content and "return d['missing']" in r.content
    assert not r.is_error and r.data["status"] == "error"


@needs_bwrap
async def test_matplotlib_plot_is_saved_and_attached(tmp_path):
    from PIL import Image

    # Its own tool with a roomy timeout: the first matplotlib import is slow on a busy machine.
    tool, shared_ws = PythonTool(sandbox=CFG, timeout=60), tmp_path
    try:
        await _plot_and_check(tool, shared_ws, Image)
    finally:
        await tool.aclose()


async def _plot_and_check(tool, shared_ws, Image):
    r = await tool.call({"code": "import matplotlib.pyplot as plt\nplt.plot([1, 4, 9])\nplt.title('平方')"},
                        ctx(shared_ws))
    assert "[Image saved: image-" in r.content, r.content
    assert len(r.attachments) == 1 and r.attachments[0].mime == "image/png"
    path = r.attachments[0].path
    assert path.startswith(str(shared_ws))
    with Image.open(path) as img:
        img.load()
        assert img.format == "PNG" and img.size[0] > 100
    # The file is also visible to the code, under /mnt/data.
    name = path.rsplit("/", 1)[1]
    r2 = await tool.call({"code": f"import os; print(os.path.getsize('/mnt/data/{name}') > 1000)"}, ctx(shared_ws))
    assert r2.content == "True"


@needs_bwrap
async def test_long_output_is_cut_in_the_middle_and_kept_whole_for_the_user(tool, shared_ws):
    r = await tool.call({"code": "for i in range(5000):\n    print('row', i)"}, ctx(shared_ws))
    assert len(r.content) < 2200
    assert r.content.startswith("row 0\n") and r.content.endswith("row 4999")
    assert "characters cut" in r.content
    assert r.full_output is not None and r.full_output.count("\n") == 4999


@needs_bwrap
async def test_timeout_interrupts_and_tells_the_model(tool, shared_ws):
    await tool.call({"code": "kept = 'yes'"}, ctx(shared_ws))
    r = await tool.call({"code": "import time\nwhile True:\n    time.sleep(0.1)"}, ctx(shared_ws))
    assert "timed out after 3 s" in r.content and "KeyboardInterrupt" in r.content
    assert r.data["status"] == "timeout" and not r.is_error
    r = await tool.call({"code": "print(kept)"}, ctx(shared_ws))
    assert r.content == "yes"


@needs_bwrap
async def test_crash_is_restarted_with_a_notice(tmp_path):
    t = PythonTool(sandbox=CFG, timeout=5)
    try:
        await t.call({"code": "v = 1"}, ctx(tmp_path))
        r = await t.call({"code": "import os; os._exit(1)"}, ctx(tmp_path))
        assert "died" in r.content and "variables and imports were lost" in r.content
        assert r.data["restarted"] and not r.is_error
        r = await t.call({"code": "print('v' in dir())"}, ctx(tmp_path))
        assert r.content == "False"
    finally:
        await t.aclose()


@needs_bwrap
async def test_cancelled_call_interrupts_the_code(tmp_path):
    t = PythonTool(sandbox=CFG, timeout=30)
    try:
        await t.call({"code": "v = 1"}, ctx(tmp_path))
        task = asyncio.create_task(t.call({"code": "while True: pass"}, ctx(tmp_path)))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        r = await asyncio.wait_for(t.call({"code": "print(v)"}, ctx(tmp_path)), 10)
        assert r.content == "1"
    finally:
        await t.aclose()


async def test_bad_arguments_are_tool_errors(tmp_path):
    t = PythonTool(sandbox=CFG)
    assert (await t.call({}, ctx(tmp_path))).is_error
    assert (await t.call({"code": "```python\n```"}, ctx(tmp_path))).is_error
    await t.aclose()


async def test_missing_sandbox_is_an_observation_with_the_fix(tmp_path, monkeypatch):
    from glm_agent.sandbox.bwrap import _probe

    monkeypatch.setenv("GLM_AGENT_BWRAP", str(tmp_path / "nope"))
    _probe.cache_clear()
    t = PythonTool(sandbox=CFG)
    r = await t.call({"code": "print(1)"}, ctx(tmp_path))
    assert r.is_error and "apt-get install bubblewrap" in r.content
    await t.aclose()


async def test_unsafe_mode_runs_with_limits_only(tmp_path, monkeypatch):
    monkeypatch.setenv("GLM_AGENT_BWRAP", str(tmp_path / "nope"))
    t = PythonTool(sandbox=CFG.with_(unsafe_no_sandbox=True), timeout=10)
    try:
        r = await t.call({"code": "import os, resource\nprint(os.getcwd(), resource.getrlimit(resource.RLIMIT_AS)[0])"},
                         ctx(tmp_path))
        assert r.content == f"{tmp_path.resolve()} {1024 * 2**20}"
    finally:
        await t.aclose()


@needs_bwrap
def test_agent_runs_python_then_answers(tmp_path):
    from glm_agent.agent import Agent
    from glm_agent.models.scripted import ScriptedModel

    def answer(messages):
        observation = messages[-1].content
        return f"The result is {observation.strip()}."

    model = ScriptedModel([ToolCall(name="python", arguments={"code": "print(sum(range(101)))"}), answer])
    agent = Agent(model, tools=[PythonTool(sandbox=CFG)], workspace=tmp_path)
    try:
        result = agent.run_sync("Add 0..100 with Python.")
        assert result.status == "completed" and result.output == "The result is 5050."
        tool_msgs = [m for m in result.messages if m.role == "tool"]
        assert tool_msgs and tool_msgs[0].content == "5050"
        # A second run on the same agent (same private loop) reuses the kernel.
        model.turns += [ToolCall(name="python", arguments={"code": "print('again')"}), answer]
        assert agent.run_sync("again").output == "The result is again."
    finally:
        agent.close()
