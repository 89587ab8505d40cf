"""Where the HF engine's generation time goes: each speed-up switched off in turn, same process.

SmolLM2-135M-Instruct, 4 two-digit addition prompts x 4 samples, ``--tokens`` new tokens, T = 1
(the GRPO benchmark's rollout). Configurations alternate over ``--repeats`` rounds so machine drift
hits all alike; prints the median seconds of each. Also times one sampling draw at 16 x 49k
(``torch.multinomial`` against the engine's inverse-CDF sampler) and one decode step's KV-cache
writes (concatenating against growing in place).

    python bench/hf_generation.py --repeats 3 [--compile]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

import rlxf.rollout.cpu_decode as cpu_decode
import rlxf.rollout.hf as hf
from rlxf.data.tasks import arithmetic
from rlxf.data.templating import ChatEncoder
from rlxf.models.loading import load_causal_lm, load_tokenizer
from rlxf.rollout.base import SamplingParams


def draw_ms(draw, probs: torch.Tensor, repeats: int = 20) -> float:
    draw(probs)
    started = time.perf_counter()
    for _ in range(repeats):
        draw(probs)
    return (time.perf_counter() - started) / repeats * 1e3


def kv_update_ms(make_layer, rows: int = 16, prompt: int = 40, steps: int = 32, layers: int = 30) -> float:
    """Milliseconds per decode step that SmolLM2-135M's 30 KV-cache layers spend storing one token."""
    cache = [make_layer() for _ in range(layers)]
    for layer in cache:
        layer.update(torch.randn(rows, 3, prompt, 64), torch.randn(rows, 3, prompt, 64))
    token = torch.randn(rows, 3, 1, 64)
    started = time.perf_counter()
    for _ in range(steps):
        for layer in cache:
            layer.update(token, token)
    return (time.perf_counter() - started) / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd decoding (minutes)")
    args = parser.parse_args()

    scores = torch.randn(16, 49152)
    sampler = hf._SampleByInverseCdf(1.0, 1.0)
    print(
        f"one draw at 16 x 49152: torch.multinomial {draw_ms(lambda p: torch.multinomial(p, 1), scores.softmax(-1)):.2f} ms, "
        f"inverse-CDF sampler (softmax included) {draw_ms(sampler.draw, scores):.2f} ms"
    )

    concatenating_ms = kv_update_ms(cpu_decode.DynamicLayer)
    growing_ms = kv_update_ms(lambda: cpu_decode._GrowingLayer(33))
    print(
        f"KV cache, storing one token at 16 rows in 30 layers: concatenating {concatenating_ms:.2f} ms, "
        f"growing in place {growing_ms:.2f} ms per decode step"
    )

    model = load_causal_lm("smollm2-135m-instruct")
    engine = hf.HFEngine(model, ChatEncoder(load_tokenizer("smollm2-135m-instruct")))
    prompts = [p.messages for p in arithmetic(4, digits=2, seed=0)]
    sampling = SamplingParams(max_new_tokens=args.tokens, temperature=1.0, n=4)
    prefill, linears, growing, pack = engine._shared_prefill, hf.decode_linears, hf.growing_cache, cpu_decode._pack
    concatenating = lambda config, room: cpu_decode.DynamicCache(config=config)  # noqa: E731
    plain_linears = lambda model, rows, lay_out: contextlib.nullcontext()  # noqa: E731
    settings = {
        "all on": (prefill, linears, growing, pack),
        "no shared prefill": (lambda *a: None, linears, growing, pack),
        "W·xᵀ, no oneDNN layout": (prefill, linears, growing, lambda weight, rows: None),
        "plain F.linear": (prefill, plain_linears, growing, pack),
        "no growing KV cache": (prefill, linears, concatenating, pack),
    }
    seconds: dict[str, list[float]] = {name: [] for name in settings}
    tokens: dict[str, int] = {}
    engine.generate(prompts, sampling, seeds=[0, 1, 2, 3])  # warm-up
    for _ in range(args.repeats):
        for name, setting in settings.items():
            engine._shared_prefill, hf.decode_linears, hf.growing_cache, cpu_decode._pack = setting
            started = time.perf_counter()
            # same seeds: the same tokens in each setting, up to float rounding in the products
            rollout = engine.generate(prompts, sampling, seeds=[0, 1, 2, 3])
            seconds[name].append(time.perf_counter() - started)
            tokens[name] = int(rollout.mask.sum())
    if args.compile:
        # Inductor lowers oneDNN's packed linear only for weights frozen into the graph, which a
        # policy whose weights change every step rules out: compiled decode runs plain F.linear.
        engine._shared_prefill, hf.decode_linears, hf.growing_cache, cpu_decode._pack = settings["plain F.linear"]
        model.forward = torch.compile(model.forward, dynamic=True)
        started = time.perf_counter()
        engine.generate(prompts, sampling, seeds=[0, 1, 2, 3])
        print(f"torch.compile: first generation (compiling) {time.perf_counter() - started:.1f} s")
        name = "compiled, plain F.linear"
        seconds[name] = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            tokens[name] = int(engine.generate(prompts, sampling, seeds=[0, 1, 2, 3]).mask.sum())
            seconds[name].append(time.perf_counter() - started)
    for name, values in seconds.items():
        print(
            f"{name:26} {statistics.median(values):6.2f} s  ({', '.join(f'{v:.2f}' for v in values)}), "
            f"{tokens[name]} tokens"
        )


if __name__ == "__main__":
    main()
