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

from glm_agent.evals.runner import RUNS_FILE, load_records
from glm_agent.evals.task import STATUSES, wilson

__all__ = ["summarize", "write_report", "render_markdown", "write_chart", "latest_records"]

CHART_FILE = "scores.png"


def latest_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per (suite, id): the last one written wins."""
    by_key: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        by_key[(r["suite"], r["id"])] = r
    return list(by_key.values())


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def summarize(records: list[dict[str, Any]], suites: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per-suite scores, intervals, status counts and per-sample cost averages."""
    records = latest_records(records)
    suites = suites or {}
    out: dict[str, Any] = {"suites": {}, "generated": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    names = sorted({r["suite"] for r in records}, key=lambda n: (list(suites).index(n) if n in suites else 99, n))
    for name in names:
        rs = [r for r in records if r["suite"] == name]
        judged = [r for r in rs if r.get("score") is not None]
        scores = [float(r["score"]) for r in judged]
        passed = sum(1 for r in judged if r.get("passed"))
        lo, hi = wilson(sum(scores), len(scores))
        statuses = Counter(r["status"] for r in rs)
        suite = suites.get(name)
        entry = {
            "n": len(rs),
            "judged": len(judged),
            "score": _mean(scores),
            "ci95": [lo, hi],
            "passed": passed,
            "success_rate": passed / len(judged) if judged else 0.0,
            "metric": getattr(suite, "metric", "success rate"),
            "statuses": {s: statuses[s] for s in STATUSES if statuses.get(s)},
            "avg_steps": _mean([r.get("steps", 0) for r in rs]),
            "avg_prompt_tokens": _mean([r.get("prompt_tokens", 0) for r in rs]),
            "avg_completion_tokens": _mean([r.get("completion_tokens", 0) for r in rs]),
            "avg_seconds": _mean([r.get("seconds", 0.0) for r in rs]),
            "avg_tool_calls": _mean([r.get("tool_calls", 0) for r in rs]),
            "invalid_calls": sum(r.get("invalid_calls", 0) for r in rs),
        }
        if suite is not None and hasattr(suite, "aggregate"):
            entry.update(suite.aggregate(rs))
        out["suites"][name] = entry
    suite_scores = [s["score"] for s in out["suites"].values() if s["judged"]]
    out["overall"] = {
        "suites": len(out["suites"]),
        "samples": len(records),
        "macro_score": _mean(suite_scores),
        "total_seconds": sum(r.get("seconds", 0.0) for r in records),
        "total_prompt_tokens": sum(r.get("prompt_tokens", 0) for r in records),
        "total_completion_tokens": sum(r.get("completion_tokens", 0) for r in records),
    }
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def render_markdown(summary: dict[str, Any], records: list[dict[str, Any]], config: dict[str, Any]) -> str:
    records = latest_records(records)
    lines = ["# Evaluation report", ""]
    if config:
        lines.append(
            f"Model `{config.get('model') or '?'}` · limit {config.get('limit')} · concurrency "
            f"{config.get('concurrency')} · seed {config.get('seed')} · generated {summary['generated']}"
        )
        lines.append("")
    lines += [
        "| suite | metric | n | judged | score % | 95% CI | passed | statuses | avg turns | avg prompt tok | avg completion tok | avg s |",
        "|---|---|---:|---:|---:|---|---:|---|---:|---:|---:|---:|",
    ]
    for name, s in summary["suites"].items():
        statuses = ", ".join(f"{k} {v}" for k, v in s["statuses"].items())
        lo, hi = s["ci95"]
        lines.append(
            f"| {name} | {s['metric']} | {s['n']} | {s['judged']} | {_pct(s['score'])} | {_pct(lo)}–{_pct(hi)} | "
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
        cats = s.get("per_category") or {}
        if len(cats) > 1:
            lines += [f"### {name} by category", "", "| category | n | score % |", "|---|---:|---:|"]
            lines += [f"| {c} | {v['n']} | {_pct(v['score'])} |" for c, v in cats.items()]
            lines.append("")
    lines += [
        "## Samples",
        "",
        "| suite | id | status | score | turns | prompt tok | completion tok | tool calls | s | detail |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in sorted(records, key=lambda r: (r["suite"], r["id"])):
        score = "-" if r.get("score") is None else f"{r['score']:.2f}"
        detail = (r.get("detail") or "").replace("|", "\\|").replace("\n", " ")[:100]
        lines.append(
            f"| {r['suite']} | {r['id']} | {r['status']} | {score} | {r.get('steps', 0)} | "
            f"{r.get('prompt_tokens', 0)} | {r.get('completion_tokens', 0)} | {r.get('tool_calls', 0)} | "
            f"{r.get('seconds', 0):.1f} | {detail} |"
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
    """Recompute and write overall.json, report.md and the chart for run folder `out`."""
    out = Path(out)
    if not (out / RUNS_FILE).exists():
        raise FileNotFoundError(f"{out} has no {RUNS_FILE}: not an eval run folder")
    if suites is None:
        suites = _suites_by_name(out)
    records = load_records(out)
    summary = summarize(records, suites)
    config_path = out / "config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    summary["config"] = config
    (out / "overall.json").write_text(json.dumps(summary, indent=2))
    (out / "report.md").write_text(render_markdown(summary, records, config))
    if summary["suites"]:
        write_chart(summary, out / CHART_FILE)
    return summary


def _suites_by_name(out: Path) -> dict[str, Any]:
    """Suite objects (not loaded) for the names in a run folder, for metrics and categories."""
    from glm_agent.evals.suites import SUITE_NAMES, SUITES

    names = {r["suite"] for r in load_records(out)}
    return {n: SUITES[n]() for n in SUITE_NAMES if n in names}
