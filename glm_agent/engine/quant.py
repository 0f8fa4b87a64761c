"""Weight-only int8 / int4 quantization behind one `QuantLinear`.

Formats (what a checkpoint stores; portable across devices):

    int8  per output channel, symmetric   qweight int8 [N, K]      scales bf16 [N]
    int4  per group of G inputs, min/max  qweight uint8 [N, Kp/2]  scales, zeros bf16 [N, Kp/G]
          two values per byte, high nibble = even k; w = (q - 8) * scale + zero (gpt-fast / tinygemm);
          Kp = K rounded up to G (the forward pads x with zeros, so padded columns add nothing).

The packed int4 layouts the kernels read are device specific (CPU: `_convert_weight_to_int4pack_for_cpu`,
CUDA: tinygemm `_convert_weight_to_int4pack`), so they are built from the portable tensors at first use
(or by `prepare_quantized` before CUDA-graph capture) and never saved.

Kernel choice by device and by the number of rows M in one call (see `choose_kernel`): the packed
matrix-vector kernels win at small M (decode); beyond `MAX_KERNEL_ROWS` (a prefill chunk) the "dequant"
path takes over: dequantize the weight just in time, a block of output rows at a time, and run the dense
GEMM in the device's fastest dense dtype (see `dense_dtype`). Where that dtype is fp32 (AVX2 CPUs) the
GEMM is no faster than the int4 kernel, so there int4 stays on its kernel. `keep_dense_weights` keeps the
dense weight instead (memory for speed, by option). Measured on an H200 with GLM-4-9B linear shapes: tinygemm int4 is 1.78x
faster than bf16 at M=1, 0.56x at M=16, 0.16x at M=64. The "reference" kernel (dequantize to fp32 +
matmul) is the portable truth every other path is tested against.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glm_agent.engine.errors import QuantError

__all__ = [
    "QuantError",
    "QUANT_FORMAT",
    "INT4_GROUP_SIZES",
    "MAX_KERNEL_ROWS",
    "MAX_KERNEL_ROWS_DENSE_KEPT",
    "normalize_quant",
    "quantize_int8",
    "dequantize_int8",
    "quantize_int4",
    "dequantize_int4",
    "pack_int4",
    "unpack_int4",
    "QuantLinear",
    "choose_kernel",
    "kernel_names",
    "dense_dtype",
    "keep_dense_weights",
    "dense_weight_bytes",
    "quantize_linears",
    "prepare_quantized",
]

QUANT_FORMAT = "glm-agent-weight-only-v1"
INT4_GROUP_SIZES = (32, 64, 128, 256)

# Largest M that still uses the packed kernel, per (backend, bits); above it: dequantize + GEMM.
# CUDA int4: estimated from
# H200 timings (tinygemm 0.26 ms vs bf16 0.14 ms per GLM-4-9B layer at M=16, 0.93 vs 0.15 at
# M=64) and the eager dequantize pass (~15 bytes moved per weight, ~7 bf16 GEMVs = ~1.1 ms per
# layer), which puts the crossover near M=90. Not yet measured on a GPU: run
# `bench/quant_kernels.py --device cuda` there and adjust.
# Backends: "cpu" = a CPU without native bf16 math (AVX2: the dense GEMM runs in fp32, which barely
# beats the packed kernels), "cpu_bf16" = AVX512-BF16 / AMX (bf16 GEMMs several times faster).
# CPU rows measured with bench/quant_kernels.py, 2 threads, shapes of the embedded 1.5B model.
MAX_KERNEL_ROWS: dict[tuple[str, int], int] = {
    # AVX2 (EPYC, 2 cores): dequantize + fp32 GEMM is 0.8-1.0x the int4 kernel from M=200 to 1024
    ("cpu", 4): 1 << 30,
    ("cpu", 8): 128,  # AVX2: int8 kernel 2x faster at M=64, 0.6x at M=200, 0.45x at M=512
    ("cpu_bf16", 4): 256,  # AVX-512 box: int4 kernel >= 2x faster than dequantize + bf16 GEMM to M=256
    ("cpu_bf16", 8): 64,  # int8 kernel wins to M=64, loses ~1.5-3x at M=256
    ("cuda", 4): 64,
    ("cuda", 8): 1 << 30,  # the cuda_int8 kernel is itself "cast + GEMM"
}
# The same crossovers when `keep_dense_weights` holds the dense weight (no dequantize pass to pay).
MAX_KERNEL_ROWS_DENSE_KEPT: dict[tuple[str, int], int] = {
    ("cpu", 4): 128,  # AVX2: int4 kernel 1.3-1.6x faster at M=64, dense fp32 1.3-1.6x faster at M=200
    ("cpu", 8): 64,  # AVX2: int8 kernel 1.2x faster at M=64, dense 1.6x faster at M=200
    # Not measured yet (estimated from whole-model prefill on the AVX-512 box: bf16 weights 6x the
    # int4 kernel at M=198); run bench/quant_kernels.py on such a CPU and adjust.
    ("cpu_bf16", 4): 32,
    ("cpu_bf16", 8): 32,
    ("cuda", 4): 16,  # tinygemm 0.56x bf16 at M=16 (H200 timings above)
    ("cuda", 8): 1 << 30,
}
# Dequantize at most this many bytes of dense weight at a time: bounds the temporary (lm_head is
# 151936 rows). Not smaller: on AVX2, 8-32 MiB tiles made the GEMMs 1.2-2x slower in all (no L2 win).
DENSE_TILE_BYTES = 128 << 20

_ROW_CHUNK = 4096  # quantize this many output rows at a time: bounds fp32 temporaries for lm_head


# ---------------------------------------------------------------------------- settings


def normalize_quant(quant: Any) -> dict | None:
    """Accept None, "int4", "int8", 4, 8 or a dict; return the canonical dict stored in configs.

    Canonical: {"format", "bits", "group_size" (int4 only, else None), "lm_head"}.
    """
    if quant is None or quant is False:
        return None
    if isinstance(quant, str):
        text = quant.strip().lower()
        if text in ("", "none", "float", "bf16", "fp16", "fp32"):
            return None
        if text not in ("int4", "int8", "4", "8"):
            raise QuantError(f"unknown quantization {quant!r}: use 'int4', 'int8' or None")
        quant = {"bits": int(text.removeprefix("int"))}
    elif isinstance(quant, int) and not isinstance(quant, bool):
        quant = {"bits": quant}
    if not isinstance(quant, dict):
        raise QuantError(f"quantization must be 'int4', 'int8', None or a dict, got {type(quant).__name__}")
    known = {"format", "bits", "group_size", "lm_head"}
    unknown = set(quant) - known
    if unknown:
        raise QuantError(f"unknown quantization keys {sorted(unknown)}; allowed: {sorted(known)}")
    fmt = quant.get("format", QUANT_FORMAT)
    if fmt != QUANT_FORMAT:
        raise QuantError(f"quantization format {fmt!r} is not supported (expected {QUANT_FORMAT!r})")
    bits = quant.get("bits")
    if bits not in (4, 8):
        raise QuantError(f"bits must be 4 or 8, got {bits!r}")
    group_size = quant.get("group_size")
    if bits == 4:
        group_size = 128 if group_size is None else group_size
        if group_size not in INT4_GROUP_SIZES:
            raise QuantError(f"int4 group_size must be one of {INT4_GROUP_SIZES}, got {group_size!r}")
    elif group_size is not None:
        raise QuantError("int8 is per output channel: leave group_size unset")
    return {"format": QUANT_FORMAT, "bits": bits, "group_size": group_size, "lm_head": bool(quant.get("lm_head", False))}


# ---------------------------------------------------------------------------- int8


def quantize_int8(w: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric per-output-channel int8: w ~= q * scale, |error| <= scale / 2 (scale stored in bf16)."""
    _check_2d(w)
    qs, ss = [], []
    for chunk in w.split(_ROW_CHUNK):
        c = chunk.float()
        amax = c.abs().amax(dim=1).clamp(min=1e-12)  # all-zero rows: any positive scale gives q = 0
        # Quantize against the stored (bf16-rounded) scale so dequantization has no systematic error.
        scale = (amax / 127).to(torch.bfloat16)
        qs.append((c * (1 / scale.float())[:, None]).round_().clamp_(-127, 127).to(torch.int8))
        ss.append(scale)
    return torch.cat(qs), torch.cat(ss)


def dequantize_int8(qweight: Tensor, scales: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    return qweight.to(dtype) * scales.to(dtype)[:, None]


# ---------------------------------------------------------------------------- int4


def pack_int4(q: Tensor) -> Tensor:
    """[N, K] values 0..15 -> uint8 [N, K/2], high nibble = even k (tinygemm's input order)."""
    q = q.to(torch.uint8)
    return (q[:, 0::2] << 4) | q[:, 1::2]


def unpack_int4(packed: Tensor) -> Tensor:
    """uint8 [N, K/2] -> uint8 [N, K] values 0..15."""
    return torch.stack((packed >> 4, packed & 0xF), dim=-1).reshape(packed.shape[0], -1)


def quantize_int4(w: Tensor, group_size: int = 128) -> tuple[Tensor, Tensor, Tensor]:
    """Asymmetric min/max int4 per group of `group_size` inputs (padded to a whole group).

    Returns (qweight uint8 [N, Kp/2], scales bf16 [N, Kp/G], zeros bf16 [N, Kp/G]);
    dequantized w = (q - 8) * scale + zero, |error| <= scale / 2 + bf16 rounding of zero.
    """
    _check_2d(w)
    if group_size not in INT4_GROUP_SIZES:
        raise QuantError(f"int4 group_size must be one of {INT4_GROUP_SIZES}, got {group_size!r}")
    n, k = w.shape
    kp = math.ceil(k / group_size) * group_size
    qs, ss, zs = [], [], []
    for chunk in w.split(_ROW_CHUNK):
        c = chunk.float()
        if kp != k:
            c = F.pad(c, (0, kp - k))
        c = c.view(chunk.shape[0], kp // group_size, group_size)
        lo, hi = torch.aminmax(c, dim=-1)
        scale = ((hi - lo) / 15).clamp(min=1e-12).to(torch.bfloat16)  # constant group: tiny scale, q = 8
        zero = (lo + 8 * scale.float()).to(torch.bfloat16)
        # q = (w - zero) / scale + 8 as one fused pass: w * (1/scale) + (8 - zero/scale)
        inv = 1 / scale.float()
        q = torch.addcmul((8 - zero.float() * inv)[..., None], c, inv[..., None]).round_().clamp_(0, 15)
        qs.append(pack_int4(q.view(chunk.shape[0], kp)))
        ss.append(scale)
        zs.append(zero)
    return torch.cat(qs), torch.cat(ss), torch.cat(zs)


def dequantize_int4(
    qweight: Tensor, scales: Tensor, zeros: Tensor, group_size: int, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Back to a dense [N, Kp] weight (padding columns included).

    Computed as q * scale + (zero - 8 * scale): unpacking writes straight into the output and the
    affine map runs in place, 4 passes over the weight instead of ~8 (this is the large-M path).
    """
    n, half = qweight.shape
    w = torch.empty(n, half, 2, dtype=dtype, device=qweight.device)
    w[..., 0] = qweight >> 4
    w[..., 1] = qweight & 0xF
    w = w.view(n, -1, group_size)
    s = scales.to(dtype)[..., None]
    w.mul_(s).add_(zeros.to(dtype)[..., None] - 8 * s)
    return w.view(n, -1)


def _check_2d(w: Tensor) -> None:
    if w.dim() != 2:
        raise QuantError(f"can only quantize 2-D weights, got shape {tuple(w.shape)}")
    if not w.is_floating_point():
        raise QuantError(f"can only quantize float weights, got {w.dtype}")


# ---------------------------------------------------------------------------- the module


class QuantLinear(nn.Module):
    """A weight-only quantized `nn.Linear`: same call, same output dtype as the input.

    Buffers (the state dict, portable): `qweight`, `scales`, `zeros` (int4 only), `bias` (optional).
    Set `kernel` to a name from `kernel_names()` to force a path (tests, benchmarks); None = auto.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        bits: int = 4,
        group_size: int | None = 128,
        device: torch.device | str | None = None,
        bias_dtype: torch.dtype = torch.bfloat16,
    ) -> None:
        super().__init__()
        if bits not in (4, 8):
            raise QuantError(f"bits must be 4 or 8, got {bits!r}")
        self.in_features, self.out_features, self.bits = in_features, out_features, bits
        self.kernel: str | None = None
        self.keep_dense = False  # see keep_dense_weights()
        if bits == 8:
            self.group_size = None
            self.register_buffer("qweight", torch.empty(out_features, in_features, dtype=torch.int8, device=device))
            self.register_buffer("scales", torch.empty(out_features, dtype=torch.bfloat16, device=device))
        else:
            if group_size not in INT4_GROUP_SIZES:
                raise QuantError(f"int4 group_size must be one of {INT4_GROUP_SIZES}, got {group_size!r}")
            self.group_size = group_size
            kp = math.ceil(in_features / group_size) * group_size
            self.register_buffer("qweight", torch.empty(out_features, kp // 2, dtype=torch.uint8, device=device))
            shape = (out_features, kp // group_size)
            self.register_buffer("scales", torch.empty(shape, dtype=torch.bfloat16, device=device))
            self.register_buffer("zeros", torch.empty(shape, dtype=torch.bfloat16, device=device))
        if bias:
            self.register_buffer("bias", torch.empty(out_features, dtype=bias_dtype, device=device))
        else:
            self.bias = None
        self._packed: dict[tuple, Any] = {}  # device-specific kernel forms, never saved

    @property
    def padded_in_features(self) -> int:
        return self.in_features if self.bits == 8 else self.qweight.shape[1] * 2

    @classmethod
    def from_linear(cls, linear: nn.Linear, bits: int, group_size: int | None = 128, empty: bool = False) -> "QuantLinear":
        """Quantize `linear` (or, with `empty=True`, only allocate, for a quantized state dict to fill)."""
        w = linear.weight
        has_bias = linear.bias is not None
        bias_dtype = linear.bias.dtype if has_bias else torch.bfloat16
        m = cls(linear.in_features, linear.out_features, has_bias, bits=bits, group_size=group_size,
                device=w.device, bias_dtype=bias_dtype)
        if empty or w.device.type == "meta":
            return m
        with torch.no_grad():
            if bits == 8:
                m.qweight, m.scales = quantize_int8(w)
            else:
                m.qweight, m.scales, m.zeros = quantize_int4(w, group_size)
            if has_bias:
                m.bias = linear.bias.detach().clone()
        return m

    def dequantize(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """The dense [N, K] weight this module computes with (padding dropped)."""
        if self.bits == 8:
            return dequantize_int8(self.qweight, self.scales, dtype)
        w = dequantize_int4(self.qweight, self.scales, self.zeros, self.group_size, dtype)
        return w[:, : self.in_features]

    def weight_bytes(self) -> int:
        """Bytes of weight data one small-M forward reads (for rooflines)."""
        n = self.qweight.numel() * self.qweight.element_size() + self.scales.numel() * 2
        if self.bits == 4:
            n += self.zeros.numel() * 2
        if self.bias is not None:
            n += self.bias.numel() * self.bias.element_size()
        return n

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise QuantError(f"QuantLinear expects {self.in_features} input features, got {x.shape[-1]}")
        # 2-D input (the decoder's flat rows) skips both reshapes: at batch-1 decode every
        # microsecond here is paid ~110 times per token.
        x2 = x if x.dim() == 2 else x.reshape(-1, self.in_features)
        name = self.kernel or choose_kernel(self, x2.device, x2.shape[0])
        y = _KERNELS[name](self, x2)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y if x.dim() == 2 else y.reshape(*x.shape[:-1], self.out_features)

    # -- device forms, built once per device/dtype and dropped whenever the buffers change
    def packed(self, key: tuple, build: Callable[[], Any]) -> Any:
        got = self._packed.get(key)
        if got is None:
            got = self._packed[key] = build()
        return got

    def _apply(self, fn, recurse=True):  # .to() / .cuda() / .half(): cached forms are stale
        self._packed.clear()
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args, **kwargs):
        self._packed.clear()
        return super()._load_from_state_dict(*args, **kwargs)

    def extra_repr(self) -> str:
        g = f", group_size={self.group_size}" if self.bits == 4 else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}{g}, bias={self.bias is not None}"


# ---------------------------------------------------------------------------- kernels


def _pad_x(m: QuantLinear, x: Tensor) -> Tensor:
    extra = m.padded_in_features - m.in_features
    return F.pad(x, (0, extra)) if extra else x


def _k_reference(m: QuantLinear, x: Tensor) -> Tensor:
    """Portable truth: dequantize to fp32, fp32 matmul."""
    w = m.dequantize(torch.float32)
    return F.linear(x.float(), w).to(x.dtype)


_BF16_CPU: list[bool] = []  # cached once: the CPU feature query is not free


def _cpu_has_bf16() -> bool:
    if not _BF16_CPU:
        cpu = torch.cpu
        native = getattr(cpu, "_is_avx512_bf16_supported", lambda: False)() or getattr(
            cpu, "_is_amx_tile_supported", lambda: False)()
        _BF16_CPU.append(bool(native))
    return _BF16_CPU[0]


def _backend(device: torch.device) -> str:
    if device.type == "cpu":
        return "cpu_bf16" if _cpu_has_bf16() else "cpu"
    return device.type


def dense_dtype(device: torch.device | str, x_dtype: torch.dtype = torch.bfloat16) -> torch.dtype:
    """The dtype of the dense GEMM on `device`: on CPU bf16 only where the CPU computes in bf16
    natively (AVX512-BF16 / AMX), else fp32 (measured on AVX2: a bf16 GEMM is 3-6x slower than fp32
    there, since it converts inside the kernel); elsewhere the activations' dtype."""
    device = torch.device(device)
    if device.type == "cpu":
        return torch.bfloat16 if _cpu_has_bf16() else torch.float32
    return x_dtype


def _dense_rows(m: QuantLinear, r0: int, r1: int, dtype: torch.dtype) -> Tensor:
    """Rows r0:r1 of the dense [N, Kp] weight in `dtype`: unpack into the output, then one fused
    w = q * scale + (zero - 8 * scale) pass in place (3 passes over the block in all)."""
    if m.bits == 8:
        w = m.qweight[r0:r1].to(dtype)
        return w.mul_(m.scales[r0:r1].to(dtype)[:, None])
    q = m.qweight[r0:r1]
    n, half = q.shape
    w = torch.empty(n, half, 2, dtype=dtype, device=q.device)
    w[..., 0] = q >> 4
    w[..., 1] = q & 0xF
    s = m.scales[r0:r1].to(dtype)[..., None]
    blocks = w.view(n, -1, m.group_size)
    torch.addcmul(m.zeros[r0:r1].to(dtype)[..., None] - 8 * s, blocks, s, out=blocks)
    return w.view(n, -1)


def _k_dequant(m: QuantLinear, x: Tensor) -> Tensor:
    """Large M (prefill): the dense GEMM on weights dequantized just in time, a tile of output rows
    at a time (`DENSE_TILE_BYTES`), or on the kept dense weight (`keep_dense_weights`)."""
    dtype = dense_dtype(x.device, x.dtype)
    xd = _pad_x(m, x).to(dtype)
    n, kp = m.out_features, m.padded_in_features
    if m.keep_dense:
        w = m.packed(("dense", x.device, dtype), lambda: _dense_rows(m, 0, n, dtype))
        return F.linear(xd, w).to(x.dtype)
    tile = max(16, DENSE_TILE_BYTES // (kp * dtype.itemsize))
    if tile >= n:
        return F.linear(xd, _dense_rows(m, 0, n, dtype)).to(x.dtype)
    y = torch.cat([F.linear(xd, _dense_rows(m, r, min(r + tile, n), dtype)) for r in range(0, n, tile)], dim=1)
    return y.to(x.dtype)


def _int4_scales_zeros(m: QuantLinear, n_pad: int) -> Tensor:
    """[Kp/G, Np, 2] bf16 (scale, zero) as the int4pack kernels read them; padded rows dequantize to 0."""
    sz = torch.stack((m.scales, m.zeros), dim=-1)  # [N, Kp/G, 2]
    if n_pad:
        sz = F.pad(sz, (0, 0, 0, 0, 0, n_pad))
    return sz.transpose(0, 1).contiguous()


def _k_cpu_int4(m: QuantLinear, x: Tensor) -> Tensor:
    def build():
        n_pad = -m.out_features % 16  # the CPU pack wants N % 16 == 0
        q = unpack_int4(m.qweight).to(torch.int32)
        q = F.pad(q, (0, 0, 0, n_pad), value=8)
        w = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.contiguous(), 8)
        return w, _int4_scales_zeros(m, n_pad), n_pad

    w, sz, n_pad = m.packed(("cpu_int4", x.device), build)
    # bf16 activations: the CPU kernel is ~40x slower with fp32 inputs (measured, 2 cores).
    y = torch.ops.aten._weight_int4pack_mm_for_cpu(_pad_x(m, x).to(torch.bfloat16).contiguous(), w, m.group_size, sz)
    if n_pad:
        y = y[:, : m.out_features]
    return y.to(x.dtype)


def _aligned(t: Tensor) -> Tensor:
    # The CPU int8 kernel crashes on weights that are not 64-byte aligned (seen with tensors
    # read from safetensors files); torch's allocator aligns fresh tensors.
    return t if t.data_ptr() % 64 == 0 else t.clone()


def _k_cpu_int8(m: QuantLinear, x: Tensor) -> Tensor:
    w, scales = m.packed(
        ("cpu_int8", x.device), lambda: (_aligned(m.qweight), _aligned(m.scales.to(torch.bfloat16).contiguous()))
    )
    y = torch.ops.aten._weight_int8pack_mm(x.to(torch.bfloat16).contiguous(), w, scales)
    return y.to(x.dtype)


def _cuda_inner_k_tiles(kp: int) -> int:
    for tiles in (8, 4, 2):
        if kp % (tiles * 16) == 0:
            return tiles
    raise QuantError(f"int4 CUDA kernel needs in_features padded to a multiple of 32, got {kp}")


def _k_cuda_int4(m: QuantLinear, x: Tensor) -> Tensor:
    """tinygemm (`_weight_int4pack_mm`): bf16 activations, sm80+, best at M <= ~16."""
    def build():
        n_pad = -m.out_features % 8  # tinygemm wants N % 8 == 0
        q = F.pad(m.qweight, (0, 0, 0, n_pad), value=0x88) if n_pad else m.qweight
        w = torch.ops.aten._convert_weight_to_int4pack(q.contiguous(), _cuda_inner_k_tiles(m.padded_in_features))
        return w, _int4_scales_zeros(m, n_pad)

    w, sz = m.packed(("cuda_int4", x.device), build)
    y = torch.ops.aten._weight_int4pack_mm(_pad_x(m, x).to(torch.bfloat16).contiguous(), w, m.group_size, sz)
    return y[:, : m.out_features].to(x.dtype)


def _k_cuda_int8(m: QuantLinear, x: Tensor) -> Tensor:
    """gpt-fast's int8 weight-only form; fast at M=1 only under torch.compile with coordinate-descent
    tuning (Inductor fuses the cast into a GEMV). `_weight_int8pack_mm` on CUDA is a naive kernel
    ~13x slower than bf16 (aten/src/ATen/native/cuda/int8mm.cu: one thread per output), so it is
    never used here."""
    scales = m.packed(("cuda_int8", x.device, x.dtype), lambda: m.scales.to(x.dtype))
    return F.linear(x, m.qweight.to(x.dtype)) * scales


_KERNELS: dict[str, Callable[[QuantLinear, Tensor], Tensor]] = {
    "reference": _k_reference,
    "dequant": _k_dequant,
    "cpu_int4": _k_cpu_int4,
    "cpu_int8": _k_cpu_int8,
    "cuda_int4": _k_cuda_int4,
    "cuda_int8": _k_cuda_int8,
}


def kernel_names(m: QuantLinear, device_type: str) -> list[str]:
    """Every path that can run module `m` on `device_type` (for tests and benchmarks)."""
    names = ["reference", "dequant"]
    packed = f"{device_type}_int{m.bits}"
    if packed in _KERNELS and _packed_ok(m, packed):
        names.append(packed)
    return names


_TINYGEMM: list[bool] = []  # cached once: keeps the forward free of driver queries (torch.compile)


def _tinygemm_ok() -> bool:
    if not _TINYGEMM:
        _TINYGEMM.append(torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0))
    return _TINYGEMM[0]


def _packed_ok(m: QuantLinear, name: str) -> bool:
    if name == "cuda_int4":
        return _tinygemm_ok()  # tinygemm needs sm80+
    if name == "cpu_int8":
        # Measured: the CPU int8 kernel returns garbage (and can crash) unless K % 16 == 0.
        return m.in_features % 16 == 0
    return True


def choose_kernel(m: QuantLinear, device: torch.device, m_rows: int) -> str:
    """The fastest path for `m_rows` rows on `device` (see MAX_KERNEL_ROWS)."""
    table = MAX_KERNEL_ROWS_DENSE_KEPT if m.keep_dense else MAX_KERNEL_ROWS
    limit = table.get((_backend(device), m.bits))
    if limit is None or m_rows > limit:
        return "dequant"  # large M, or mps / xpu / ...: portable path
    name = f"{device.type}_int{m.bits}"
    return name if _packed_ok(m, name) else "dequant"


# ---------------------------------------------------------------------------- whole models


def quantize_linears(module: nn.Module, quant: Any, empty: bool = False) -> nn.Module:
    """Replace every `nn.Linear` below `module` by a `QuantLinear`, in place.

    A child named `lm_head` is kept float unless `quant["lm_head"]`. With `empty=True` the
    replacements are only allocated (for `load_state_dict` of a pre-quantized checkpoint); the
    float weights are not read. Returns `module` (or its replacement if `module` is itself a Linear).
    """
    q = normalize_quant(quant)
    if q is None:
        return module
    if isinstance(module, nn.Linear):
        return QuantLinear.from_linear(module, q["bits"], q["group_size"], empty=empty)
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, nn.Linear):
                continue
            if name == "lm_head" and not q["lm_head"]:
                continue
            setattr(parent, name, QuantLinear.from_linear(child, q["bits"], q["group_size"], empty=empty))
            del child  # free the float weight as we go: the point of layer-by-layer quantization
    return module


def keep_dense_weights(module: nn.Module, enabled: bool = True) -> int:
    """Let every `QuantLinear` below `module` keep its dense weight (built at its first large-M call)
    so prefill skips the dequantize pass: prefill at dense speed for the memory of a dense copy in
    `dense_dtype` (`dense_weight_bytes`: 4x the int4 bytes in bf16, 8x in fp32 on AVX2 CPUs). Calls
    with few rows (decode) keep using the packed kernels. `enabled=False` drops the copies. Returns the
    number of modules."""
    count = 0
    for m in module.modules():
        if isinstance(m, QuantLinear):
            m.keep_dense = enabled
            if not enabled:
                for key in [k for k in m._packed if k[0] == "dense"]:
                    del m._packed[key]
            count += 1
    return count


def dense_weight_bytes(module: nn.Module) -> int:
    """Bytes held by kept dense weights below `module` (0 unless `keep_dense_weights` is on)."""
    return sum(t.numel() * t.element_size() for m in module.modules() if isinstance(m, QuantLinear)
               for key, t in m._packed.items() if key[0] == "dense")


def prepare_quantized(
    module: nn.Module, device: torch.device | str, rows: tuple[int, ...] = (1,), dtype: torch.dtype = torch.bfloat16
) -> int:
    """Build the device-specific packed forms now (before CUDA-graph capture); returns the count."""
    device = torch.device(device)
    if device.type == "cuda":
        _tinygemm_ok()
    count = 0
    for m in module.modules():
        if isinstance(m, QuantLinear):
            for r in rows:
                x = torch.zeros(r, m.in_features, device=device, dtype=dtype)
                m(x)
            count += 1
    return count
