"""The engine is a standalone layer: importing any of its modules, in a fresh interpreter, loads
nothing of glm_agent outside `glm_agent.engine` (beyond what `import glm_agent` itself loads),
no pydantic, and no torch for the modules that do not compute."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[2] / "glm_agent" / "engine"
MODULES = sorted(
    "glm_agent." + ".".join(p.relative_to(ENGINE.parent).with_suffix("").parts).removesuffix(".__init__")
    for p in ENGINE.rglob("*.py")
)
# Modules that run tensors; every other engine module imports without torch.
COMPUTE = {"cuda_graphs", "decoder", "engine", "kv_cache", "quant", "sampling"}

PROBE = """
import json, sys
import glm_agent
before = set(sys.modules)
import importlib
importlib.import_module(sys.argv[1])
print(json.dumps({"before": sorted(before), "after": sorted(sys.modules)}))
"""


def test_every_engine_module_is_listed():
    assert {"glm_agent.engine", "glm_agent.engine.engine", "glm_agent.engine.blocks",
            "glm_agent.engine.loaders.gguf"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_importing_an_engine_module_loads_nothing_from_the_layers_above(module):
    out = subprocess.run([sys.executable, "-c", PROBE, module], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout)
    before, after = set(seen["before"]), set(seen["after"])
    assert not any(m.startswith("glm_agent.") and not m.startswith("glm_agent.engine") for m in before - {
        "glm_agent.core", "glm_agent.core.lazy"}), f"`import glm_agent` is no longer light: {sorted(before)}"
    outside = sorted(m for m in after - before if m.startswith("glm_agent") and not m.startswith("glm_agent.engine"))
    assert not outside, f"{module} imports {outside}"
    for layer in ("agent", "models", "tools", "sandbox", "core.contracts", "core.errors", "core.messages"):
        assert f"glm_agent.{layer}" not in after, f"{module} imports glm_agent.{layer}"
    assert not any(m == "pydantic" or m.startswith("pydantic.") for m in after), f"{module} imports pydantic"
    if module.rpartition(".")[2] not in COMPUTE:
        assert "torch" not in after, f"{module} imports torch at import time"
