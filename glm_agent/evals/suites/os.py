"""`os`: shell tasks in a bubblewrap sandbox, in the AgentBench OS-interaction JSON format.

AgentBench runs each task in a fresh Ubuntu container as root. We run it in one sandbox per
task (`OSEnvironment`): a writable copy-on-write view of the host's root that is thrown away at
the end, `/root` the sample's workspace and working directory, no network; so the tasks'
usual paths work (`/usr/local/bin`, `useradd` ...) and nothing touches the host. A task whose
scripts need the network is `unsupported`.

Task item: `description`; `create.init` (a script: string, `{code}` or `{file}`, or a list);
optional `start` (a background process for the episode); `evaluation.match` (string, or
`{answer|regex, strip}`) or `evaluation.check` (a list whose `null` entries mean "run the
`example` solution in the task's machine and append its stdout", then checker
scripts) with `evaluation.example`. The agent acts with the `shell` tool and answers in its
final message (AgentBench's `answer(...)` action): `Answer: <text>`.

Loading (the AgentBench folder layouts, configs, `scripts/N/`) is in `os_tasks`; the checkers
(AgentBench's integer-match, string-match, size-match, containing, in, as our code, and the
`lenient` variants) in `os_judges`. Other check entries are scripts run in the agent's machine
after the episode (exit 0 = pass); a task whose script file is found nowhere is `unsupported`.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

from glm_agent.core.contracts import Tool, ToolContext
from glm_agent.core.messages import ToolCall, ToolResult
from glm_agent.evals.suites.os_judges import (
    MATCHERS,
    containing_match,
    in_match,
    integer_match,
    match_answer,
    matchers,
    parse_answer,
    size_match,
    string_match,
)
from glm_agent.evals.suites.os_tasks import load_agentbench_os
from glm_agent.evals.task import (
    EnvironmentSetupError,
    Judgement,
    Sample,
    SampleEnv,
    Suite,
    UnsupportedSample,
    final_text,
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

# A check may walk big folders (a recursive count of /lib); the host's are bigger than a container's.
CHECK_TIMEOUT = 120.0
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


# -- the environment ---------------------------------------------------------------------------
class OSEnvironment:
    """One task's machine, as AgentBench's container: ONE sandbox for the task's whole life.

    Its root is a writable copy-on-write view of the host's, thrown away at the end
    (`SandboxConfig.writable_root`); `/root` is the task's workspace (home and working
    directory, under the workspace quota); `/tmp` and the processes persist for the task. The
    init scripts, the `start` script (in the agent's shell session), the agent's commands and
    the checks all run in it, in that order. No network.
    """

    def __init__(self, root_dir: Path, home_dir: Path | None = None, *, timeout: float = 30.0,
                 workspace_quota_mb: int | None = 2048, workspace_max_files: int | None = 100_000,
                 writable_root: bool = True):
        self.root_dir = Path(root_dir)
        # A host folder for /home (None: /home lives in the sandbox, gone with it).
        self.home_dir = Path(home_dir) if home_dir is not None else None
        self.timeout = timeout
        # The quota of /root (the workspace), as for the shell tool (SandboxConfig's defaults).
        self.workspace_quota_mb = workspace_quota_mb
        self.workspace_max_files = workspace_max_files
        self.writable_root = writable_root
        self.root_dir.mkdir(parents=True, exist_ok=True)
        if self.home_dir is not None:
            self.home_dir.mkdir(parents=True, exist_ok=True)
        self._box: Any = None
        self._tool: Any = None

    def config(self) -> Any:
        from glm_agent.sandbox.config import SandboxConfig

        return SandboxConfig(
            workspace_mount="/root",
            rw_binds=(f"{self.home_dir}:/home",) if self.home_dir is not None else (),
            timeout=self.timeout,
            memory_mb=2048,
            nprocs=128,
            # The system's programs only (python3 is the machine's, as in a container).
            env={"HOME": "/root", "USER": "root", "PATH": _SYSTEM_PATH},
            workspace_quota_mb=self.workspace_quota_mb,
            workspace_max_files=self.workspace_max_files,
            writable_root=self.writable_root,
        )

    @property
    def box(self) -> Any:
        """The task's `LiveSandbox` (started by `start()` or on first use)."""
        if self._box is None:
            from glm_agent.sandbox.session import LiveSandbox

            self._box = LiveSandbox(self.config(), self.root_dir)
        return self._box

    async def start(self) -> None:
        if not self.box.alive:
            await asyncio.to_thread(self.box.start)

    def shell_tool(self) -> Any:
        """The agent's `shell` tool: the project's ShellTool, on this machine's shell session."""
        if self._tool is None:
            from glm_agent.tools.shell import ShellTool

            self._tool = ShellTool(self.config(), timeout=self.timeout, max_output_chars=OUTPUT_LIMIT,
                                   workspace=self.root_dir, cwd="/root", box=self.box)
        return self._tool

    async def run(self, script: str, *, args: list[str] | None = None, language: str = "bash",
                  timeout: float | None = None) -> tuple[int, str, str]:
        """(exit status, stdout, stderr) of `script` run as its own process on the machine (as
        `docker exec` runs AgentBench's init and check scripts); 124 on timeout."""
        await self.start()
        if language == "python":
            argv = ["python3", "-c", script, *(args or [])]
        else:
            argv = ["bash", "-c", script, "script", *(args or [])]
        res = await self.box.execute(argv, timeout=timeout or self.timeout, cwd="/root",
                                     env={"HOME": "/root", "USER": "root"}, split_stderr=True)
        if res.timed_out:
            return 124, res.output, (res.stderr or "") + f"(timed out after {timeout or self.timeout:g} s)"
        return (res.exit_code if res.exit_code is not None else 1), res.output, res.stderr or ""

    async def run_in_shell(self, script: str, *, timeout: float | None = None) -> Any:
        """Run `script` in the agent's shell session (its `cd`, variables, `su` carry over to
        the agent); returns the `CommandResult`."""
        await self.start()
        return await self.shell_tool().run_in_session(script, timeout=timeout or self.timeout, stdin=True)

    def stop(self) -> None:
        if self._tool is not None:
            self._tool.close()
            self._tool = None
        if self._box is not None:
            self._box.close()
            self._box = None


class SandboxShellTool(Tool):
    """The suite's own minimal `shell` tool over `OSEnvironment` (used when the project's
    `ShellTool` is not wanted): the same persistent shell session on the task's machine,
    with AgentBench's output style (truncated past 800 characters)."""

    name = "shell"
    description = (
        "Run a bash script as root on the task machine and return its output (stdout and stderr, "
        "truncated past 800 characters). The shell session persists between calls (working "
        "directory, variables); it starts in /root."
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

        command = str(arguments.get("command") or arguments.get("script") or "").strip()
        if not command:
            return ToolResult(content="Error: empty command. Pass a bash script as `command`.", is_error=True)
        try:
            await self.env.start()
            res = await self.env.shell_tool().run_in_session(command, timeout=self.env.timeout)
        except SandboxError as exc:
            return ToolResult(content=f"Error: {exc}", is_error=True)
        data = {"exit_code": res.exit_code, "timed_out": res.timed_out, "quota_exceeded": res.quota_exceeded,
                "restarted": res.restarted}
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


_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# What no task can do here (no network): the task is `unsupported`, not a failure of the agent.
_NETWORK = re.compile(
    r"\b(?:apt(?:-get)?\s+(?:-\S+\s+)*(?:install|update|upgrade)|(?:pip3?|python3?\s+-m\s+pip)\s+install"
    r"|npm\s+(?:install|i)\b|git\s+clone|(?:curl|wget)\s+(?:-\S+\s+)*['\"]?https?://(?!localhost|127\.|\[::1\]|0\.0\.0\.0)"
    r"|docker\s+pull)")
_NETWORK_ERRORS = ("Temporary failure in name resolution", "Temporary failure resolving", "Could not resolve host", "Network is unreachable",
                   "Failed to establish a new connection", "unable to resolve host")


def _fd_over_limit(text: str) -> str | None:
    """Why a script that wrote to a file descriptor above this host's open-file limit failed
    (`echo 1>/f` is fine, `echo 123321>/f` redirects fd 123321: a container's limit of 1048576
    allows it, a host whose hard limit is lower cannot raise it without CAP_SYS_RESOURCE)."""
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    for fd in re.findall(r"\b(\d+): Bad file descriptor", text):
        if hard != resource.RLIM_INFINITY and int(fd) >= hard:
            return (f"needs a higher open-file limit: its init script uses file descriptor {fd}, and this host's "
                    f"limit is {hard} (a container's is 1048576)")
    return None


_APT = re.compile(r"\bapt(?:-get)?\s+(?:-\S+\s+)*(install|update)\b([^;&|<>\n]*)")


def installs_offline(packages: list[str]) -> bool:
    """Whether `apt install packages` would download nothing in the task's image (the host's
    root here): all are installed at their candidate versions, dependencies too."""
    try:
        out = subprocess.run(["apt-get", "-s", "-q", "install", "--", *packages], capture_output=True, text=True,
                             timeout=60, env={**os.environ, "LC_ALL": "C"})
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and not re.search(r"^(Inst|Conf) ", out.stdout, re.M)


def needs_network(script: str, *, offline_apt=None) -> str | None:
    """The command in `script` that needs the network (installs, downloads), or None.

    `offline_apt` (packages -> bool, e.g. `installs_offline`): for setup scripts, an `apt
    install` the image already satisfies runs offline, and `apt update` only warns there.
    Without it every install counts (a solution's install may follow an init that removed
    the package)."""
    found = []
    for m in _NETWORK.finditer(script or ""):
        apt = _APT.match(script, m.start())
        if apt and offline_apt is not None:
            packages = [w for w in apt.group(2).split() if not w.startswith("-") and not w.isdigit()]  # 2>&1
            if apt.group(1) == "update" or (packages and offline_apt(packages)):
                continue
        found.append((apt is not None and apt.group(1) == "update", m.group(0)))
    # Name the download itself rather than the index update before it.
    return min(found, key=lambda f: f[0])[1] if found else None


# -- the suite ---------------------------------------------------------------------------------
class OSSuite(Suite):
    name = "os"
    description = "shell tasks in a sandbox (AgentBench OS-interaction format)"
    max_steps = 8  # AgentBench round_limit
    sample_timeout = 300.0

    def settings(self) -> dict[str, Any]:
        return {"judge": self.options.get("judge") or "agentbench"}

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
        # --scripts first, then the task's own scripts/N/ (AgentBench: script_dir + file), then beside it.
        roots = [Path(p) for p in self.options.get("scripts_dirs") or []]
        roots += [Path(sample.gold["scripts"])] if sample.gold.get("scripts") else []
        roots += [base, base / "scripts", base.parent / "scripts"]
        for root in roots:
            candidate = root / name
            if candidate.is_file():
                if name.endswith(".py"):
                    language = "python"
                return candidate.read_text(encoding="utf-8"), language
        raise UnsupportedSample(
            f"{what} script {name!r} is not shipped with the task file: pass the folder that holds it "
            "with --scripts (AgentBench's data/os_interaction/scripts/N/)"
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
                plan.append(("matcher", stem))  # AgentBench's checker files, as our code
            else:
                code, language = self._resolve(sample, entry, "check")
                plan.append(("script", code, language))
        return plan

    def _offline_check(self, sample: Sample) -> None:
        """UnsupportedSample when the task's scripts need the network (no sandbox has it). The
        image here is the host's root: setup scripts may `apt install` what it already has."""
        entries = [("init", e) for e in sample.gold["init"]]
        entries += [(what, sample.gold[what]) for what in ("start", "example") if sample.gold.get(what)]
        for what, entry in entries:
            code, _ = self._resolve(sample, entry, what)
            found = needs_network(code, offline_apt=installs_offline if what in ("init", "start") else None)
            if found:
                raise UnsupportedSample(f"needs the network: its {what} script runs {found.strip()!r}, and this "
                                        "sandbox has no network")

    async def _build(self, sample: Sample, workspace: Path) -> OSEnvironment:
        """The task's machine, started, with its init scripts run (each as its own process)."""
        env = OSEnvironment(workspace)
        try:
            await env.start()
            for entry in sample.gold["init"]:
                code, language = self._resolve(sample, entry, "init")
                status, out, err = await env.run(code, language=language, timeout=60)
                if status != 0:
                    text = (out + err).strip()
                    if any(e in text for e in _NETWORK_ERRORS):
                        raise UnsupportedSample(f"needs the network: its init script failed offline: {text[-300:]}")
                    limit = _fd_over_limit(text)
                    if limit:
                        raise UnsupportedSample(limit)
                    raise EnvironmentSetupError(f"the task's init script failed here (exit {status}): {text[-300:]}")
        except BaseException:
            env.stop()
            raise
        return env

    async def _launch(self, sample: Sample, workspace: Path) -> OSEnvironment:
        """The machine as the agent finds it: built, then the `start` script run in the agent's
        shell session (its `cd`, variables or `su` carry over, as in AgentBench's shell)."""
        env = await self._build(sample, workspace)
        try:
            if sample.gold.get("start"):
                code, _ = self._resolve(sample, sample.gold["start"], "start")
                res = await env.run_in_shell(code, timeout=60)
                if res.timed_out or res.restarted or res.exit_code:
                    why = "timed out" if res.timed_out else f"exit {res.exit_code}"
                    raise EnvironmentSetupError(f"the task's start script failed here ({why}): "
                                                f"{(res.output + ' ' + (res.notice or '')).strip()[-300:]}")
        except BaseException:
            env.stop()
            raise
        return env

    async def setup(self, sample: Sample, workspace: Path) -> SampleEnv:
        if "check" in sample.gold["judge"]:
            self._check_plan(sample)  # unsupported checks fail fast, before the model runs
        if sample.gold.get("example"):
            self._resolve(sample, sample.gold["example"], "example")
        self._offline_check(sample)
        env = await self._launch(sample, workspace)
        tool = env.shell_tool() if self.options.get("project_shell", True) else SandboxShellTool(env)
        return SampleEnv(
            tools=[tool],
            system=SYSTEM,
            prompt=sample.prompt,
            max_steps=self.max_steps,
            state={"env": env, "workspace": str(workspace)},
            cleanups=[env.stop],
        )

    async def judge(self, sample: Sample, env: SampleEnv, result: Any) -> Judgement:
        """AgentBench's evaluation: `match` compares the answer; `check` runs the list in order
        with params [answer], each entry getting them as arguments and appending its stdout
        (null = the example); the first entry that fails (exit status != 0) fails the task."""
        mode = self.options.get("judge") or "agentbench"
        checkers = matchers(mode)
        answer = parse_answer(final_text(result))
        rule = sample.gold["judge"]
        if "match" in rule:
            match = rule["match"]
            ok = match_answer(answer, match, mode)
            want = f"/{match['regex']}/" if "regex" in match else repr(match["answer"])
            return Judgement(float(ok), detail=f"answer {answer.strip()!r} vs {want}", info={"answer": answer})
        params = [answer]
        for step in self._check_plan(sample):
            if step is None:
                status, out = await self._example_output(sample, env, params)
                if status != 0:  # AgentBench: any entry of the list that fails fails the task
                    return Judgement(0.0, detail=f"the example failed here (exit {status}): {out.strip()[:200]}",
                                     info={"answer": answer})
                params.append(out)
            elif step[0] == "matcher":
                # The checker files compare argv[1] (the answer) with argv[2] (the first output).
                expected = params[1] if len(params) > 1 else None
                if expected is not None and expected.strip() and not checkers[step[1]](expected, expected):
                    # The checker rejects the example's own output: no answer can pass (broken upstream).
                    return Judgement.unsupported(
                        f"no answer can pass: the example's own output {expected.strip()!r} fails {step[1]} "
                        "(broken upstream)", answer=answer, expected=expected)
                if expected is None or not checkers[step[1]](params[0], expected):
                    return Judgement(0.0, detail=f"{step[1]}: answer {params[0]!r} vs expected {expected!r}",
                                     info={"answer": answer, "expected": expected})
                params.append("")
            else:
                status, out = _status_stdout(await env.state["env"].run(step[1], args=params, language=step[2],
                                                                        timeout=CHECK_TIMEOUT))
                if status != 0:
                    return Judgement(0.0, detail=f"check script failed (exit {status}): {out.strip()[:200]}",
                                     info={"answer": answer})
                params.append(out)
        return Judgement(1.0, detail=f"answer {answer!r} passed the checks", info={"answer": answer,
                                                                                  "expected": params[1:]})

    async def _example_output(self, sample: Sample, env: SampleEnv, params: list[str]) -> tuple[int, str]:
        """(exit status, stdout) of the example solution (a check list's null entry), run with
        `params` as its arguments in the task's own machine, after the agent (as AgentBench
        does: a randomised init then has one right answer)."""
        code, language = self._resolve(sample, sample.gold["example"], "example")
        return _status_stdout(await env.state["env"].run(code, args=params, language=language,
                                                         timeout=CHECK_TIMEOUT))

    def oracle(self, sample: Sample) -> list[Any]:
        """Run the example solution (inline or a file) in the agent's shell session, in the
        task's environment, and answer with its stdout.

        A `match` task's only gold in AgentBench is its expected string (its example is never
        run there): when it has no example, or the example fails here, the oracle answers that
        string and says so in its reply."""
        gold = sample.gold
        rule = gold["judge"]
        label = rule["match"].get("answer") if "match" in rule else None
        if gold.get("example") is None:
            if label is not None:
                return [f"There is no example solution upstream; answering the expected value.\nAnswer: {label}"]
            return ["Answer: done"]
        code, language = self._resolve(sample, gold["example"], "example")
        # The judge runs the example of a check list (its null) as its own process in /root:
        # run it the same way (a process count then sees the same processes). Otherwise the
        # example is the agent's own action, in its session (with `start`'s variables).
        own_process = None in rule.get("check", [])

        def answer(messages: list[Any]) -> str:
            status, out = example_stdout(getattr(messages[-1], "content", "") or "")
            if status != 0 and label is not None:
                return (f"The example solution failed here (exit {status}); answering the expected value."
                        f"\nAnswer: {label}")
            return f"Answer: {out}"

        command = oracle_command(code, language, own_process=own_process)
        return [ToolCall(name="shell", arguments={"command": command}), answer]


# The oracle's command prints the example's stdout between these marks, then its exit status.
_OUT_START, _OUT_END = "<<<example stdout>>>", "<<<end of example stdout, exit"


def oracle_command(code: str, language: str = "bash", *, own_process: bool = False) -> str:
    """A shell command running `code` with its stdout between marks and its stderr dropped, so
    the answer is the stdout alone, as AgentBench's judge takes it. `own_process`: as a child
    process started in /root (as the judge runs it); else in the session shell itself (no
    subshell: `$var`, `cd` and a process count are what the agent's own command would see)."""
    if own_process:
        run = "python3 -c" if language == "python" else "bash -c"
        body = f'cd /root && {run} "$(cat <<\'GLM_ORACLE_EXAMPLE\'\n{code}\nGLM_ORACLE_EXAMPLE\n)" 2>/dev/null'
    else:
        if language == "python":
            code = f"python3 - <<'GLM_ORACLE_PY'\n{code}\nGLM_ORACLE_PY"
        body = f"{{\n{code}\n}} 2>/dev/null"
    return f"printf '%s\\n' '{_OUT_START}'\n{body}\nprintf '\\n%s %s>>>\\n' '{_OUT_END}' \"$?\""


def example_stdout(text: str) -> tuple[int, str]:
    """(exit status, stdout) from the output of `oracle_command`; (-1, the whole text) when
    the marks were cut off."""
    start, end = text.rfind(_OUT_START + "\n"), text.rfind("\n" + _OUT_END)
    status = re.search(re.escape(_OUT_END) + r" (\d+)>>>", text[end:]) if end >= 0 else None
    if start < 0 or end < start or status is None:
        return -1, text.strip()
    return int(status.group(1)), text[start + len(_OUT_START) + 1:end].strip("\n")


def _status_stdout(result: tuple) -> tuple[int, str]:
    """(status, stdout) of `OSEnvironment.run`'s (status, stdout, stderr); an older
    (status, output) pair is taken as it is."""
    return result[0], result[1]
