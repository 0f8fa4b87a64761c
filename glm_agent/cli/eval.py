"""`glm-agent eval`: run suites, rebuild reports, compare runs.

    glm-agent eval run db fc --model embedded --limit 3 --out runs/cpu
    glm-agent eval run os --oracle --data AgentBench/data/os_interaction --out runs/oracle
    glm-agent eval report runs/cpu
    glm-agent eval compare runs/a runs/b
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, List, Optional

import typer

__all__ = ["eval_app", "resolve_eval_model"]

eval_app = typer.Typer(
    name="eval",
    help="Run AgentBench-style suites (os, db, fc, math, web), rebuild reports, compare runs.",
    no_args_is_help=True,
    add_completion=False,
)


def resolve_eval_model(spec: str) -> tuple[Any, str]:
    """(model source for the runner, display name). `oracle` replays each sample's gold."""
    if spec == "oracle":
        from glm_agent.evals.oracle import OracleFactory

        return OracleFactory(), "oracle"
    from glm_agent.core.errors import GlmAgentError
    from glm_agent.models.spec import resolve_model

    try:
        return resolve_model(spec), spec
    except (ValueError, GlmAgentError) as exc:
        raise typer.BadParameter(str(exc)) from None


def _fail(message: object) -> typer.Exit:
    """Print one error line; the caller raises the returned Exit (status 2: bad input)."""
    typer.secho(f"error: {message}", fg="red", err=True)
    return typer.Exit(2)


def _warn(messages: list[str]) -> None:
    for message in messages:
        typer.secho(f"warning: {message}", fg="yellow", err=True)


@eval_app.command("run")
def run_cmd(
    suites: List[str] = typer.Argument(..., help="Suites to run: os db fc math web route (or 'all')."),
    model: str = typer.Option("embedded", "--model", "-m", help="Model spec (as for `glm-agent chat`), or 'oracle'."),
    oracle: bool = typer.Option(False, "--oracle", help="Run the oracle agent (gold actions) instead of a model."),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", min=1, help="Samples per suite (spread over categories)."),
    concurrency: int = typer.Option(1, "--concurrency", "-k", min=1, help="Samples run at once."),
    out: Path = typer.Option(None, "--out", "-o", help="Run folder (resumes if it has runs.jsonl). Default: runs/<time>."),
    data: Optional[Path] = typer.Option(None, "--data", help="The public benchmark's own file/folder for the suite (one suite only); for os also AgentBench's os_interaction folder or configs/tasks/os.yaml[#NAME]."),
    scripts: Optional[List[Path]] = typer.Option(None, "--scripts", help="os: a folder of the tasks' script files (init/, check/, example/), searched first; repeatable."),
    judge: str = typer.Option("agentbench", "--judge", help="os: 'agentbench' (their checkers exactly: int(), equal sizes, stdout) or 'lenient' (first integer, 5% size slack)."),
    db: str = typer.Option("sqlite", "--db", help="db: 'sqlite' (quick, no server) or 'mariadb' (AgentBench's MySQL setting: a private MariaDB server the run starts)."),
    seed: int = typer.Option(0, "--seed", help="Run seed; each sample's sampling seed derives from it."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Seconds per sample (default: the suite's)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Override each suite's step limit."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Cap on tokens per model turn."),
    temperature: float = typer.Option(0.0, "--temperature", help="Sampling temperature (0 = greedy)."),
    keep_workspaces: bool = typer.Option(False, "--keep-workspaces", help="Keep each sample's files under OUT/work."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar (logs, CI)."),
) -> None:
    """Run suites against a model and write runs.jsonl, overall.json, report.md and a chart."""
    from glm_agent.core.contracts import GenerationSettings
    from glm_agent.evals.runner import EvalRunner
    from glm_agent.evals.runs import RunFolderError
    from glm_agent.evals.suites import SUITE_NAMES, make_suite
    from glm_agent.evals.task import TaskFileError

    names = list(SUITE_NAMES) if suites == ["all"] else suites
    for name in names:
        if name not in SUITE_NAMES:
            raise typer.BadParameter(f"unknown suite {name!r}; available: {', '.join(SUITE_NAMES)}")
    if data is not None and len(names) != 1:
        raise typer.BadParameter("--data applies to one suite: run one suite at a time with it")
    try:
        if judge not in ("agentbench", "lenient"):
            raise typer.BadParameter(f"--judge must be 'agentbench' or 'lenient', not {judge!r}")
        for folder in scripts or []:
            if not folder.is_dir():
                raise _fail(f"{folder}: --scripts needs a folder (AgentBench's data/os_interaction/scripts/N)")
        options = {"scripts_dirs": [str(f) for f in scripts or []], "judge": judge}
        if db not in ("sqlite", "mariadb"):
            raise typer.BadParameter(f"--db must be 'sqlite' or 'mariadb', not {db!r}")
        per_suite = {"os": options, "db": {"db": db}}
        suite_objs = [make_suite(n, data=data, **per_suite.get(n, {})) for n in names]
        for s in suite_objs:
            s.samples()
    except TaskFileError as exc:
        raise _fail(exc) from None
    settings = GenerationSettings(temperature=temperature)
    if max_new_tokens:
        settings.max_new_tokens = max_new_tokens
    runner = EvalRunner(
        suites=suite_objs, model=None, out=out or Path("runs") / time.strftime("%Y%m%d-%H%M%S"), limit=limit,
        concurrency=concurrency, seed=seed, timeout=timeout, max_steps=max_steps,
        model_name="oracle" if oracle else model, progress=not no_progress, keep_workspaces=keep_workspaces,
        settings=settings,
    )
    # Before the model loads: a folder of another model or other settings is refused at once.
    try:
        previous = runner.prepare()
    except RunFolderError as exc:
        raise _fail(exc) from None
    _warn(previous.skipped)
    source, _ = resolve_eval_model(runner.model_name)
    runner.model = source

    async def main() -> dict:
        try:
            return await runner.run()
        finally:
            close = getattr(source, "aclose", None)
            if close is not None:
                await close()

    try:
        summary = asyncio.run(main())
    except RunFolderError as exc:
        raise _fail(exc) from None
    _warn([w for w in summary.get("warnings", []) if w not in previous.skipped])
    _print_summary(summary, runner.out)


def _print_summary(summary: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    models = ", ".join(repr(m) for m in summary.get("models") or {})
    table = Table(title=f"results in {out}" + (f" (model {models})" if models else ""))
    for col in ("suite", "n", "score %", "95% CI", "statuses", "avg turns", "avg s"):
        table.add_column(col)
    for name, s in summary["suites"].items():
        lo, hi = s["ci95"]
        table.add_row(name, str(s["n"]), f"{100 * s['score']:.1f}", f"{100 * lo:.0f}-{100 * hi:.0f}",
                      ", ".join(f"{k} {v}" for k, v in s["statuses"].items()), f"{s['avg_steps']:.1f}",
                      f"{s['avg_seconds']:.1f}")
    Console().print(table)
    for name, s in summary["suites"].items():
        reasons = s.get("unsupported_reasons") or {}
        if reasons:  # tasks this machine cannot run: out of the score, and why
            Console().print(f"{name}: {s['unsupported']} unsupported (not in the score):", markup=False)
            for reason, n in list(reasons.items())[:5]:
                Console().print(f"  {n} x {reason[:160]}", markup=False)
            if len(reasons) > 5:
                Console().print(f"  ... {len(reasons) - 5} more reasons in report.md", markup=False)
    Console().print(f"report: {out / 'report.md'}")


@eval_app.command("report")
def report_cmd(out: Path = typer.Argument(..., help="A run folder (holding runs.jsonl).")) -> None:
    """Recompute overall.json, report.md and the chart from a run folder's runs.jsonl."""
    from glm_agent.evals.report import write_report
    from glm_agent.evals.runs import RunFolderError

    try:
        summary = write_report(out)
    except RunFolderError as exc:
        raise _fail(exc) from None
    _warn(summary.get("warnings", []))
    _print_summary(summary, out)


@eval_app.command("compare")
def compare_cmd(
    a: Path = typer.Argument(..., help="Baseline run folder."),
    b: Path = typer.Argument(..., help="Run folder to compare with the baseline."),
    show: int = typer.Option(20, "--show", help="Samples listed per direction (wins / losses)."),
) -> None:
    """Per-task wins and losses of run B against run A, per suite."""
    from glm_agent.evals.compare import compare_runs, render_comparison
    from glm_agent.evals.runs import RunFolderError

    try:
        result = compare_runs(a, b)
    except RunFolderError as exc:
        raise _fail(exc) from None
    _warn(result["warnings"])
    typer.echo(render_comparison(result, show=show))
