"""Decode-shaped matmuls on this CPU: by dtype, by orientation (x·Wᵀ vs W·xᵀ), and with the
weight laid out ahead in oneDNN's blocked format (what the HF engine does while generating).

A decode step at batch 16 multiplies 16 rows by every weight matrix. With many distinct
weights (too many to stay in cache) the time is what reading weights from memory and the
BLAS kernel's handling of a 16-row operand cost. Shapes are SmolLM2-135M's: the MLP's
576x1536 and the 49,152-token output head.

    python bench/cpu_decode_matmuls.py
"""

import time

import torch
from torch.nn import functional as F


def per_matmul_us(
    product, shape=(1536, 576), dtype=torch.float32, rows=16, copies=90, repeats=3, prepare=lambda w: w
) -> float:
    weights = [prepare(torch.randn(*shape).to(dtype)) for _ in range(copies)]
    x = torch.randn(rows, shape[1]).to(dtype)
    for w in weights[:3]:
        product(x, w)
    started = time.perf_counter()
    for _ in range(repeats):
        for w in weights:
            product(x, w)
    return (time.perf_counter() - started) / (repeats * copies) * 1e6


def x_wt(x, w):  # what nn.Linear computes
    return F.linear(x, w)


def w_xt(x, w):  # the same product, as the HF engine computes it without oneDNN
    return torch.mm(w, x.t()).t().contiguous()


def onednn(x, packed):  # the same product on a weight laid out once (the engine's default)
    return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")


def pack(w):
    return torch.ops.mkldnn._reorder_linear_weight(w, 16)


def layers_ms(product, prepare=lambda w: w, layers=30, repeats=3) -> float:
    """One decode step's products over SmolLM2-135M's 30 layers (q, k, v, o, gate, up, down)."""
    shapes = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)]
    weights = [prepare(torch.randn(*shape) * 0.02) for _ in range(layers) for shape in shapes]
    inputs = {576: torch.randn(16, 576), 1536: torch.randn(16, 1536)}
    step = lambda: [product(inputs[s[1]], w) for s, w in zip(shapes * layers, weights)]  # noqa: E731
    step()
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - started) / repeats * 1e3


if __name__ == "__main__":
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        print(f"{dtype!s:15} {per_matmul_us(x_wt, dtype=dtype):8.0f} us per 16x576 @ 576x1536 (x·Wᵀ)")
    for name, shape, copies in (("MLP 1536x576", (1536, 576), 90), ("head 49152x576", (49152, 576), 4)):
        plain, flipped = (per_matmul_us(f, shape=shape, copies=copies) for f in (x_wt, w_xt))
        packed = per_matmul_us(onednn, shape=shape, copies=copies, prepare=pack)
        print(
            f"{name:15} x·Wᵀ {plain:8.0f} us   W·xᵀ {flipped:8.0f} us   oneDNN laid out {packed:8.0f} us   "
            f"W·xᵀ/oneDNN {flipped / packed:.2f}x"
        )
    flipped, packed = layers_ms(w_xt), layers_ms(onednn, pack)
    print(f"30 layers, 16 rows: W·xᵀ {flipped:.1f} ms, oneDNN laid out {packed:.1f} ms ({flipped / packed:.2f}x)")
    weights = [torch.randn(1536, 576) for _ in range(90)]  # as many numbers as the 30 layers' weights
    started = time.perf_counter()
    [pack(w) for w in weights]
    print(f"laying out 30 layers' worth of weights once: {(time.perf_counter() - started) * 1e3:.0f} ms")
