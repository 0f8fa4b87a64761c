"""Reports of a run folder: `overall.json`, `report.md` and `scores.png` from `runs.jsonl`.

Everything is recomputed from `runs.jsonl`, so `glm-agent eval report DIR` after a resumed or
merged run gives the same numbers as the run itself. Scores come with a 95% Wilson interval
(AgentBench reports bare success rates; with 3-25 samples the interval matters more).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from glm_agent.evals.config import RunConfig, read_config
from glm_agent.evals.record import STATUSES, UNSUPPORTED, EvalRecord
from glm_agent.evals.runs import RunFolderError, latest_records, mixed_models_warning, read_runs
from glm_agent.evals.suites import SUITE_NAMES, SUITES
from glm_agent.evals.task import wilson

__all__ = ["summarize", "write_report", "render_markdown", "write_chart", "CHART_FILE"]

CHART_FILE = "scores.png"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def summarize(records: list[EvalRecord], suites: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per-suite scores, intervals, status counts and per-sample cost averages."""
    records = latest_records(records)
    suites = suites or {}
    out: dict[str, Any] = {"suites": {}, "generated": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    names = sorted({r.suite for r in records}, key=lambda n: (list(suites).index(n) if n in suites else 99, n))
    for name in names:
        rs = [r for r in records if r.suite == name]
        scores = [r.score for r in rs if r.score is not None]
        passed = sum(1 for r in rs if r.score is not None and r.passed)
        lo, hi = wilson(sum(scores), len(scores))
        statuses = Counter(r.status for r in rs)
        suite = suites.get(name)
        # Tasks this environment cannot run: out of the score, but counted with their reasons.
        reasons = Counter(r.detail or "(no reason given)" for r in rs if r.status in UNSUPPORTED)
        entry = {
            "n": len(rs),
            "judged": len(scores),
            "score": _mean(scores),
            "ci95": [lo, hi],
            "passed": passed,
            "success_rate": passed / len(scores) if scores else 0.0,
            "metric": getattr(suite, "metric", "success rate"),
            "statuses": {s: statuses[s] for s in STATUSES if statuses.get(s)},
            "unsupported": sum(reasons.values()),
            "unsupported_reasons": dict(reasons.most_common()),
            "avg_steps": _mean([r.steps for r in rs]),
            "avg_prompt_tokens": _mean([r.prompt_tokens for r in rs]),
            "avg_completion_tokens": _mean([r.completion_tokens for r in rs]),
            "avg_seconds": _mean([r.seconds for r in rs]),
            "avg_tool_calls": _mean([r.tool_calls for r in rs]),
            "invalid_calls": sum(r.invalid_calls for r in rs),
        }
        if suite is not None and hasattr(suite, "aggregate"):
            entry.update(suite.aggregate(rs))
        out["suites"][name] = entry
    suite_scores = [s["score"] for s in out["suites"].values() if s["judged"]]
    out["models"] = dict(sorted(Counter(r.model for r in records).items()))
    out["overall"] = {
        "suites": len(out["suites"]),
        "samples": len(records),
        "macro_score": _mean(suite_scores),
        "total_seconds": sum(r.seconds for r in records),
        "total_prompt_tokens": sum(r.prompt_tokens for r in records),
        "total_completion_tokens": sum(r.completion_tokens for r in records),
    }
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _interval(ci: Any) -> str:
    return f"{_pct(ci[0])}–{_pct(ci[1])}" if ci else ""


def _cell(text: str, width: int = 100) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:width]


def render_markdown(summary: dict[str, Any], records: list[EvalRecord], config: dict[str, Any]) -> str:
    records = latest_records(records)
    lines = ["# Evaluation report", ""]
    models = summary.get("models") or {}
    model = ", ".join(f"`{m}`" for m in models) if models else f"`{config.get('model') or '?'}`"
    lines.append(
        f"Model {model} · limit {config.get('limit')} · concurrency {config.get('concurrency')} · "
        f"seed {config.get('seed')} · generated {summary['generated']}"
    )
    lines.append("")
    if summary.get("warnings"):
        lines += ["**Warnings**", ""] + [f"- {_cell(w, 300)}" for w in summary["warnings"]] + [""]
    lines += [
        "| suite | metric | n | judged | score % | 95% CI | passed | statuses | avg turns | avg prompt tok | avg completion tok | avg s |",
        "|---|---|---:|---:|---:|---|---:|---|---:|---:|---:|---:|",
    ]
    for name, s in summary["suites"].items():
        statuses = ", ".join(f"{k} {v}" for k, v in s["statuses"].items())
        lo, hi = s["ci95"]
        lines.append(
            f"| {name} | {s['metric']} | {s['n']} | {s['judged']} | {_pct(s['score'])} | {_interval((lo, hi))} | "
            f"{s['passed']} | {statuses} | {s['avg_steps']:.1f} | {s['avg_prompt_tokens']:.0f} | "
            f"{s['avg_completion_tokens']:.0f} | {s['avg_seconds']:.1f} |"
        )
    o = summary["overall"]
    lines += [
        "",
        f"Macro average over suites: **{_pct(o['macro_score'])}%** · {o['samples']} samples · "
        f"{o['total_seconds']:.0f} s · {o['total_prompt_tokens']} prompt + {o['total_completion_tokens']} "
        "completion tokens",
        "",
        f"![scores]({CHART_FILE})",
        "",
    ]
    for name, s in summary["suites"].items():
        if s.get("unsupported"):
            lines += [
                f"### {name}: {s['unsupported']} unsupported (not in the score)",
                "",
                "These tasks cannot run in this environment; the reasons:",
                "",
                "| tasks | reason |",
                "|---:|---|",
            ]
            lines += [f"| {n} | {_cell(reason, 300)} |" for reason, n in s["unsupported_reasons"].items()]
            lines.append("")
    for name, s in summary["suites"].items():
        cats = s.get("per_category") or {}
        if len(cats) > 1:
            lines += [f"### {name} by category", "", "| category | n | score % | 95% CI |", "|---|---:|---:|---|"]
            lines += [f"| {c} | {v['n']} | {_pct(v['score'])} | {_interval(v.get('ci95'))} |" for c, v in cats.items()]
            lines.append("")
    lines += [
        "## Samples",
        "",
        "| suite | id | status | score | turns | prompt tok | completion tok | tool calls | s | detail |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in sorted(records, key=lambda r: r.key):
        score = "-" if r.score is None else f"{r.score:.2f}"
        lines.append(
            f"| {r.suite} | {r.id} | {r.status} | {score} | {r.steps} | {r.prompt_tokens} | "
            f"{r.completion_tokens} | {r.tool_calls} | {r.seconds:.1f} | {_cell(r.detail)} |"
        )
    lines.append("")
    return "\n".join(lines)


def write_chart(summary: dict[str, Any], path: Path) -> Path:
    """A bar chart of per-suite scores with 95% intervals (matplotlib, Agg: no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary["suites"])
    scores = [100 * summary["suites"][n]["score"] for n in names]
    lows = [max(0.0, s - 100 * summary["suites"][n]["ci95"][0]) for s, n in zip(scores, names)]
    highs = [max(0.0, 100 * summary["suites"][n]["ci95"][1] - s) for s, n in zip(scores, names)]
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(names) + 2), 3.5), dpi=100)
    bars = ax.bar(names, scores, yerr=[lows, highs], capsize=4, color="#4C72B0")
    for bar, s, n in zip(bars, scores, names):
        ax.text(bar.get_x() + bar.get_width() / 2, 2, f"{s:.0f}%\nn={summary['suites'][n]['judged']}",
                ha="center", va="bottom", color="white", fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel("score (%)")
    ax.set_title("score per suite (95% CI)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(out: str | Path, suites: dict[str, Any] | None = None) -> dict[str, Any]:
    """Recompute and write overall.json, report.md and the chart for run folder `out`.

    Lines of `runs.jsonl` that are not records, a damaged `config.json` and records of several
    models are listed under the summary's `warnings` (and in report.md); a folder without
    `runs.jsonl` is a `RunFolderError`.
    """
    out = Path(out)
    log = read_runs(out, require=True)
    warnings = list(log.skipped)
    try:
        config = read_config(out) or RunConfig()
    except RunFolderError as exc:
        warnings.append(f"{exc}; the report header leaves its settings out")
        config = None
    if suites is None:
        names = {r.suite for r in log.records}
        suites = {n: SUITES[n]() for n in SUITE_NAMES if n in names}
    summary = summarize(log.records, suites)
    mixed = mixed_models_warning(log.records)
    if mixed:
        warnings.append(f"{out}: {mixed}")
    summary["warnings"] = warnings
    config_dict = config.model_dump(mode="json") if config is not None else {}
    summary["config"] = config_dict
    try:
        (out / "overall.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        (out / "report.md").write_text(render_markdown(summary, log.records, config_dict), encoding="utf-8")
        if summary["suites"]:
            write_chart(summary, out / CHART_FILE)
    except OSError as exc:
        raise RunFolderError(f"{exc.filename or out}: cannot write the report: {exc.strerror or exc}") from None
    return summary
