"""Decode-shaped matmuls on this CPU: by dtype, and by orientation (x·Wᵀ vs W·xᵀ).

A decode step at batch 16 multiplies 16 rows by every weight matrix. With many distinct
weights (too many to stay in cache) the time is what reading weights from memory and the
BLAS kernel's handling of a 16-row operand cost. Shapes are SmolLM2-135M's: the MLP's
576x1536 and the 49,152-token output head.

    python bench/cpu_decode_matmuls.py
"""

import time

import torch
from torch.nn import functional as F


def per_matmul_us(product, shape=(1536, 576), dtype=torch.float32, rows=16, copies=90, repeats=3) -> float:
    weights = [torch.randn(*shape).to(dtype) for _ in range(copies)]
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


def w_xt(x, w):  # the same product, as the HF engine computes it while decoding
    return torch.mm(w, x.t()).t().contiguous()


if __name__ == "__main__":
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        print(f"{dtype!s:15} {per_matmul_us(x_wt, dtype=dtype):8.0f} us per 16x576 @ 576x1536 (x·Wᵀ)")
    for name, shape, copies in (("MLP 1536x576", (1536, 576), 90), ("head 49152x576", (49152, 576), 4)):
        plain, flipped = (per_matmul_us(f, shape=shape, copies=copies) for f in (x_wt, w_xt))
        print(f"{name:15} x·Wᵀ {plain:8.0f} us   W·xᵀ {flipped:8.0f} us   {plain / flipped:.2f}x")
