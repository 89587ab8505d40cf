"""`rlxf eval`: judge a policy against its reference, and a reward model against people.

- reward-model pairwise accuracy on held-out preference pairs;
- win rate of the policy's responses over the reference's on held-out prompts,
  judged by the reward model (ties count half), with a 95% interval and sign test;
- KL(policy || reference) along the policy's responses;
- response lengths of both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rlxf.config import DataSection
from rlxf.data.records import Message
from rlxf.eval.generate import Sample, generate
from rlxf.eval.kl import sequence_kl
from rlxf.eval.reward_accuracy import encode_scored_pairs, pairwise_accuracy
from rlxf.eval.stats import mean_interval, proportion
from rlxf.models import load_causal_lm, load_tokenizer
from rlxf.models.packing import use_packed_attention
from rlxf.recipes.common import encoder_for, load_preference_splits, say, write_json
from rlxf.rewards.learned import LearnedReward


@dataclass
class GenerationSection:
    num_prompts: int = 192
    """Held-out prompts to generate for (0 = all)."""
    max_new_tokens: int = 128
    """Longest response."""
    temperature: float = 1.0
    """Sampling temperature (0 = greedy). At 1.0 the KL estimate is unbiased."""
    top_p: float = 1.0
    """Nucleus sampling threshold."""
    batch_size: int = 16
    """Prompts per generate call."""
    seed: int = 0
    """Sampling seed (the same for policy and reference)."""


@dataclass
class EvalConfig:
    output_dir: str = "runs/eval"
    """Where eval.json goes."""
    policy: str = ""
    """The trained policy (folder); empty = skip policy metrics."""
    reference: str = "smollm2-135m-instruct"
    """The policy's starting point."""
    reward_model: str = ""
    """Judge for RM accuracy and win rate (a folder saved by `rlxf rm`)."""
    data: DataSection = field(default_factory=lambda: DataSection(max_length=512))
    """Preference data; its held-out split gives RM pairs and win-rate prompts."""
    generation: GenerationSection = field(default_factory=GenerationSection)
    """How responses are sampled."""
    rm_max_length: int = 0
    """Token limit of the reward model's input; 0 = as it was trained (its rlxf.json), else 512."""
    rm_accuracy: bool = True
    """Also measure the reward model's pairwise accuracy on the held-out pairs."""


def held_prompts(records, limit: int) -> list[list[Message]]:
    """Distinct held-out prompts, in file order."""
    seen, prompts = set(), []
    for record in records:
        key = repr(record.prompt)
        if key not in seen:
            seen.add(key)
            prompts.append(record.prompt)
    return prompts[:limit] if limit else prompts


def win_rate(policy_scores: list[float], reference_scores: list[float]) -> list[float]:
    return [1.0 if p > r else 0.5 if p == r else 0.0 for p, r in zip(policy_scores, reference_scores)]


def evaluate(config: EvalConfig) -> dict:
    output_dir = Path(config.output_dir)
    _, held, data_summary = load_preference_splits(config.data)
    results: dict = {"data": data_summary}
    judge = LearnedReward(config.reward_model, max_length=config.rm_max_length) if config.reward_model else None
    if judge is not None and config.rm_accuracy:
        model, encoder = judge.load()
        pairs = encode_scored_pairs(encoder, held)
        results["reward_model"] = pairwise_accuracy(model, pairs, [r.tie for r in held], encoder.tokenizer.pad_token_id)
        accuracy = results["reward_model"]
        say(f"reward model accuracy: {accuracy['accuracy']:.3f} on {accuracy['pairs']} pairs")
    if config.policy:
        results.update(compare_policy(config, held, judge))
    write_json(output_dir / "eval.json", results)
    say(f"evaluation written to {output_dir / 'eval.json'}")
    return results


def compare_policy(config: EvalConfig, held, judge: LearnedReward | None) -> dict:
    gen = config.generation
    tokenizer = load_tokenizer(config.reference)
    encoder = encoder_for(tokenizer, config.data)
    prompts = held_prompts(held, gen.num_prompts)
    policy = load_causal_lm(config.policy).eval()
    reference = load_causal_lm(config.reference).eval()
    for model in (policy, reference):
        use_packed_attention(model)
    settings = dict(
        max_new_tokens=gen.max_new_tokens,
        temperature=gen.temperature,
        top_p=gen.top_p,
        batch_size=gen.batch_size,
        seed=gen.seed,
    )
    policy_samples = generate(policy, encoder, prompts, desc="policy responses", **settings)
    reference_samples = generate(reference, encoder, prompts, desc="reference responses", **settings)
    kl = sequence_kl(policy, reference, [(s.prompt_ids, s.completion_ids) for s in policy_samples])
    out = {
        "prompts": len(prompts),
        "generation": settings,
        "kl_to_reference": mean_interval(kl.tolist()).as_dict(),
        "policy_length_tokens": mean_interval([len(s.completion_ids) for s in policy_samples]).as_dict(),
        "reference_length_tokens": mean_interval([len(s.completion_ids) for s in reference_samples]).as_dict(),
        "policy_stopped": sum(s.stopped for s in policy_samples) / len(prompts),
        "reference_stopped": sum(s.stopped for s in reference_samples) / len(prompts),
        "examples": examples(prompts, policy_samples, reference_samples),
    }
    say(f"KL(policy || reference) per response: {out['kl_to_reference']['value']:.3f}")
    if judge is not None:
        policy_scores = judge.score(prompts, [s.text for s in policy_samples]).rewards.tolist()
        reference_scores = judge.score(prompts, [s.text for s in reference_samples]).rewards.tolist()
        estimate = proportion(win_rate(policy_scores, reference_scores))
        out["win_rate"] = estimate.as_dict()
        out["policy_reward"] = mean_interval(policy_scores).as_dict()
        out["reference_reward"] = mean_interval(reference_scores).as_dict()
        for example, p, r in zip(out["examples"], policy_scores, reference_scores):
            example.update(policy_reward=p, reference_reward=r)
        say(f"win rate vs reference: {estimate.text()}")
    return out


def examples(prompts, policy_samples: list[Sample], reference_samples: list[Sample], count: int = 5) -> list[dict]:
    return [
        {"prompt": p[-1]["content"], "policy": a.text, "reference": b.text}
        for p, a, b in list(zip(prompts, policy_samples, reference_samples))[:count]
    ]
