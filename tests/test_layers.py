"""The package's layering, checked so it cannot slip back (docs/architecture.md).

Each layer may import only the layers allowed for it below. Every import counts: module-level,
inside functions, and the `"glm_agent.x.y:attr"` strings that the lazy-import helper resolves.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "glm_agent"

# layer -> the layers it may import (itself always included)
ALLOWED = {
    "core": set(),
    "engine": set(),
    "sandbox": set(),
    "models": {"core", "engine"},
    "tools": {"core", "sandbox"},
    "agent": {"core"},
    "evals": {"core", "engine", "sandbox", "models", "tools", "agent"},
    "serve": {"core", "engine", "models"},
    "cli": {"core", "engine", "sandbox", "models", "tools", "agent", "evals", "serve"},
}
_TARGET = re.compile(r"glm_agent(?:\.\w+)+(?::[\w.]+)?")


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "glm_agent" else None


def _imports(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, module) for every internal import in the file, lazy targets included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            if base == "glm_agent":  # `from glm_agent import core` imports a subpackage
                found += [(node.lineno, f"glm_agent.{a.name}") for a in node.names]
            elif base.startswith("glm_agent."):
                found.append((node.lineno, base))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("glm_agent.")]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _TARGET.fullmatch(node.value):
            found.append((node.lineno, node.value.partition(":")[0]))
    return found


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), path))
    return out


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_each_layer_imports_only_the_layers_below_it(layer):
    allowed = ALLOWED[layer] | {layer}
    wrong = []
    for module, path in _modules():
        if _layer(module) != layer:
            continue
        for line, target in _imports(module, path):
            if _layer(target) not in allowed:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not wrong, f"the {layer} layer may import only {sorted(allowed)}:\n" + "\n".join(wrong)


def test_every_module_belongs_to_a_layer():
    loose = [m for m, _ in _modules() if m not in ("glm_agent", "glm_agent.__main__") and _layer(m) not in ALLOWED]
    assert not loose, f"modules outside the layers: {loose}"


def test_only_the_top_package_has_a_lazy_getattr():
    # A module-level __getattr__ is how import cycles get hidden; the top package keeps one so
    # that `import glm_agent` stays light (no torch, no tools) until a name is used.
    found = [m for m, path in _modules() if m != "glm_agent"
             and any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" or
                     isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "__getattr__" for t in n.targets)
                     for n in ast.parse(path.read_text(encoding="utf-8")).body)]
    assert not found, f"module-level __getattr__ in {found}"


@pytest.mark.parametrize("package", ["glm_agent.core", "glm_agent.core.errors", "glm_agent.engine", "glm_agent.sandbox"])
def test_the_leaves_import_alone(package):
    code = (f"import sys, {package}\n"
            "bad = sorted(m for m in sys.modules if m.startswith('glm_agent.') and m.split('.')[1] != "
            f"{package.split('.')[1]!r} and m not in ('glm_agent.core', 'glm_agent.core.lazy'))\n"
            "assert not bad, bad\n"
            f"assert {package.split('.')[1]!r} == 'core' or 'pydantic' not in sys.modules, 'pydantic was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
