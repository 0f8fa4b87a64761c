"""`os`: shell tasks in a bubblewrap sandbox, in the AgentBench OS-interaction JSON format.

AgentBench runs each task in a fresh Ubuntu container as root. We run it in the project's
sandbox (read-only host root, no network) where `/root` is the sample's workspace and `/home`
a private writable folder, so the tasks' usual paths work and nothing touches the host.

Task item: `description`; `create.init` (a script: string, `{code}` or `{file}`, or a list);
optional `start` (a background process for the episode); `evaluation.match` (string, or
`{answer|regex, strip}`) or `evaluation.check` (a list whose `null` entries mean "run the
`example` solution in a fresh identical environment and append its output", then checker
scripts) with `evaluation.example`. The agent acts with the `shell` tool and answers in its
final message (AgentBench's `answer(...)` action): `Answer: <text>`.

Checkers are ours: integer-match, string-match, size-match, containing, in (by their
AgentBench file names), inline `{code}` checks run in the agent's environment after the
episode (exit 0 = pass), and custom script files when the task folder ships them; a task whose
check or init file is not shipped is reported `unsupported_judge`.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

from glm_agent.core.contracts import Tool, ToolContext
from glm_agent.core.messages import ToolCall, ToolResult
from glm_agent.evals.task import (
    EnvironmentSetupError,
    Judgement,
    Sample,
    SampleEnv,
    Suite,
    TaskFileError,
    UnsupportedSample,
    final_text,
    json_item_lines,
    read_json,
)

__all__ = [
    "OSSuite",
    "OSEnvironment",
    "SandboxShellTool",
    "load_agentbench_os",
    "parse_answer",
    "MATCHERS",
    "integer_match",
    "string_match",
    "size_match",
    "containing_match",
    "in_match",
]

OUTPUT_LIMIT = 800  # AgentBench truncates command output past 800 characters
SYSTEM = (
    "You are an assistant operating a Linux (Debian) machine through the `shell` tool, which runs "
    "a bash script as root and returns its output. Your working directory is /root. Do not guess: "
    "always call the `shell` tool first to inspect or change the machine, one script per turn, and "
    "read its output. There is no network. When you have the answer, reply without calling "
    "a tool, with a final line `Answer: <answer>` (only the value, e.g. `Answer: 3`). If the task "
    "asks you to change something rather than report a value, make the change and reply "
    "`Answer: done`."
)


# -- matchers (AgentBench checker semantics, our code) ----------------------------------------
def _int_of(text: str) -> int | None:
    m = re.search(r"-?\d+", text.replace(",", ""))
    return int(m.group(0)) if m else None


def integer_match(answer: str, expected: str) -> bool:
    a, b = _int_of(answer), _int_of(expected)
    return a is not None and a == b


def string_match(answer: str, expected: str) -> bool:
    return answer.strip() == expected.strip()


_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def _size_of(text: str) -> float | None:
    m = re.search(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\b", text.strip(), re.I)
    if not m:
        return None
    return float(m.group(1)) * _UNITS[m.group(2).upper()]


def size_match(answer: str, expected: str) -> bool:
    """Human-readable sizes: `8.0K`, `8K`, `8192` agree; 5% slack for du's rounding."""
    a, b = _size_of(answer), _size_of(expected)
    if a is None or b is None:
        return False
    return abs(a - b) <= 0.05 * max(a, b, 1)


def containing_match(answer: str, expected: str) -> bool:
    return expected.strip() in answer


def in_match(answer: str, expected: str) -> bool:
    return answer.strip() in expected


MATCHERS = {
    "integer-match": integer_match,
    "string-match": string_match,
    "size-match": size_match,
    "containing": containing_match,
    "in": in_match,
}


def parse_answer(text: str) -> str:
    """The agent's answer: `answer(...)`, `Answer: ...`, else the last non-empty line."""
    text = (text or "").strip()
    calls = re.findall(r"answer\((.*?)\)\s*$", text, re.I | re.M | re.S)
    if calls:
        return calls[-1].strip().strip("\"'")
    lines = re.findall(r"^\s*(?:final\s+)?answer\s*[:：]\s*(.+?)\s*$", text, re.I | re.M)
    if lines:
        return lines[-1].strip().strip("`").strip()
    rest = [line for line in text.splitlines() if line.strip()]
    return rest[-1].strip().strip("`") if rest else ""


# -- loading -----------------------------------------------------------------------------------
def _script(value: Any, where: str) -> dict[str, str] | None:
    """Normalise a script entry to {"code": ...} / {"file": ...} (None when absent)."""
    if value is None:
        return None
    if isinstance(value, str):
        return {"code": value}
    if isinstance(value, dict) and ("code" in value or "file" in value):
        out = {k: str(value[k]) for k in ("code", "file", "language") if k in value}
        return out
    raise ValueError(f"{where} must be a script string, {{code}} or {{file}}")


def _item_to_sample(item: Any, path: Path, line: int | None, index: int, prefix: str) -> Sample:
    if not isinstance(item, dict):
        raise TaskFileError(path, line, f"task {index} must be a JSON object")
    if not isinstance(item.get("description"), str):
        raise TaskFileError(path, line, f"task {index} has no 'description' string")
    try:
        create = item.get("create") if isinstance(item.get("create"), dict) else {}
        init_raw = create.get("init")
        inits = [_script(x, "create.init") for x in (init_raw if isinstance(init_raw, list) else [init_raw])]
        start = _script(item.get("start"), "start")
        evaluation = item.get("evaluation")
        if not isinstance(evaluation, dict):
            raise ValueError("missing 'evaluation'")
        example = _script(evaluation.get("example", item.get("example")), "evaluation.example")
        if "match" in evaluation:
            match = evaluation["match"]
            if isinstance(match, str):
                match = {"answer": match, "strip": True}
            if not isinstance(match, dict) or not ("answer" in match or "regex" in match):
                raise ValueError("evaluation.match must be a string or {answer|regex, strip}")
            judge: dict[str, Any] = {"match": match}
        elif "check" in evaluation:
            check = evaluation["check"]
            entries = check if isinstance(check, list) else [check]
            judge = {"check": [None if e is None else _script(e, "evaluation.check") for e in entries]}
            if any(e is None for e in judge["check"]) and example is None:
                raise ValueError("evaluation.check uses the example (null) but there is no example")
        else:
            raise ValueError("evaluation needs 'match' or 'check'")
    except ValueError as exc:
        raise TaskFileError(path, line, f"task {index}: {exc}") from None
    labels = item.get("labels") or []
    return Sample(
        id=str(item.get("id") or f"{prefix}-{index}"),
        prompt=item["description"].strip(),
        category=str(labels[0]) if labels else "os",
        gold={
            "init": [x for x in inits if x],
            "start": start,
            "example": example,
            "judge": judge,
            "base": str(path.parent),
        },
        source=f"{path}:{line}" if line else str(path),
    )


def load_agentbench_os(path: str | Path, *, prefix: str | None = None) -> list[Sample]:
    """Tasks from an AgentBench OS JSON file (a list, or one task), or a folder of them."""
    path = Path(path)
    if path.is_dir():
        samples: list[Sample] = []
        for file in sorted(path.rglob("*.json")):
            rel = file.relative_to(path).with_suffix("").as_posix().replace("/", "-")
            samples += load_agentbench_os(file, prefix=f"{prefix or path.name}-{rel}")
        if not samples:
            raise TaskFileError(path, None, "no *.json task files in this folder")
        return samples
    data = read_json(path)
    items = data if isinstance(data, list) else [data]
    lines = json_item_lines(path, len(items)) if isinstance(data, list) else [1]
    prefix = prefix or path.stem
    return [_item_to_sample(item, path, lines[i], i, prefix) for i, item in enumerate(items)]


# -- the environment ---------------------------------------------------------------------------
class OSEnvironment:
    """One sample's machine: `/root` = `root_dir` (also the workspace), `/home` = `home_dir`.

    Every script runs in a fresh bubblewrap sandbox over the same folders, so state lives in
    the files (as it would in a container's disk); `start` keeps one background process alive.
    """

    def __init__(self, root_dir: Path, home_dir: Path, *, timeout: float = 30.0,
                 workspace_quota_mb: int | None = 2048, workspace_max_files: int | None = 100_000):
        self.root_dir = Path(root_dir)
        self.home_dir = Path(home_dir)
        self.timeout = timeout
        # The quota of /root (the workspace), as for the shell tool (SandboxConfig's defaults).
        self.workspace_quota_mb = workspace_quota_mb
        self.workspace_max_files = workspace_max_files
        self.root_dir.mkdir(parents=True, exist_ok=True)
        self.home_dir.mkdir(parents=True, exist_ok=True)
        self._background: list[subprocess.Popen] = []

    def config(self) -> Any:
        from glm_agent.sandbox.config import SandboxConfig

        return SandboxConfig(
            rw_binds=(f"{self.root_dir}:/root", f"{self.home_dir}:/home"),
            timeout=self.timeout,
            memory_mb=2048,
            nprocs=128,
            env={"HOME": "/root", "USER": "root"},
            workspace_quota_mb=self.workspace_quota_mb,
            workspace_max_files=self.workspace_max_files,
        )

    def _sandbox(self) -> Any:
        from glm_agent.sandbox.bwrap import Sandbox

        return Sandbox(self.config(), self.root_dir)

    def _argv(self, script: str, args: list[str] | None = None, language: str = "bash") -> tuple[list, dict, str, Any]:
        sandbox = self._sandbox()
        if language == "python":
            inner = ["python3", "-c", script, *(args or [])]
        else:
            inner = ["bash", "-c", "cd /root\n" + script, "script", *(args or [])]
        argv, env, cwd = sandbox.command(inner, env={"HOME": "/root", "USER": "root"})
        return argv, env, cwd, sandbox

    async def run(self, script: str, *, args: list[str] | None = None, language: str = "bash",
                  timeout: float | None = None) -> tuple[int, str]:
        """(exit status, stdout+stderr) of `script`; 124 and a note on timeout."""
        argv, env, cwd, sandbox = self._argv(script, args, language)
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout or self.timeout)
            return proc.returncode or 0, out.decode("utf-8", "replace")
        except asyncio.TimeoutError:
            _killpg(proc.pid)
            await proc.wait()
            return 124, f"(timed out after {timeout or self.timeout:g} s)"
        finally:
            sandbox.kill_all()
            sandbox.close()

    def start_background(self, script: str) -> None:
        # `wait` keeps the sandbox's PID namespace (and so the `&` children) alive.
        argv, env, cwd, sandbox = self._argv(script + "\nwait")
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        proc._glm_sandbox = sandbox  # type: ignore[attr-defined]
        self._background.append(proc)

    def stop(self) -> None:
        for proc in self._background:
            _killpg(proc.pid)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            sandbox = getattr(proc, "_glm_sandbox", None)
            if sandbox is not None:
                sandbox.kill_all()
                sandbox.close()
        self._background.clear()


def _killpg(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class SandboxShellTool(Tool):
    """The suite's own minimal `shell` tool over `OSEnvironment` (used when the project's
    `ShellTool` is not wanted): every command runs in a fresh sandbox starting in /root;
    files persist, shell state (cd, variables) does not. It runs through `run_command`, as
    `ShellTool` does, so the workspace quota watcher stops a command that fills /root."""

    name = "shell"
    description = (
        "Run a bash script as root on the task machine and return its output (stdout and stderr, "
        "truncated past 800 characters). Each call starts in /root; files persist between calls."
    )
    parameters = {
        "type": "object",
        "properties": {"command": {"type": "string", "description": "The bash script to run."}},
        "required": ["command"],
    }
    timeout = 60.0

    def __init__(self, env: OSEnvironment):
        self.env = env

    async def call(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        from glm_agent.sandbox.errors import SandboxError
        from glm_agent.sandbox.shell import run_command

        command = str(arguments.get("command") or arguments.get("script") or "").strip()
        if not command:
            return ToolResult(content="Error: empty command. Pass a bash script as `command`.", is_error=True)
        try:
            res = await run_command("cd /root\n" + command, self.env.root_dir, self.env.config(),
                                    timeout=self.env.timeout)
        except SandboxError as exc:
            return ToolResult(content=f"Error: {exc}", is_error=True)
        data = {"exit_code": res.exit_code, "timed_out": res.timed_out, "quota_exceeded": res.quota_exceeded}
        out = full = res.output
        if len(out) > OUTPUT_LIMIT:
            out = out[: OUTPUT_LIMIT - 20] + "\n[truncated because the output is too long]"
        notice = f"\n{res.notice}" if res.notice else ""
        if res.timed_out:
            text = (out + "\n" if out.strip() else "") + f"(timed out after {self.env.timeout:g} s)"
            return ToolResult(content=text + notice, is_error=True, full_output=full, data=data)
        text = out if out.strip() else "(no output)"
        if res.exit_code:
            text += f"\n(exit status {res.exit_code})"
        return ToolResult(content=text + notice, full_output=full, data=data)


def _project_shell_tool(env: OSEnvironment) -> Tool:
    """The project's `ShellTool` configured onto this environment."""
    from glm_agent.tools.shell import ShellTool

    # Same sandbox rules as the environment's own scripts: /root = the workspace, private /home.
    return ShellTool(env.config(), timeout=env.timeout, max_output_chars=OUTPUT_LIMIT, workspace=env.root_dir)


# -- the suite ---------------------------------------------------------------------------------
class OSSuite(Suite):
    name = "os"
    description = "shell tasks in a sandbox (AgentBench OS-interaction format)"
    max_steps = 8  # AgentBench round_limit
    sample_timeout = 300.0

    def load(self) -> list[Sample]:
        if self.data:
            return load_agentbench_os(self.data)
        with resources.as_file(resources.files("glm_agent.evals") / "data" / "os.json") as path:
            return load_agentbench_os(path, prefix="os")

    def _resolve(self, sample: Sample, entry: dict[str, str], what: str) -> tuple[str, str]:
        """(code, language) of a script entry; UnsupportedSample when its file is not shipped."""
        language = entry.get("language", "bash")
        if "code" in entry:
            return entry["code"], language
        name = entry["file"]
        base = Path(sample.gold["base"])
        roots = [Path(p) for p in self.options.get("scripts_dirs", [])] + [base, base / "scripts", base.parent / "scripts"]
        for root in roots:
            candidate = root / name
            if candidate.is_file():
                if name.endswith(".py"):
                    language = "python"
                return candidate.read_text(encoding="utf-8"), language
        raise UnsupportedSample(
            f"{what} script {name!r} is not shipped with the task file (AgentBench keeps it as code in "
            "its repository); pass its folder with scripts_dirs to run this task"
        )

    def _check_plan(self, sample: Sample) -> list[Any]:
        """Each check entry as None (example), ("matcher", fn) or ("script", code, language)."""
        plan: list[Any] = []
        for entry in sample.gold["judge"].get("check", []):
            if entry is None:
                plan.append(None)
                continue
            stem = Path(entry.get("file", "")).stem
            if "file" in entry and stem in MATCHERS:
                plan.append(("matcher", stem))
            else:
                code, language = self._resolve(sample, entry, "check")
                plan.append(("script", code, language))
        return plan

    async def _build(self, sample: Sample, root: Path, home: Path) -> OSEnvironment:
        env = OSEnvironment(root, home)
        for entry in sample.gold["init"]:
            code, language = self._resolve(sample, entry, "init")
            status, out = await env.run(code, language=language, timeout=60)
            if status != 0:
                raise EnvironmentSetupError(f"the task's init script failed here (exit {status}): {out.strip()[:300]}")
        return env

    async def _launch(self, sample: Sample, workspace: Path, home: Path):
        """The environment as the agent finds it: built, with the task's background program started."""
        env = await self._build(sample, workspace, home)
        try:
            if sample.gold.get("start"):
                code, _ = self._resolve(sample, sample.gold["start"], "start")
                env.start_background(code)
                await asyncio.sleep(0.5)  # let it produce its first output
        except BaseException:
            env.stop()
            raise
        return env

    async def setup(self, sample: Sample, workspace: Path) -> SampleEnv:
        if "check" in sample.gold["judge"]:
            self._check_plan(sample)  # unsupported checks fail fast, before the model runs
        if sample.gold.get("example"):
            self._resolve(sample, sample.gold["example"], "example")
        home = workspace.parent / f"{workspace.name}.home"
        shutil.rmtree(home, ignore_errors=True)
        try:
            env = await self._launch(sample, workspace, home)
        except BaseException:
            shutil.rmtree(home, ignore_errors=True)
            raise
        cleanups = [env.stop, lambda: shutil.rmtree(home, ignore_errors=True)]
        tool = _project_shell_tool(env) if self.options.get("project_shell", True) else None
        return SampleEnv(
            tools=[tool or SandboxShellTool(env)],
            system=SYSTEM,
            prompt=sample.prompt,
            max_steps=self.max_steps,
            state={"env": env, "workspace": str(workspace)},
            cleanups=cleanups,
        )

    async def judge(self, sample: Sample, env: SampleEnv, result: Any) -> Judgement:
        answer = parse_answer(final_text(result))
        rule = sample.gold["judge"]
        if "match" in rule:
            match = rule["match"]
            got = answer.strip() if match.get("strip", True) else answer
            if "regex" in match:
                ok = re.search(match["regex"], got) is not None
                return Judgement(float(ok), detail=f"answer {got!r} vs /{match['regex']}/", info={"answer": got})
            ok = got == str(match["answer"]).strip()
            return Judgement(float(ok), detail=f"answer {got!r} vs {match['answer']!r}", info={"answer": got})
        params = [answer]
        workspace = Path(env.state["workspace"])
        for step in self._check_plan(sample):
            if step is None:
                params.append(await self._example_output(sample, workspace))
            elif step[0] == "matcher":
                ok = MATCHERS[step[1]](params[0], params[-1])
                if not ok:
                    return Judgement(0.0, detail=f"{step[1]}: answer {params[0]!r} vs expected {params[-1]!r}",
                                     info={"answer": answer, "expected": params[-1]})
            else:
                status, out = await env.state["env"].run(step[1], args=params, language=step[2])
                if status != 0:
                    return Judgement(0.0, detail=f"check script failed (exit {status}): {out.strip()[:200]}",
                                     info={"answer": answer})
                params.append(out.strip())
        return Judgement(1.0, detail=f"answer {answer!r} passed the checks", info={"answer": answer,
                                                                                  "expected": params[1:]})

    async def _example_output(self, sample: Sample, workspace: Path) -> str:
        """Run the example solution in a fresh environment built like the agent's."""
        fresh = workspace.parent / f"{workspace.name}.gold"
        fresh_home = workspace.parent / f"{workspace.name}.gold.home"
        for p in (fresh, fresh_home):
            shutil.rmtree(p, ignore_errors=True)
        try:
            env = await self._launch(sample, fresh, fresh_home)
            try:
                code, language = self._resolve(sample, sample.gold["example"], "example")
                status, out = await env.run(code, language=language)
            finally:
                env.stop()
            return out.strip()
        finally:
            for p in (fresh, fresh_home):
                shutil.rmtree(p, ignore_errors=True)

    def oracle(self, sample: Sample) -> list[Any]:
        gold = sample.gold
        example = gold.get("example")
        rule = gold["judge"]
        if example is None or "file" in example:
            if "match" in rule and "answer" in rule["match"]:
                return [f"Answer: {rule['match']['answer']}"]
            return ["Answer: done"]

        def answer(messages: list[Any]) -> str:
            result = messages[-1]
            text = getattr(result, "content", "")
            text = re.sub(r"\n?(\(exit status \d+\)|\[exit code: \d+\])$", "", text).strip()
            if "match" in rule and "answer" in rule["match"]:
                return f"Answer: {rule['match']['answer']}"
            if "check" in rule and None not in rule["check"]:
                return "Answer: done"  # an action task: the checks inspect the machine
            return f"Answer: {text}"

        return [ToolCall(name="shell", arguments={"command": example["code"]}), answer]

