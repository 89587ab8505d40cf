"""Decode-shaped matmuls on this CPU: fp32 vs bf16 vs fp16 at 16 rows.

A decode step at batch 16 multiplies 16 rows by every weight matrix; with 90 distinct
576x1536 weights (SmolLM2's MLP shape, too many to stay in cache) the time is what reading
weights from memory costs.

    python bench/cpu_matmul_dtypes.py
"""

import time

import torch


def per_matmul_us(dtype: torch.dtype, rows: int = 16, copies: int = 90, repeats: int = 3) -> float:
    weights = [torch.randn(1536, 576).to(dtype) for _ in range(copies)]
    x = torch.randn(rows, 576).to(dtype)
    for w in weights[:5]:
        torch.nn.functional.linear(x, w)
    started = time.perf_counter()
    for _ in range(repeats):
        for w in weights:
            torch.nn.functional.linear(x, w)
    return (time.perf_counter() - started) / (repeats * copies) * 1e6


if __name__ == "__main__":
    torch.set_num_threads(torch.get_num_threads())
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        print(f"{str(dtype):15} {per_matmul_us(dtype):8.0f} us per 16x576 @ 576x1536")
