"""Pre-quantized checkpoints: written by `glm-agent model quantize`, loaded without the original.

A folder holds
    glm_agent_config.json          the `ModelConfig` with `quant` filled (the marker
                                   `open_checkpoint` routes on)
    model-00001.safetensors ...    canonical names; each quantized linear stores
                                   `<name>.qweight`, `.scales` (+ `.zeros` for int4) and `.bias`
                                   in the portable format of `glm_agent.engine.quant`
    model.safetensors.index.json   weight map
    tokenizer.json / tokenizer.model, tokenizer_config.json (chat template), generation_config.json

Writing streams the source tensor by tensor (each linear is quantized on arrival), so peak memory
is one source tensor in fp32 plus one output shard: a 9B model quantizes in well under 24 GiB.
The folder is written under a temporary name of its own (unique per call) and renamed at the
end: a failure never leaves a half-written checkpoint, and two processes writing the same folder
never touch each other's files. `quantize_cached` adds a lock so that the second one waits and
reuses the first one's result. Loading reads the stored tensors as they are; it never re-quantizes.

Size: such a folder can be larger than the GGUF it came from. Of Qwen2.5-Coder-1.5B's 1.29 GB
as int4-g128 with the head quantized, 0.47 GB is the token embedding (151,936 x 1,536), which
the engine looks rows up in and so keeps in bf16 (the GGUF stores it as Q4_K, 0.13 GB); the
int4 lm_head is 0.12 GB and the linears 0.70 GB (4 bits plus a bf16 scale and zero per 128
weights: 4.25 bits, as Q4_K's 4.5).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from glm_agent.engine.config import ModelConfig
from glm_agent.engine.errors import CheckpointError, QuantError

__all__ = [
    "QUANTIZED_CONFIG",
    "QUANTIZED_LINEARS",
    "quantized_shapes",
    "save_quantized_checkpoint",
    "quantize_checkpoint",
    "quantize_cached",
    "load_quantized_checkpoint",
]

QUANTIZED_CONFIG = "glm_agent_config.json"
QUANTIZED_LINEARS = ("attn.qkv", "attn.o", "mlp.gate_up", "mlp.down")
_INDEX = "model.safetensors.index.json"
_SHARD_BYTES = 2 << 30
_LINEAR_WEIGHT = re.compile(r"layers\.\d+\.(?:attn\.qkv|attn\.o|mlp\.gate_up|mlp\.down)\.weight$")


def _is_quantized(name: str, quant: dict) -> bool:
    return bool(_LINEAR_WEIGHT.match(name)) or (name == "lm_head.weight" and quant["lm_head"])


def _cost(name: str, quant: dict) -> int:
    return 3 if _is_quantized(name, quant) else 1


def quantized_shapes(config: ModelConfig) -> dict[str, tuple[tuple[int, ...], str]]:
    """Canonical name -> (shape, dtype name) of every tensor a quantized checkpoint must hold."""
    from glm_agent.engine.loaders.safetensors import expected_shapes

    quant = config.quant
    out: dict[str, tuple[tuple[int, ...], str]] = {}
    for name, shape in expected_shapes(config).items():
        if not _is_quantized(name, quant):
            out[name] = (shape, "float")
            continue
        base = name.removesuffix(".weight")
        n, k = shape
        if quant["bits"] == 8:
            out[base + ".qweight"] = ((n, k), "int8")
            out[base + ".scales"] = ((n,), "bfloat16")
        else:
            groups = math.ceil(k / quant["group_size"])
            out[base + ".qweight"] = ((n, groups * quant["group_size"] // 2), "uint8")
            out[base + ".scales"] = ((n, groups), "bfloat16")
            out[base + ".zeros"] = ((n, groups), "bfloat16")
    return out


# ---------------------------------------------------------------------------- writing


def save_quantized_checkpoint(
    config: ModelConfig,
    weights: Iterable[tuple[str, Any]],
    dst: str | Path,
    quant: Any,
    *,
    float_dtype: Any = None,
    shard_bytes: int = _SHARD_BYTES,
    extra_files: Callable[[Path], None] | None = None,
    progress: Callable[[str], None] | None = None,
    overwrite: bool = False,
    steps: Callable[[int, int], None] | None = None,
) -> Path:
    """Quantize a float checkpoint stream `(canonical name, tensor)` into folder `dst`.

    `float_dtype` (default bf16) is what unquantized tensors (embeddings, norms, biases, a float
    lm_head) are stored as. `extra_files(tmp_folder)` adds tokenizer / template files.
    `progress(name)` is called before each tensor is quantized; `steps(done, total)` after each
    source tensor, counting weights (for a progress bar).
    """
    import torch
    from safetensors.torch import save_file

    from glm_agent.engine.quant import normalize_quant, quantize_int4, quantize_int8

    float_dtype = float_dtype or torch.bfloat16
    try:
        q = normalize_quant(quant)
    except QuantError as e:
        raise CheckpointError(str(e)) from e
    if q is None:
        raise CheckpointError("save_quantized_checkpoint needs bits=4 or bits=8")
    if config.quant is not None:
        raise CheckpointError("the source checkpoint is already quantized; quantize the float original")
    dst = Path(dst).expanduser()
    if dst.exists() and not dst.is_dir():
        raise CheckpointError(f"{dst} is a file; give a folder path for the quantized checkpoint")
    if dst.exists() and any(dst.iterdir()):
        if not overwrite:
            raise CheckpointError(f"{dst} exists and is not empty; choose a new folder or pass overwrite=True (CLI: --force)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    # Unique per call: another process writing the same `dst` has a folder of its own.
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=_PARTIAL, dir=dst.parent))

    out_config = ModelConfig.from_dict(config.to_dict())
    out_config.quant = q
    tied_quant_head = config.tie_embeddings and q["lm_head"]
    if tied_quant_head:
        out_config.tie_embeddings = False  # the quantized head is its own tensor from now on
    shapes = quantized_shapes(out_config)
    from glm_agent.engine.loaders.safetensors import expected_shapes

    # Progress counts weights, a quantized one as 3 (measured on 2 cores: reading a Q4_K weight
    # and quantizing it costs about 3x reading one alone), so the ETA holds from the start.
    source_shapes = dict(expected_shapes(config))
    if tied_quant_head:
        source_shapes["lm_head.weight"] = source_shapes["embed.weight"]
    total = sum(math.prod(shape) * _cost(name, q) for name, shape in source_shapes.items())
    done = 0
    if steps:
        steps(0, total)

    weight_map: dict[str, str] = {}
    shard: dict[str, torch.Tensor] = {}
    state = {"bytes": 0, "count": 0}

    def flush() -> None:
        if not shard:
            return
        state["count"] += 1
        fname = f"model-{state['count']:05d}.safetensors"
        save_file(shard, str(tmp / fname), metadata={"format": "pt", "glm_agent_quant": json.dumps(q)})
        for key in shard:
            weight_map[key] = fname
        shard.clear()
        state["bytes"] = 0

    def put(name: str, t: torch.Tensor) -> None:
        if name in weight_map or name in shard:
            raise CheckpointError(f"tensor {name!r} appears twice in the source checkpoint")
        want = shapes.get(name)
        if want is None:
            raise CheckpointError(f"unexpected tensor {name!r} for a {config.arch} model")
        if tuple(t.shape) != want[0]:
            raise CheckpointError(f"shape mismatch for {name}: expected {want[0]}, got {tuple(t.shape)}")
        shard[name] = t.contiguous()
        state["bytes"] += t.numel() * t.element_size()
        if state["bytes"] >= shard_bytes:
            flush()

    try:
        with torch.no_grad():
            for name, tensor in weights:
                tensor = torch.as_tensor(tensor)
                sources = [(name, tensor)]
                if tied_quant_head and name == "embed.weight":
                    sources.append(("lm_head.weight", tensor))
                for src_name, t in sources:
                    if _is_quantized(src_name, q):
                        if progress:
                            progress(src_name)
                        base = src_name.removesuffix(".weight")
                        if q["bits"] == 8:
                            qw, s = quantize_int8(t)
                            put(base + ".qweight", qw)
                            put(base + ".scales", s)
                        else:
                            qw, s, z = quantize_int4(t, q["group_size"])
                            put(base + ".qweight", qw)
                            put(base + ".scales", s)
                            put(base + ".zeros", z)
                    else:
                        put(src_name, t.to(float_dtype) if t.is_floating_point() else t)
                    done += t.numel() * _cost(src_name, q)
                    if steps:
                        steps(min(done, total), total)
                del tensor, sources
            flush()
            missing = sorted(set(shapes) - set(weight_map))
            if missing:
                more = f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""
                raise CheckpointError(f"source checkpoint lacks {len(missing)} tensors: {', '.join(missing[:5])}{more}")
            index = {"metadata": {"quant": q}, "weight_map": weight_map}
            (tmp / _INDEX).write_text(json.dumps(index, indent=1))
            out_config.save(tmp / QUANTIZED_CONFIG)
            if extra_files is not None:
                extra_files(tmp)
        if overwrite and dst.exists():
            shutil.rmtree(dst)
        try:
            os.rename(tmp, dst)  # atomic; replaces only an empty folder
        except OSError as e:
            raise CheckpointError(
                f"{dst} was written by another process meanwhile ({e.strerror}); use it, or pass "
                "overwrite=True (CLI: --force) to replace it"
            ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


def quantize_checkpoint(
    src: str | Path,
    dst: str | Path,
    bits: int,
    group_size: int | None = 128,
    include_lm_head: bool = False,
    *,
    progress: Callable[[str], None] | None = None,
    overwrite: bool = False,
    float_dtype: Any = None,
    steps: Callable[[int, int], None] | None = None,
) -> Path:
    """`glm-agent model quantize`: any source `open_checkpoint` reads -> a standalone folder."""
    import torch

    from glm_agent.engine.loading import open_checkpoint
    from glm_agent.engine.quant import normalize_quant

    quant = {"bits": bits, "group_size": group_size if bits == 4 else None, "lm_head": include_lm_head}
    try:
        normalize_quant(quant)  # fail on bad settings before reading gigabytes
    except QuantError as e:
        raise CheckpointError(str(e)) from e
    out = Path(dst).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise CheckpointError(f"{out} exists and is not empty; choose a new folder or pass overwrite=True (CLI: --force)")
    ck = open_checkpoint(src)
    if ck.config.quant is not None:
        raise CheckpointError(f"{src} is already quantized ({ck.config.quant}); quantize the float original")
    return save_quantized_checkpoint(
        ck.config,
        ck.weights(torch.float32),  # GGUF dequantizes straight to fp32: quantize from full precision
        dst,
        quant,
        float_dtype=float_dtype,
        extra_files=ck.save_tokenizer_files,
        progress=progress,
        overwrite=overwrite,
        steps=steps,
    )


_PARTIAL = ".partial"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (created if needed), held across processes until the block
    ends; the kernel drops it when a process dies, so a crash never leaves it stuck."""
    try:
        import fcntl
    except ImportError:  # not POSIX: unique temp folders + an atomic rename still keep it safe
        yield
        return
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def quantize_cached(
    src: str | Path,
    folder: str | Path,
    bits: int,
    group_size: int | None = 128,
    include_lm_head: bool = False,
    *,
    steps: Callable[[int, int], None] | None = None,
    waiting: Callable[[], None] | None = None,
) -> Path:
    """Quantize `src` into the cache `folder` unless it is already there; safe when several
    processes ask for the same folder at once: one writes it, the others wait (`waiting()` is
    called when they do) and then use it. `folder` is the cache's to manage: a folder there
    without a complete checkpoint is replaced."""
    folder = Path(folder).expanduser()
    if (folder / QUANTIZED_CONFIG).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = folder.with_name(f".{folder.name}.lock")
    if waiting is not None and _busy(lock):
        waiting()
    with _locked(lock):
        if (folder / QUANTIZED_CONFIG).is_file():
            return folder  # another process finished it while we waited
        # Left by a process killed mid-write (we hold the lock: nobody writes them now).
        for stale in folder.parent.iterdir():
            if stale.name.startswith(f".{folder.name}.") and stale.name.endswith(_PARTIAL):
                shutil.rmtree(stale, ignore_errors=True)
        if folder.is_dir():  # no config: not ours to keep (ours appear whole, by rename)
            shutil.rmtree(folder)
        return quantize_checkpoint(src, folder, bits, group_size, include_lm_head, steps=steps)


def _busy(lock: Path) -> bool:
    """Whether another process holds `lock` right now."""
    try:
        import fcntl
    except ImportError:
        return False
    try:
        with open(lock, "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


# ---------------------------------------------------------------------------- reading


def _shard_files(folder: Path) -> list[Path]:
    index = folder / _INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"{index} is not a valid weight index ({e}); re-run glm-agent model quantize") from e
        return [folder / f for f in dict.fromkeys(weight_map.values())]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"no *.safetensors files in {folder}; re-run glm-agent model quantize")
    return files


def load_quantized_checkpoint(folder: str | Path) -> tuple[ModelConfig, Iterator[tuple[str, Any]]]:
    """Config (with `quant`) and a lazy iterator of the stored tensors, validated up front:
    every expected tensor present with the right shape and dtype, nothing extra."""
    from safetensors import safe_open

    from glm_agent.engine.quant import normalize_quant

    folder = Path(folder).expanduser()
    cfg_path = folder / QUANTIZED_CONFIG
    if not cfg_path.is_file():
        raise CheckpointError(f"{folder} has no {QUANTIZED_CONFIG}: not a glm-agent quantized checkpoint")
    try:
        config = ModelConfig.load(cfg_path)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{cfg_path} is not a valid model config ({e}); re-run glm-agent model quantize") from e
    if config.quant is None:
        raise CheckpointError(f"{cfg_path} has no 'quant' entry: this folder holds no quantized weights")
    try:
        config.quant = normalize_quant(config.quant)
    except QuantError as e:
        raise CheckpointError(f"{cfg_path}: {e}") from e

    expected = quantized_shapes(config)
    files = _shard_files(folder)
    where: dict[str, Path] = {}
    for path in files:
        if not path.is_file():
            raise CheckpointError(f"missing weights file {path}; re-run glm-agent model quantize")
        try:
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():
                    shape, dtype = expected.get(key, (None, None))
                    if shape is None:
                        raise CheckpointError(f"unexpected tensor {key!r} in {path.name}")
                    sl = f.get_slice(key)
                    got_shape, got_dtype = tuple(sl.get_shape()), sl.get_dtype()
                    if got_shape != shape:
                        raise CheckpointError(f"{key} in {path.name} has shape {got_shape}, expected {shape}")
                    if dtype != "float" and _DTYPES.get(got_dtype) != dtype:
                        raise CheckpointError(f"{key} in {path.name} has dtype {got_dtype}, expected {dtype}")
                    where[key] = path
        except CheckpointError:
            raise
        except Exception as e:  # safetensors' own errors: truncated or corrupt file
            raise CheckpointError(f"cannot read {path}: {e}; re-run glm-agent model quantize") from e
    missing = sorted(set(expected) - set(where))
    if missing:
        more = f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""
        raise CheckpointError(f"{folder} is missing {len(missing)} tensors: {', '.join(missing[:5])}{more}")
    return config, _iterate(files, where)


_DTYPES = {"I8": "int8", "U8": "uint8", "BF16": "bfloat16"}


def _iterate(files: list[Path], where: dict[str, Path]) -> Iterator[tuple[str, Any]]:
    from safetensors import safe_open

    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                if where.get(key) == path:
                    t = f.get_tensor(key)
                    # Tensors read from the file may sit at any byte offset; CPU kernels want
                    # 64-byte aligned data (see quant._aligned), so re-home the odd ones.
                    yield key, (t if t.data_ptr() % 64 == 0 else t.clone())
