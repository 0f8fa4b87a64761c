"""The bottom layer: one error root, the lazy-import helper, one event base."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import glm_agent
from glm_agent.core.errors import GlmAgentError
from glm_agent.core.events import AgentEvent, Event, ModelDone, TextDelta, ToolCallReady
from glm_agent.core.lazy import import_object, lazy_getattr
from glm_agent.core.messages import ToolCall

# Exceptions that are not errors a user meets: they steer control flow inside one module.
CONTROL_FLOW = {"UnsupportedSample", "_Cancelled", "_HTTPError", "_ToolsRejected", "UnbalancedMarks"}
# The standalone leaves keep roots of their own; the layers above translate them.
LEAF_ROOTS = {"glm_agent.engine": "EngineError", "glm_agent.sandbox": "SandboxError"}


def _all_modules():
    for info in pkgutil.walk_packages(glm_agent.__path__, "glm_agent."):
        if info.name.endswith("__main__"):
            continue
        yield importlib.import_module(info.name)


def test_every_error_has_one_root_per_layer():
    wrong = []
    for module in _all_modules():
        for name, cls in vars(module).items():
            if not (inspect.isclass(cls) and issubclass(cls, BaseException) and cls.__module__ == module.__name__):
                continue
            if name in CONTROL_FLOW or issubclass(cls, Warning):
                continue
            leaf = next((root for pkg, root in LEAF_ROOTS.items() if module.__name__.startswith(pkg + ".")), None)
            roots = {c.__name__ for c in cls.__mro__}
            if leaf is not None and leaf not in roots:
                wrong.append(f"{module.__name__}.{name} does not derive from {leaf}")
            elif leaf is None and GlmAgentError not in cls.__mro__:
                wrong.append(f"{module.__name__}.{name} does not derive from GlmAgentError")
    assert not wrong, "\n".join(wrong)


def test_import_object_reads_modules_and_attributes():
    assert import_object("glm_agent.core.errors:GlmAgentError") is GlmAgentError
    assert import_object("glm_agent.core.errors").__name__ == "glm_agent.core.errors"
    with pytest.raises(AttributeError):
        import_object("glm_agent.core.errors:Nope")


def test_lazy_getattr_imports_on_first_use_only_known_names():
    getter = lazy_getattr("demo", {"GlmAgentError": "glm_agent.core.errors"})
    assert getter("GlmAgentError") is GlmAgentError
    with pytest.raises(AttributeError, match="demo.*Other"):
        getter("Other")


def test_model_and_agent_events_share_one_base_and_serialise_alike():
    call = ToolCall(name="f", arguments={"x": 1})
    for event in (TextDelta(text="hi"), ToolCallReady(call=call), ModelDone(prompt_tokens=3)):
        assert isinstance(event, Event) and event.model_dump(mode="json")["type"] == event.type
    from pydantic import TypeAdapter

    final = TypeAdapter(AgentEvent).validate_python({"type": "final", "text": "done"})
    assert isinstance(final, Event) and final.status == "completed"
