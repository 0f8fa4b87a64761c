"""Compare two run folders sample by sample: where B beats A (wins), where it loses.

Samples are matched by (suite, id); a sample counts as a win when B's score is higher, a loss
when lower, a tie otherwise. Unscored samples (unsupported, task errors) count as 0 when only
one side scored them. Scores are compared on the common samples only, so runs of different
sizes compare fairly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from glm_agent.evals.record import EvalRecord
from glm_agent.evals.runs import latest_records, mixed_models_warning, read_runs

__all__ = ["compare_runs", "render_comparison"]


def _load(folder: str | Path, warnings: list[str]) -> dict[tuple[str, str], EvalRecord]:
    log = read_runs(folder, require=True)
    warnings += log.skipped
    mixed = mixed_models_warning(log.records)
    if mixed:
        warnings.append(f"{folder}: {mixed}")
    return {r.key: r for r in latest_records(log.records)}


def _models(records: dict[tuple[str, str], EvalRecord]) -> list[str]:
    return sorted({r.model for r in records.values()})


def compare_runs(a: str | Path, b: str | Path) -> dict[str, Any]:
    """Per-suite wins, losses and ties of run folder `b` against `a`; `warnings` lists the lines
    of either `runs.jsonl` that were skipped and folders mixing models. A folder without
    `runs.jsonl` is a `RunFolderError`."""
    warnings: list[str] = []
    ra, rb = _load(a, warnings), _load(b, warnings)
    suites: dict[str, Any] = {}
    for key in sorted(set(ra) | set(rb)):
        suite = key[0]
        entry = suites.setdefault(suite, {"common": 0, "wins": [], "losses": [], "ties": 0,
                                          "only_a": 0, "only_b": 0, "score_a": 0.0, "score_b": 0.0})
        if key not in rb:
            entry["only_a"] += 1
            continue
        if key not in ra:
            entry["only_b"] += 1
            continue
        x, y = ra[key], rb[key]
        if x.score is None and y.score is None:
            continue
        sx, sy = x.score or 0.0, y.score or 0.0
        entry["common"] += 1
        entry["score_a"] += sx
        entry["score_b"] += sy
        row = {"id": key[1], "a": sx, "b": sy, "status_a": x.status, "status_b": y.status}
        if sy > sx + 1e-9:
            entry["wins"].append(row)
        elif sx > sy + 1e-9:
            entry["losses"].append(row)
        else:
            entry["ties"] += 1
    for entry in suites.values():
        n = entry["common"] or 1
        entry["score_a"] /= n
        entry["score_b"] /= n
    return {"a": str(a), "b": str(b), "models_a": _models(ra), "models_b": _models(rb),
            "suites": suites, "warnings": warnings}


def render_comparison(result: dict[str, Any], show: int = 20) -> str:
    def models(side: str) -> str:
        names = result.get(f"models_{side}") or []
        return f" (model {', '.join(repr(m) for m in names)})" if names else ""

    lines = [f"A = {result['a']}{models('a')}", f"B = {result['b']}{models('b')}", "",
             f"{'suite':<8}{'common':>8}{'A %':>8}{'B %':>8}{'wins':>6}{'losses':>8}{'ties':>6}{'only A':>8}{'only B':>8}"]
    for suite, e in result["suites"].items():
        lines.append(f"{suite:<8}{e['common']:>8}{100 * e['score_a']:>8.1f}{100 * e['score_b']:>8.1f}"
                     f"{len(e['wins']):>6}{len(e['losses']):>8}{e['ties']:>6}{e['only_a']:>8}{e['only_b']:>8}")
    for suite, e in result["suites"].items():
        for label, rows in (("wins (B better)", e["wins"]), ("losses (B worse)", e["losses"])):
            if rows:
                lines += ["", f"{suite} {label}:"]
                for r in rows[:show]:
                    lines.append(f"  {r['id']}: A {r['a']:.2f} ({r['status_a']}) -> B {r['b']:.2f} ({r['status_b']})")
                if len(rows) > show:
                    lines.append(f"  ... {len(rows) - show} more")
    return "\n".join(lines)
