"""Quantized kernels and the quantized engine on CUDA (skipped with a reason without a GPU).

Tolerances: kernels vs the fp32 reference < 1e-2 relative (bf16 activations, as on CPU).
Decode steps as captured CUDA graphs are checked in test_cuda_graphs.py.
"""

from __future__ import annotations

import pytest
import torch
from _random_engine import random_weights, tiny_config

from glm_agent.engine.engine import Engine
from glm_agent.engine.quant import QuantLinear, kernel_names

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device: the GPU kernels cannot run here")
QUANTS = [None, {"bits": 8}, {"bits": 4, "group_size": 32}]


def _rel(a, b) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _engine(quant, device="cpu", dtype=torch.float32, **cfg):
    config = tiny_config("glm4", **cfg)
    # Weights rounded to bf16 first, as real checkpoints are: quantizing fp32 and bf16 copies of the
    # same random weights picks different int4 codes (measured 0.097 relative logit change on CPU
    # alone), which would hide what this compares: the CUDA kernels against the CPU ones.
    weights = ((name, t.to(torch.bfloat16).float()) for name, t in random_weights(config, 0))
    return Engine.from_weights(config, weights, quant=quant, device=device, dtype=dtype, max_context=128)


# ---------------------------------------------------------------------------- CUDA


@needs_cuda
@pytest.mark.parametrize("bits,group_size", [(8, None), (4, 32), (4, 128), (4, 256)])
def test_every_cuda_kernel_agrees_with_reference(bits, group_size):
    torch.manual_seed(0)
    lin = torch.nn.Linear(512, 200)  # N % 8 != 0: exercises tinygemm's row padding
    m = QuantLinear.from_linear(lin, bits, group_size).cuda()
    names = kernel_names(m, "cuda")
    if bits == 4 and torch.cuda.get_device_capability() >= (8, 0):
        assert "cuda_int4" in names
    for rows in (1, 4, 16, 64):
        x = torch.randn(rows, 512, device="cuda", dtype=torch.bfloat16)
        with torch.no_grad():
            m.kernel = "reference"
            ref = m(x)
            for name in names:
                m.kernel = name
                assert _rel(m(x), ref) < 1e-2, (name, rows)
    m.kernel = None
    # the CUDA module computes what the CPU module computes
    cpu = QuantLinear.from_linear(lin, bits, group_size)
    x = torch.randn(4, 512)
    assert _rel(m(x.cuda().bfloat16()).cpu(), cpu(x)) < 1e-2


@needs_cuda
def test_quantized_engine_on_cuda_matches_cpu():
    for quant in QUANTS[1:]:
        cpu = _engine(quant)
        gpu = _engine(quant, device="cuda", dtype=torch.bfloat16)
        ids = [5, 17, 200, 3, 99, 42, 7]
        assert _rel(gpu.forward_logits(ids).cpu(), cpu.forward_logits(ids)) < 5e-2  # bf16 model vs fp32


@needs_cuda
def test_save_load_identical_logits_on_cuda(tmp_path):
    """A model quantized in memory and the same model saved + loaded give identical CUDA logits
    (both quantized on CPU from the same bf16 values; only the device kernels differ from CPU)."""
    from glm_agent.engine.loaders.quantized import load_quantized_checkpoint, save_quantized_checkpoint

    cfg = tiny_config("glm4")
    quant = {"bits": 4, "group_size": 64, "lm_head": True}

    def bf16_weights():
        return ((n, t.to(torch.bfloat16)) for n, t in random_weights(cfg, 1))

    cpu = Engine.from_weights(cfg, bf16_weights(), quant=quant, dtype=torch.bfloat16)
    live = Engine(cpu.model.to("cuda"), cfg, device="cuda", dtype=torch.bfloat16)
    dst = save_quantized_checkpoint(cfg, bf16_weights(), tmp_path / "q", quant)
    config, weights = load_quantized_checkpoint(dst)
    loaded = Engine.from_weights(config, weights, device="cuda", dtype=torch.bfloat16)
    ids = [5, 17, 200, 3, 99]
    assert torch.equal(loaded.forward_logits(ids), live.forward_logits(ids))
