"""Loading AgentBench OS-interaction tasks into `Sample`s, with the folder of their scripts.

`--data` may name:
- a task file (a JSON list or one task); its scripts are looked up in the AgentBench layout
  (`data/N/x.json` -> `scripts/N/`, `data/dev.json` -> `scripts/dev/`);
- AgentBench's `os_interaction` folder, or its `data` folder: the `os-std` set, every
  `data/N/*.json` with `scripts/N/` (files directly in `data/`, like `dev.json`, are other sets);
- any other folder of task files (each paired with its scripts as above where they exist);
- a config: AgentBench's `configs/tasks/os.yaml` (its `os-std` entry, or `os.yaml#NAME`), or a
  YAML/JSON list of `{problem_file: GLOB, script_dir: DIR, index_prefix: STR}` as in that file.
  Relative paths are taken from the config's folder or the nearest folder above it where they exist.

Task ids follow AgentBench's: `index_prefix + file stem + "-" + position` (`std-001-stock-0`).
"""

from __future__ import annotations

import glob
import json
from pathlib import Path
from typing import Any

from glm_agent.evals.task import Sample, TaskFileError, json_item_lines, read_json

__all__ = ["load_agentbench_os", "os_task_files"]

CONFIG_SUFFIXES = (".yaml", ".yml")
DEFAULT_CONFIG = "os-std"


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


def _item_to_sample(item: Any, path: Path, line: int | None, index: int, prefix: str,
                    scripts: Path | None = None) -> Sample:
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
        id=str(item.get("id") or f"{prefix}{index}"),
        prompt=item["description"].strip(),
        category=str(labels[0]) if labels else "os",
        gold={
            "init": [x for x in inits if x],
            "start": start,
            "example": example,
            "judge": judge,
            "base": str(path.parent),
            "scripts": str(scripts) if scripts else None,
        },
        source=f"{path}:{line}" if line else str(path),
    )



# (task file, its scripts folder or None, id prefix)
TaskFile = tuple[Path, "Path | None", str]


def load_agentbench_os(path: str | Path, *, prefix: str | None = None) -> list[Sample]:
    """Tasks from a task file, an AgentBench folder or a config (see the module docstring)."""
    samples: list[Sample] = []
    for file, scripts, file_prefix in os_task_files(path, prefix=prefix):
        samples += _load_file(file, scripts, file_prefix)
    return samples


def os_task_files(path: str | Path, *, prefix: str | None = None) -> list[TaskFile]:
    """The task files `path` stands for, each with its scripts folder and id prefix."""
    path = Path(path)
    spec = ""
    if "#" in path.name and not path.exists():
        name, spec = path.name.split("#", 1)
        path = path.with_name(name)
    if path.suffix.lower() in CONFIG_SUFFIXES or (path.suffix.lower() == ".json" and _is_config_list(path)):
        return _config_files(path, spec or DEFAULT_CONFIG)
    if path.is_dir():
        return _folder_files(path, prefix)
    return [(path, _scripts_for(path), f"{prefix or path.stem}-")]


def _load_file(path: Path, scripts: Path | None, prefix: str) -> list[Sample]:
    data = read_json(path)
    items = data if isinstance(data, list) else [data]
    lines = json_item_lines(path, len(items)) if isinstance(data, list) else [1]
    return [_item_to_sample(item, path, lines[i], i, prefix, scripts) for i, item in enumerate(items)]


# -- AgentBench's folder layout ----------------------------------------------------------------
def _group_prefix(group: str) -> str:
    """AgentBench's os-std prefixes (`std-001-`) for data/1..7; the group name otherwise."""
    return f"std-{int(group):03d}-" if group.isdigit() else f"{group}-"


def _scripts_for(file: Path) -> Path | None:
    """`data/N/x.json` -> `scripts/N/`; `data/x.json` -> `scripts/x/` (when that folder exists)."""
    parent = file.parent
    candidates = [parent.parent.parent / "scripts" / parent.name, parent.parent / "scripts" / file.stem,
                  parent / "scripts"]
    return next((c for c in candidates if c.is_dir()), None)


def _folder_files(folder: Path, prefix: str | None) -> list[TaskFile]:
    data = folder / "data" if (folder / "data").is_dir() and (folder / "scripts").is_dir() else folder
    groups = sorted((d for d in data.iterdir() if d.is_dir() and list(d.glob("*.json"))),
                    key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name))
    scripts_root = data.parent / "scripts"
    if data.name == "data" and scripts_root.is_dir() and groups:
        # AgentBench's own layout: the os-std set, data/N/*.json with scripts/N/.
        return [(file, scripts_root / g.name if (scripts_root / g.name).is_dir() else None,
                 f"{prefix}-{g.name}-{file.stem}-" if prefix else f"{_group_prefix(g.name)}{file.stem}-")
                for g in groups for file in sorted(g.glob("*.json"))]
    files = sorted(folder.rglob("*.json"))
    if not files:
        raise TaskFileError(folder, None, "no *.json task files in this folder")
    out = []
    for file in files:
        rel = file.relative_to(folder).with_suffix("").as_posix().replace("/", "-")
        out.append((file, _scripts_for(file), f"{prefix or folder.name}-{rel}-"))
    return out


# -- configs -----------------------------------------------------------------------------------
def _is_config_list(path: Path) -> bool:
    """A JSON file that lists task files (`problem_file` entries) rather than tasks."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return False
    entries = data.get("files") if isinstance(data, dict) else data
    return isinstance(entries, list) and bool(entries) and all(
        isinstance(e, dict) and "problem_file" in e for e in entries)


def _read_config(path: Path) -> Any:
    if not path.is_file():
        raise TaskFileError(path, None, "file not found")
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json":
        return json.loads(text)
    try:
        import yaml
    except ImportError:
        raise TaskFileError(path, None, "reading a YAML config needs PyYAML: pip install 'glm-agent[evals]'") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TaskFileError(path, None, f"invalid YAML: {exc}") from None


def _config_entries(path: Path, data: Any, name: str) -> list[Any]:
    """The `files` list of a config: a bare list, `{files: [...]}`, or AgentBench's task config
    (`NAME: {parameters: {data_config: {files: [...]}}}`)."""
    if isinstance(data, list):
        return data
    if not isinstance(data, dict):
        raise TaskFileError(path, None, "expected a list of {problem_file, script_dir} or AgentBench's os.yaml")
    if "files" in data:
        return data["files"]
    if "data_config" in data:
        return data["data_config"].get("files") or []
    configs = {k: v for k, v in data.items()
               if isinstance(v, dict) and isinstance(v.get("parameters"), dict) and "data_config" in v["parameters"]}
    if name not in configs:
        have = ", ".join(configs) or "none"
        raise TaskFileError(path, None, f"no task set {name!r} in this config (it has: {have}); "
                                        f"name one as {path.name}#NAME")
    return configs[name]["parameters"]["data_config"].get("files") or []


def _config_files(path: Path, name: str) -> list[TaskFile]:
    entries = _config_entries(path, _read_config(path), name)
    out: list[TaskFile] = []
    for n, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or not isinstance(entry.get("problem_file"), str):
            raise TaskFileError(path, None, f"entry {n} needs a 'problem_file' (a path or glob)")
        pattern = entry["problem_file"]
        base = _base_for(path, pattern)
        files = sorted(Path(p) for p in glob.glob(str(base / pattern))
                       if p.endswith(".json"))  # AgentBench also reads .jsonl; its OS data has none
        if not files:
            raise TaskFileError(path, None, f"entry {n}: no task files match {pattern!r} (looked in {base})")
        scripts = entry.get("script_dir")
        script_dir = (base / scripts) if isinstance(scripts, str) else None
        prefix = str(entry.get("index_prefix") or f"{n}-")
        out += [(f, script_dir, f"{prefix}{f.stem}-") for f in files]
    return out


def _base_for(config: Path, pattern: str) -> Path:
    """The folder relative paths of a config start from: its own, or the nearest one above it
    where `pattern` matches (AgentBench's os.yaml names paths from the repository root)."""
    if Path(pattern).is_absolute():
        return Path("/")
    for folder in [config.parent, *config.parent.parents]:
        if glob.glob(str(folder / pattern)):
            return folder
    return config.parent
