"""MA-RLHF's macro actions (Chai et al. 2025): how responses are cut, and GAE over macro actions, by hand."""

from types import SimpleNamespace

import pytest
import torch

from rlxf.advantages import AdvantageInputs, fixed_macro_ids, gae, ids_from_ends, macro_gae
from rlxf.config import load_config
from rlxf.recipes.online_config import OnlineConfig
from rlxf.recipes.online_rollout import macro_action_ids


def test_fixed_macro_actions_end_with_the_last_token_alone():
    mask = torch.tensor([[1] * 7, [1] * 6 + [0], [1] + [0] * 6, [1, 1, 1, 1, 0, 0, 0]])
    ids = fixed_macro_ids(mask, 3)
    assert ids[0].tolist() == [0, 0, 0, 1, 1, 1, 2]
    assert ids[1].tolist() == [0, 0, 0, 1, 1, 2, 0]  # the authors' final boundary at L - 2
    assert ids[2].tolist() == [0, 0, 0, 0, 0, 0, 0]
    assert ids[3].tolist() == [0, 0, 0, 1, 0, 0, 0]


def test_macro_actions_from_their_ends():
    ends = [[False, True, False, False, False], [True, False, True]]
    assert ids_from_ends(ends, 5).tolist() == [[0, 0, 1, 1, 2], [0, 1, 2, 0, 0]]
    assert ids_from_ends([[False, False, True, True]], 4).tolist() == [[0, 0, 0, 1]]
    assert ids_from_ends([[False]], 1).tolist() == [[0]]  # a one-token response: one macro action


def test_gae_over_macro_actions_by_hand():
    # macro actions [t0, t1], [t2], [t3]: R = (0.1, 0, 1) (means of the token rewards), V = (2, 2, 4)
    rewards = torch.tensor([[0.0, 0.2, 0.0, 1.0]])
    values = torch.tensor([[1.0, 3.0, 2.0, 4.0]])
    mask, ids = torch.ones(1, 4), torch.tensor([[0, 0, 1, 2]])
    advantages, returns = macro_gae(rewards, values, mask, ids, gamma=1.0, lam=0.5)
    # δ2 = 1 - 4 = -3, A2 = -3; δ1 = 0 + 4 - 2 = 2, A1 = 2 + 0.5·(-3) = 0.5; δ0 = 0.1 + 2 - 2, A0 = 0.1 + 0.25
    assert advantages.tolist()[0] == pytest.approx([0.35, 0.35, 0.5, -3.0])
    assert returns.tolist()[0] == pytest.approx([2.35, 2.35, 2.5, 1.0])  # A_τ + V_τ


def test_one_token_per_macro_action_is_plain_gae():
    rewards, values = torch.randn(3, 6), torch.randn(3, 6)
    mask = torch.tensor([[1.0] * 6, [1.0] * 4 + [0.0] * 2, [1.0] * 2 + [0.0] * 4])
    ids = (mask.cumsum(1) - 1).clamp(min=0).long()
    for got, expected in zip(
        macro_gae(rewards, values, mask, ids, gamma=0.9, lam=0.8), gae(rewards, values, mask, gamma=0.9, lam=0.8)
    ):
        assert torch.allclose(got, expected, atol=1e-6)


def test_the_estimator_uses_macro_actions_when_given_them():
    from rlxf.advantages import ADVANTAGE_ESTIMATORS

    x = AdvantageInputs(
        rewards=torch.tensor([1.0, 0.0]),
        token_rewards=torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]),
        mask=torch.ones(2, 3),
        group_size=1,
        values=torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]),
        macro_ids=torch.tensor([[0, 0, 1], [0, 0, 1]]),
    )
    returns = ADVANTAGE_ESTIMATORS["gae"](x)["returns"]
    # first response: V = (0.5, 0), R = (0, 1), λ = 0.95: A1 = 1, A0 = 0 + 0 - 0.5 + 0.95 = 0.45, G0 = 0.95
    assert returns[0].tolist() == pytest.approx([0.95, 0.95, 1.0])


class Pieces:
    def decode(self, ids):
        return {1: "Hello", 2: ",", 3: " world", 4: ".\n", 5: " Bye", 6: "!"}[ids[0]]


def test_punctuation_ends_a_macro_action():
    rollout = SimpleNamespace(completion_ids=[[1, 2, 3, 4, 5, 6]], mask=torch.ones(1, 6))
    ids = macro_action_ids(rollout, "punctuation", 5, Pieces())
    assert ids.tolist() == [[0, 0, 1, 1, 2, 3]]  # "Hello," | " world.\n" | " Bye" | "!" (the last alone)
    assert macro_action_ids(rollout, "none", 5, Pieces()) is None


def test_macro_actions_need_a_critic():
    with pytest.raises(ValueError, match="macro_actions"):
        load_config(OnlineConfig, None, ["algo=grpo", "macro_actions=fixed"])
    with pytest.raises(ValueError, match="macro_actions must be none, fixed or punctuation"):
        load_config(OnlineConfig, None, ["algo=ppo", "macro_actions=ngram"])
    assert load_config(OnlineConfig, None, ["algo=ppo", "macro_actions=punctuation"]).macro_actions == "punctuation"


def test_macro_actions_refuse_dense_fine_grained_rewards(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "rlxf.json").write_text('{"kind": "fine_grained", "level": "sentence", "error_kind": "relevance"}')
    source = f"rewards=[{{kind: fine_grained, model: {model}}}]"
    with pytest.raises(ValueError, match="use one of macro_actions and dense_rewards"):
        load_config(OnlineConfig, None, ["algo=ppo", "macro_actions=fixed", source])
    assert load_config(OnlineConfig, None, ["algo=ppo", "macro_actions=fixed", "dense_rewards=false", source])
