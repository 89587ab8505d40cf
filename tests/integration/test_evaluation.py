"""Generation, KL and win rate on tiny models."""

import pytest
import torch

from rlxf.config import load_config
from rlxf.data.templating import ChatEncoder
from rlxf.eval.generate import generate
from rlxf.eval.kl import sequence_kl
from rlxf.models.packing import use_packed_attention
from rlxf.models.tiny import tiny_llama, tiny_tokenizer
from rlxf.recipes.evaluate import EvalConfig, evaluate, win_rate
from rlxf.recipes.reward_model import RewardModelConfig, train_reward_model


def test_sequence_kl_matches_a_direct_sum_and_is_zero_against_itself():
    policy, reference = tiny_llama(seed=1).eval(), tiny_llama(seed=2).eval()
    for model in (policy, reference):
        use_packed_attention(model)
    sequences = [([1, 5, 6], [7, 8, 2]), ([1, 9], [10, 2])]
    kl = sequence_kl(policy, reference, sequences)
    expected = []
    with torch.no_grad():
        for prompt, reply in sequences:
            ids = torch.tensor([prompt + reply])
            logp = policy(input_ids=ids).logits[0].log_softmax(-1)
            logq = reference(input_ids=ids).logits[0].log_softmax(-1)
            positions = range(len(prompt) - 1, len(prompt) + len(reply) - 1)
            expected.append(sum(float((logp[t].exp() * (logp[t] - logq[t])).sum()) for t in positions))
    assert kl.tolist() == pytest.approx(expected, abs=1e-5)
    assert sequence_kl(policy, policy, sequences).abs().max() < 1e-6


def test_generation_stops_at_end_of_turn_and_is_reproducible():
    model = tiny_llama(seed=0)
    encoder = ChatEncoder(tiny_tokenizer(), max_length=128, max_prompt_length=64)
    prompts = [[{"role": "user", "content": "hello"}], [{"role": "user", "content": "a longer question here"}]]
    first = generate(model, encoder, prompts, max_new_tokens=6, temperature=1.0, seed=3)
    again = generate(model, encoder, prompts, max_new_tokens=6, temperature=1.0, seed=3)
    assert [s.completion_ids for s in first] == [s.completion_ids for s in again]
    for sample in first:
        assert len(sample.completion_ids) <= 6
        assert sample.stopped == (sample.completion_ids[-1] == 2)
        assert sample.prompt_ids[-3:] == encoder._ids("assistant\n")[-3:]
    greedy = generate(model, encoder, prompts, max_new_tokens=6, temperature=0)
    assert [s.completion_ids for s in greedy] == [
        s.completion_ids for s in generate(model, encoder, prompts, max_new_tokens=6, temperature=0)
    ]


def test_win_rate_counts_ties_half():
    assert win_rate([1.0, 0.0, 0.5], [0.0, 1.0, 0.5]) == [1.0, 0.0, 0.5]


def test_the_reference_against_itself_ties_everywhere_with_zero_kl(tmp_path, small_hh):
    rm_dir = tmp_path / "rm"
    train_reward_model(
        load_config(
            RewardModelConfig,
            None,
            [
                f"output_dir={rm_dir}",
                "model.name=tiny-llama",
                f"data.path={small_hh}",
                "data.max_length=160",
                "data.max_prompt_length=96",
                "train.max_steps=2",
                "train.batch_size=4",
            ],
        )
    )
    results = evaluate(
        load_config(
            EvalConfig,
            None,
            [
                f"output_dir={tmp_path / 'eval'}",
                "policy=tiny-llama",
                "reference=tiny-llama",
                f"reward_model={rm_dir / 'model'}",
                f"data.path={small_hh}",
                "data.eval_fraction=0.25",
                "data.max_length=160",
                "data.max_prompt_length=96",
                "generation.num_prompts=4",
                "generation.max_new_tokens=6",
            ],
        )
    )
    assert results["win_rate"]["n"] == 4 and results["win_rate"]["value"] == 0.5
    assert abs(results["kl_to_reference"]["value"]) < 1e-6
    assert results["reward_model"]["pairs"] > 0
    assert (tmp_path / "eval" / "eval.json").exists()
