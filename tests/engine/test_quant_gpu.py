"""Quantized kernels and static-shape decoding on CUDA (skipped with a reason without a GPU),
plus the CPU-runnable checks of the static decoder (eager mode) that the GPU path builds on.

Tolerances: kernels vs the fp32 reference < 1e-2 relative (bf16 activations, as on CPU);
CUDA-graph / compiled decode vs eager decode: the same greedy tokens and logits within 1e-2
relative (same kernels replayed; compile may fuse and reorder bf16 arithmetic).
"""

from __future__ import annotations

import pytest
import torch

from _random_engine import random_weights, tiny_config
from glm_agent.core.contracts import GenerationSettings
from glm_agent.engine.cuda_graphs import StaticDecodeError, StaticDecoder
from glm_agent.engine.engine import Engine
from glm_agent.engine.quant import QuantLinear, kernel_names

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device: GPU kernels and CUDA graphs cannot run here")
QUANTS = [None, {"bits": 8}, {"bits": 4, "group_size": 32}]
PROMPTS = [[5, 17, 200, 3, 99], [7, 8], [1, 2, 3, 4, 5, 6, 7, 8, 9], [42]]


def _rel(a, b) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _engine(quant, device="cpu", dtype=torch.float32, **cfg):
    config = tiny_config("glm4", **cfg)
    return Engine.from_weights(config, random_weights(config, 0), quant=quant, device=device, dtype=dtype,
                               max_context=128)


# ---------------------------------------------------------------------------- CPU (always run)


@pytest.mark.parametrize("quant", QUANTS)
def test_static_decoder_eager_matches_engine_on_cpu(quant):
    eng = _engine(quant)
    want = [list(eng.generate(p, GenerationSettings(max_new_tokens=12))) for p in PROMPTS]
    sd = StaticDecoder(eng.model, batch_size=len(PROMPTS), max_context=32, mode="eager")
    assert sd.generate_greedy(PROMPTS, 12) == want
    # an idle row (None) leaves the other rows' results unchanged
    sd.reset()
    first = [int(sd.prefill(r, p).argmax()) for r, p in enumerate(PROMPTS)]
    logits = sd.decode([first[0], None, first[2], None])
    assert int(logits[0].argmax()) == want[0][1] and int(logits[2].argmax()) == want[2][1]


def test_static_decoder_errors_on_cpu():
    eng = _engine(None)
    with pytest.raises(StaticDecodeError, match="needs a CUDA device"):
        StaticDecoder(eng.model, mode="graph")
    with pytest.raises(StaticDecodeError, match="mode must be"):
        StaticDecoder(eng.model, mode="fast")
    sd = StaticDecoder(eng.model, batch_size=1, max_context=8, mode="eager")
    with pytest.raises(StaticDecodeError, match="larger max_context"):
        sd.prefill(0, list(range(9)))
    assert sd.lengths == [0]  # the refused prefill wrote nothing
    sd.prefill(0, list(range(8)))
    with pytest.raises(StaticDecodeError, match="row 0 is full"):
        sd.decode([3])
    with pytest.raises(StaticDecodeError, match="one per row"):
        sd.decode([3, 4])


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


@needs_cuda
@pytest.mark.parametrize("quant", QUANTS)
def test_cuda_graph_decode_equals_eager_decode(quant):
    eng = _engine(quant, device="cuda", dtype=torch.bfloat16)
    eager = StaticDecoder(eng.model, batch_size=4, max_context=48, mode="eager")
    graph = StaticDecoder(eng.model, batch_size=4, max_context=48, mode="graph")
    assert graph.generate_greedy(PROMPTS, 16) == eager.generate_greedy(PROMPTS, 16)
    for sd in (eager, graph):
        sd.reset()
        for r, p in enumerate(PROMPTS):
            sd.prefill(r, p)
    step = [3, 4, 5, 6]
    assert _rel(graph.decode(step), eager.decode(step)) < 1e-2


@needs_cuda
@pytest.mark.parametrize("quant", [None, {"bits": 8}])
def test_compiled_decode_equals_eager_decode(quant):
    eng = _engine(quant, device="cuda", dtype=torch.bfloat16)
    eager = StaticDecoder(eng.model, batch_size=1, max_context=32, mode="eager")
    comp = StaticDecoder(eng.model, batch_size=1, max_context=32, mode="compile")
    assert comp.generate_greedy(PROMPTS[:1], 8) == eager.generate_greedy(PROMPTS[:1], 8)
