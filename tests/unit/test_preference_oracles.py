"""A general preference model's pieces by hand: its loss, antisymmetry, pair input, calibration;
the oracles (learned, LLM judge in both orders) and SPO's win-rate reward."""

import math

import pytest
import torch

from rlxf.data.pairs import MARKERS, pair_inputs
from rlxf.data.templating import ChatEncoder
from rlxf.eval.calibration import calibration
from rlxf.losses import general_preference
from rlxf.models import load_tokenizer, preference_logits
from rlxf.models.tiny import tiny_llama
from rlxf.rewards.preference import JudgePreference, WinRateReward


def test_the_preference_loss_by_hand():
    # z = 0.8: -log σ(0.8) = log(1 + e^-0.8) = 0.371101; a tie: ½ (0.371101 + log(1 + e^0.8)) = 0.771101
    loss, metrics = general_preference(torch.tensor([0.8, 0.8, -0.3]), tie=torch.tensor([False, True, False]))
    assert loss.tolist() == pytest.approx([0.371101, 0.771101, math.log1p(math.exp(0.3))], abs=1e-6)
    assert metrics["preference"][0].item() == pytest.approx(0.689974, abs=1e-6)  # σ(0.8)
    assert metrics["rewards/accuracy"].tolist() == [1.0, 0.0]  # the tie is left out


def test_the_model_is_antisymmetric_and_a_pair_against_itself_is_even():
    tokenizer = load_tokenizer("tiny-llama")
    encoder = ChatEncoder(tokenizer, max_length=64, max_prompt_length=32)
    model = tiny_llama(seed=1, reward_head=True).eval()
    prompt = [{"role": "user", "content": "Pick one."}]
    ab, ba = pair_inputs(encoder, prompt, "rock", "paper")
    mark_a = tokenizer(MARKERS[0], add_special_tokens=False)["input_ids"]
    assert ab != ba and len(ab) == len(ba) and all(t in ab for t in mark_a)
    same = pair_inputs(encoder, prompt, "rock", "rock")
    with torch.no_grad():
        z_ab = preference_logits(model, [ab], [ba], tokenizer.pad_token_id)
        z_ba = preference_logits(model, [ba], [ab], tokenizer.pad_token_id)
        z_same = preference_logits(model, [same[0]], [same[1]], tokenizer.pad_token_id)
    assert torch.sigmoid(z_ab).item() + torch.sigmoid(z_ba).item() == pytest.approx(1.0, abs=1e-6)
    assert abs(z_ab.item()) > 1e-4 and z_same.item() == pytest.approx(0.0, abs=1e-6)


def test_calibration_by_hand():
    # p = 0.9, 0.2, 0.6, 0.5: confidence 0.9, 0.8, 0.6, 0.5; right 1, 0, 1, ½
    # ECE = ¼ (|1 - 0.9| + |0 - 0.8| + |1 - 0.6| + |½ - 0.5|) = ¼ (0.1 + 0.8 + 0.4 + 0) = 0.325
    result = calibration([0.9, 0.2, 0.6, 0.5], bins=10)
    assert result["ece"] == pytest.approx(0.325)
    filled = [(i, c["count"]) for i, c in enumerate(result["bins"]) if c["count"]]
    assert filled == [(0, 1), (2, 1), (6, 1), (8, 1)]  # (confidence - ½) × 20, per bin of width 0.05
    assert calibration([0.95] * 19 + [0.05])["ece"] == pytest.approx(0.0, abs=1e-12)  # 95% sure, right 95%


class MatrixOracle:
    """P(first ≻ second) from a table of the responses' names; counts its queries."""

    name = "matrix"

    def __init__(self, table):
        self.table, self.queries = table, 0

    def prefer(self, prompts, firsts, seconds):
        self.queries += len(firsts)
        return torch.tensor([self.table[(a, b)] if (a, b) in self.table else 1 - self.table[(b, a)]
                             for a, b in zip(firsts, seconds)])  # fmt: skip


def test_spo_rewards_are_win_proportions_within_each_prompt():
    # prompt 0: P(a≻b) = 0.8, P(a≻c) = 0.6, P(b≻c) = 0.3 -> a (0.8 + 0.6)/2, b (0.2 + 0.3)/2, c (0.4 + 0.7)/2
    # prompt 1: P(d≻e) = 0.9 -> d 0.9, e 0.1
    oracle = MatrixOracle({("a", "b"): 0.8, ("a", "c"): 0.6, ("b", "c"): 0.3, ("d", "e"): 0.9})
    batch = WinRateReward(oracle).score([[]] * 5, ["a", "b", "c", "d", "e"], prompt_index=[0, 0, 0, 1, 1])
    assert batch.rewards.tolist() == pytest.approx([0.70, 0.25, 0.55, 0.9, 0.1])
    assert oracle.queries == 3 + 1  # each unordered pair once
    alone = WinRateReward(oracle).score([[]], ["a"], prompt_index=[0])
    assert alone.rewards.tolist() == [0.5] and alone.metrics()["reward/win_rate/alone"] == 1.0


class ScriptedJudge:
    def __init__(self, verdicts):
        self.verdicts = verdicts

    def compare(self, prompts, firsts, seconds):
        return [(*self.verdicts[i], ("", "")) for i in range(len(firsts))]


def test_a_judge_in_both_orders_gives_the_mean_of_its_verdicts():
    # first is A, then B: (A, B) both for it -> 1; (A, A) contradicts itself -> ½; (None, B): unread = tie -> ¾
    judge = JudgePreference(ScriptedJudge([("A", "B"), ("A", "A"), (None, "B"), ("tie", "A")]))
    assert judge.prefer([[]] * 4, ["x"] * 4, ["y"] * 4).tolist() == [1.0, 0.5, 0.75, 0.25]
    assert judge.unparsed == 1
