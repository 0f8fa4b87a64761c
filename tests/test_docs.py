"""The README and docs/*.md say only true things that run.

- Every ```python block runs as written, as a script, in a fresh folder. Where it needs a chat
  model, `glm_agent.load_model(...)` gives a ScriptedModel that calls `get_weather` (when the
  agent offers it) with the city named in the user's message, then answers with the result;
  `LocalModel(...)` is the real class (its arguments are checked) answering through that same
  script; a block that talks to `127.0.0.1:8000` gets a real `glm-agent serve` app over such a
  model on a free port. Everything else (agents, tools, the sandbox, the engine on small models)
  is real.
- A block that cannot run here says why on its first line, visibly in the doc:
  `# Not run by the test suite: <reason>`. It is skipped with that reason (shown by `pytest -ra`)
  and still has to compile.
- Shell blocks: every `glm-agent ...` line names a real command and real options of it, every
  `python bench/x.py` / `bash scripts/x.sh` names a file that exists, every `glm-agent[extra]`
  is an extra of pyproject.toml.
- docs/configuration.md names every environment variable the package reads and every option
  of every `glm-agent` command; relative links point at files that exist; no internal labels.
"""

from __future__ import annotations

import ast
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

import glm_agent
import glm_agent.models.local as local_module
from glm_agent.core.messages import ToolCall, ToolMessage, UserMessage
from glm_agent.models.scripted import ScriptedModel

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP_MARK = re.compile(r"#\s*Not run by the test suite:\s*(\S.*)")
LOCAL_SERVER = "127.0.0.1:8000"


@dataclass
class Snippet:
    page: str
    line: int
    code: str

    @property
    def skip_reason(self) -> str | None:
        first = self.code.lstrip().splitlines()[0] if self.code.strip() else ""
        match = SKIP_MARK.fullmatch(first.strip())
        return match.group(1) if match else None


def _snippets() -> list[Snippet]:
    found = []
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            fence = re.fullmatch(r"(\s*)```\s*(\w*)\s*", lines[i])
            if not fence:
                i += 1
                continue
            indent, lang = fence.groups()
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), len(lines))
            if lang in ("python", "py", "python3"):
                body = [line[len(indent):] if line.startswith(indent) else line for line in lines[i + 1:end]]
                found.append(Snippet(page.relative_to(ROOT).as_posix(), i + 1, "\n".join(body) + "\n"))
            i = end + 1
    return found


SNIPPETS = _snippets()


class DocModel(ScriptedModel):
    """Calls `get_weather` when offered, with the city after "in" in the user's message; answers
    a tool result with that result, anything else with a fixed sentence."""

    def __init__(self, name: str = "scripted"):
        super().__init__([self._turn] * 64, name=name)

    def _turn(self, messages):
        tools = [spec.name for spec in self.calls[-1][1]]
        last = messages[-1]
        if isinstance(last, ToolMessage):
            return f"Here it is: {last.content}"
        if isinstance(last, UserMessage) and "get_weather" in tools:
            city = re.search(r"\bin (\w+)", last.content)
            return ToolCall(name="get_weather", arguments={"city": city.group(1) if city else "Beijing"})
        return "A scripted answer."


def _doc_local_model():
    class DocLocalModel(local_module.LocalModel):
        """The real LocalModel (its constructor checks the arguments; it loads nothing), with
        the scripted turns of DocModel instead of weights."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._script = DocModel(self.name)

        def stream(self, messages, tools, settings=None):
            return self._script.stream(messages, tools, settings)

    return DocLocalModel


def _served_name(code: str) -> str:
    # The model id the snippet asks the server for: OpenAIModel("id", ...) or model="id".
    match = re.search(r"""(?:OpenAIModel\(|model=)\s*["']([^"']+)["']""", code)
    return match.group(1) if match else "scripted"


def test_the_pages_have_python_examples():
    pages = {s.page for s in SNIPPETS}
    assert "README.md" in pages and len(pages) >= 5, pages


def test_skipped_examples_give_a_reason_and_compile():
    for snippet in SNIPPETS:
        if "not run" in snippet.code.lower() and snippet.skip_reason is None:
            # A marker that does not parse would run the block; say so instead of guessing.
            first = snippet.code.strip().splitlines()[0]
            assert not first.lower().startswith("# not run"), f"{snippet.page}:{snippet.line}: malformed marker"
        if snippet.skip_reason is not None:
            assert len(snippet.skip_reason) > 10, f"{snippet.page}:{snippet.line}: say why it cannot run"
        compile(snippet.code, f"{snippet.page}:{snippet.line}", "exec")


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[f"{s.page}:{s.line}" for s in SNIPPETS])
def test_example_runs(snippet: Snippet, tmp_path, monkeypatch, capsys):
    if snippet.skip_reason:
        pytest.skip(f"{snippet.page}:{snippet.line}: {snippet.skip_reason}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GLM_AGENT_HOME", str(tmp_path / "home"))
    models: list[DocModel] = []

    def load_model(spec=None, **options):
        models.append(DocModel(spec or "embedded"))
        return models[-1]

    monkeypatch.setattr(glm_agent, "load_model", load_model)
    local_model = _doc_local_model()
    monkeypatch.setattr(local_module, "LocalModel", local_model)
    monkeypatch.setattr(glm_agent, "LocalModel", local_model, raising=False)
    code = snippet.code
    with _local_server(code) as url:
        if url:
            code = code.replace(LOCAL_SERVER, url)
        exec(compile(code, f"{snippet.page}:{snippet.line}", "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out
    if "def get_weather" in code and (models or url):
        # The scripted model called the tool and the answer carries its result to the page.
        assert "Beijing" in out and "22" in out, out


class _local_server:
    """A real OpenAI-compatible server over a DocModel while the block runs, if it needs one."""

    def __init__(self, code: str):
        self.needed = LOCAL_SERVER in code
        self.name = _served_name(code)
        self.context = None

    def __enter__(self) -> str | None:
        if not self.needed:
            return None
        from glm_agent.serve import create_app, serve_in_thread

        self.context = serve_in_thread(create_app(DocModel(self.name), self.name))
        return self.context.__enter__().removeprefix("http://").removesuffix("/v1")

    def __exit__(self, *exc):
        if self.context is not None:
            self.context.__exit__(*exc)


# ---- the settings page ------------------------------------------------------------------------


def _environment_variables() -> set[str]:
    """Every variable name the package reads: os.environ.get / os.environ[...] / os.getenv /
    typer's envvar=, and module constants named *_ENV / *_ENVS whose values are read that way."""
    names: set[str] = set()
    for path in (ROOT / "glm_agent").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = ast.unparse(node.func)
                if func in ("os.environ.get", "os.getenv", "env.get") and node.args:
                    names |= _string_values(node.args[0])
                for keyword in node.keywords:
                    if keyword.arg == "envvar":
                        names |= _string_values(keyword.value)
            elif isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
                names |= _string_values(node.slice)
            elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and re.fullmatch(r"[A-Z_]*ENVS?", t.id) for t in node.targets
            ):
                names |= _string_values(node.value)
    return {n for n in names if re.fullmatch(r"[A-Z][A-Z0-9_]+", n)}


def _string_values(node: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def test_every_environment_variable_is_documented():
    names = _environment_variables()
    # The scan itself must see the variables we know are read.
    assert {"GLM_AGENT_HOME", "GLM_AGENT_CACHE", "GLM_AGENT_API_KEY", "ZHIPUAI_API_KEY"} <= names
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    missing = sorted(n for n in names if f"`{n}`" not in page)
    assert not missing, f"docs/configuration.md does not list {missing}"


def _cli_options() -> dict[str, list[str]]:
    """`"model info"` -> ["--quant", "--device"] for every command; "" holds the root options.
    typer ships its own copy of click, so commands are told apart by shape, not by class."""
    import typer

    from glm_agent.cli.app import app

    options: dict[str, list[str]] = {}

    def walk(command, path):
        flags = [opt for p in command.params if p.param_type_name == "option" and p.name != "help" for opt in p.opts]
        options[" ".join(path)] = flags
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return options


def test_every_cli_option_is_documented():
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    options = _cli_options()
    assert "--model" in options["chat"] and "--port" in options["serve"] and "eval run" in options
    missing = []
    for command, flags in options.items():
        if command and f"glm-agent {command}" not in page:
            missing.append(f"glm-agent {command}")
        missing += [f"glm-agent {command} {flag}" for flag in flags if flag.startswith("--") and f"`{flag}`" not in page]
    assert not missing, f"docs/configuration.md does not list {missing}"


# ---- shell lines ---------------------------------------------------------------------------------


def _shell_lines() -> list[tuple[str, str]]:
    """(page:line, command) for every line of a ```bash / ```sh / ```console block."""
    found = []
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        inside = False
        pending = ""
        for number, line in enumerate(lines, 1):
            fence = re.fullmatch(r"\s*```\s*(\w*)\s*", line)
            if fence:
                inside = not inside and fence.group(1) in ("bash", "sh", "shell", "console")
                continue
            if inside and line.strip() and not line.lstrip().startswith("#"):
                command = pending + line.split(" #")[0].strip().removeprefix("$ ")
                if command.endswith("\\"):  # continued on the next line
                    pending = command[:-1]
                    continue
                pending = ""
                found.append((f"{page.relative_to(ROOT).as_posix()}:{number}", command))
    return found


SHELL = _shell_lines()


def _glm_agent_invocations(command: str) -> list[list[str]]:
    """The argument lists of every `glm-agent` run in a shell line (after `&&`, `;`, `|`, env
    assignments, `.venv/bin/`)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes: a plain split is good enough to find options
        tokens = command.split()
    parts: list[list[str]] = [[]]
    for token in tokens:
        if token in ("&&", "||", ";", "|", "&"):
            parts.append([])
        else:
            parts[-1].append(token)
    runs = []
    for words in parts:
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
            words = words[1:]
        if words and re.fullmatch(r"(\S*/)?glm-agent", words[0]):
            runs.append(words[1:])
        elif words[:3] == ["python", "-m", "glm_agent"]:
            runs.append(words[3:])
    return runs


def test_the_pages_show_shell_commands():
    assert sum(1 for _, command in SHELL if _glm_agent_invocations(command)) >= 20


@pytest.mark.parametrize("where,command", SHELL, ids=[w for w, _ in SHELL])
def test_shell_line_names_real_commands_options_and_files(where, command):
    options = _cli_options()
    for args in _glm_agent_invocations(command):
        path = []
        for word in args:
            if word.startswith("-") or " ".join([*path, word]) not in options:
                break
            path.append(word)
        name = " ".join(path)
        groups = {key.split()[0] for key in options if " " in key}
        assert not (path and path[0] in groups and name == path[0]), f"{where}: `glm-agent {name}` needs a subcommand"
        known = set(options[name]) | set(options[""]) | {"--help"}
        for word in args[len(path):]:
            flag = word.split("=")[0]
            if re.fullmatch(r"--?[a-zA-Z][\w-]*", flag):
                assert flag in known, f"{where}: `glm-agent {name}` has no option {flag}: {command}"
    for script in re.findall(r"\b(?:python3?|bash)\s+((?:bench|scripts|tests)/[\w./-]+)", command):
        assert (ROOT / script).exists(), f"{where}: {script} does not exist"
    extras = set(_extras())
    for wanted in re.findall(r"glm-agent\[([\w,-]+)\]", command):
        unknown = set(wanted.split(",")) - extras
        assert not unknown, f"{where}: no extra {sorted(unknown)} in pyproject.toml"


def _extras() -> list[str]:
    # tomllib is 3.11+; the section's keys are plain `name = [` lines.
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return re.findall(r"(?m)^([\w-]+)\s*=", section)


# ---- links and labels ---------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_relative_links_resolve(page: Path):
    # Links in prose only: code blocks and `inline code` may show link syntax as an example.
    text = re.sub(r"```.*?```|`[^`\n]*`", "", page.read_text(encoding="utf-8"), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        assert (page.parent / target.split("#")[0]).exists(), f"{page.name}: broken link {target}"


INTERNAL = re.compile(
    r"\(issue \d+\)|\bissue \d+\b|the session that built|no GPU was lent|research §|\b[EQ]\d?'s\b|\bTODO\b|\bFIXME\b",
    re.I,
)


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_no_internal_labels(page: Path):
    hits = [line for line in page.read_text(encoding="utf-8").splitlines() if INTERNAL.search(line)]
    assert not hits, f"{page.name}: {hits}"
