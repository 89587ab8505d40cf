"""The Nash learners on a tiny model through the CLI: each trains against a preference oracle and
reports its held-out win rate under an oracle it did not train against; the mechanics each paper
asks for (the mixture opponent, the frozen iterates, the extragradient's restore) checked apart."""

import json

import pytest
import torch

from rlxf.cli import main
from rlxf.config import load_config
from rlxf.data.templating import ChatEncoder
from rlxf.models import load_tokenizer
from rlxf.models.tiny import tiny_llama
from rlxf.recipes import nash
from rlxf.recipes.nash_config import NashConfig
from rlxf.recipes.nash_learners import LEARNERS
from rlxf.rewards.preference import FunctionPreference
from rlxf.rollout.mixture import GeometricMixtureEngine

ORACLES = """
def digits(prompts, firsts, seconds):
    count = lambda text: sum(ch.isdigit() for ch in text)
    return [0.9 if count(a) > count(b) else 0.1 if count(a) < count(b) else 0.5 for a, b in zip(firsts, seconds)]

def has_digit(prompts, firsts, seconds):
    has = lambda text: any(ch.isdigit() for ch in text)
    return [0.5 + 0.5 * (has(a) - has(b)) for a, b in zip(firsts, seconds)]
"""


@pytest.fixture
def setup(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"write something {i}"}) + "\n" for i in range(30)))
    (tmp_path / "oracles.py").write_text(ORACLES)
    return prompts, tmp_path / "oracles.py"


def arguments(tmp_path, setup, learner, *extra):
    prompts, oracles = setup
    return [learner, f"output_dir={tmp_path / learner}", "policy.name=tiny-llama", f"task.path={prompts}",
            "task.eval_count=8", "max_new_tokens=6", "train.batch_size=4", "train.lr=1e-2", "anchor_every=2",
            f"oracle={oracles}:digits", f"eval_oracle={oracles}:has_digit", *extra]  # fmt: skip


@pytest.mark.parametrize("learner", list(LEARNERS))
def test_every_learner_trains_against_its_oracle_and_reports_an_independent_win_rate(tmp_path, setup, learner):
    assert main(arguments(tmp_path, setup, learner, "train.max_steps=4")) == 0
    folder = tmp_path / learner
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    assert len(train) == 4 and all(0 <= r["preference"] <= 1 and torch.isfinite(torch.tensor(r["loss"])) for r in train)
    held = json.loads((folder / "eval.json").read_text())["held_out"]
    assert held["prompts"] == 8 and 0 <= held["win_rate"] <= 1 and held["judge"].endswith(":has_digit")
    assert (folder / "model" / "model.safetensors").exists()


def test_online_dpo_learns_what_its_oracle_prefers(tmp_path, setup):
    assert main(arguments(tmp_path, setup, "online_dpo", "train.max_steps=12", "train.scheduler=constant")) == 0
    held = json.loads((tmp_path / "online_dpo" / "eval.json").read_text())["held_out"]
    assert held["win_rate"] > 0.55  # digits in the policy's answers, judged by the other oracle


def test_the_mixture_samples_the_geometric_mixture_token_by_token():
    tokenizer = load_tokenizer("tiny-llama")
    encoder = ChatEncoder(tokenizer, max_length=64, max_prompt_length=32)
    policy, reference = tiny_llama(seed=1).eval(), tiny_llama(seed=2).eval()
    engine = GeometricMixtureEngine(policy, reference, encoder, alpha=0.25)
    ids = torch.tensor([engine.prompt_ids([{"role": "user", "content": "hello there"}])])
    positions = torch.arange(ids.shape[1])[None]
    from rlxf.rollout.cpu_decode import growing_cache

    caches = [growing_cache(m.config, 64) for m in (policy, reference)]
    with torch.no_grad():
        mixed = engine._mixed_scores(ids, torch.ones_like(ids), positions, caches, 1.0)
        expected = torch.log_softmax(
            0.75 * torch.log_softmax(policy(ids).logits[:, -1].float(), -1)
            + 0.25 * torch.log_softmax(reference(ids).logits[:, -1].float(), -1),
            -1,
        )
    assert torch.allclose(mixed, expected, atol=1e-5)
    with pytest.raises(ValueError, match="alpha must be in"):
        GeometricMixtureEngine(policy, reference, encoder, alpha=1.5)


def test_frozen_iterates_refresh_on_their_schedule():
    class Roles:
        policy, anchor, opponent = torch.nn.Linear(1, 1), None, None

        class run:
            step = 0

    seen = {}
    for learner in ("inpo", "nash_mp"):
        config, roles = NashConfig(learner=learner, anchor_every=2), Roles()
        seen[learner] = []
        for step in range(6):
            roles.run.step = step
            before = (roles.anchor, roles.opponent)
            nash.refresh_anchors(config, roles)
            seen[learner].append((roles.anchor is not before[0], roles.opponent is not before[1]))
    assert [a for a, _ in seen["inpo"]] == [True, False, True, False, True, False]  # π_t every 2 steps
    # nash_mp: anchor and opponent at 0 and 4 (π_k), the opponent alone at 2 (the half point π_{k+1/2})
    assert seen["nash_mp"] == [
        (True, True),
        (False, False),
        (False, True),
        (False, False),
        (True, True),
        (False, False),
    ]


def test_an_extragradient_step_restores_the_weights_and_the_optimizer_before_the_full_step(
    tmp_path, setup, monkeypatch
):
    config = load_config(
        NashConfig, None, arguments(tmp_path, setup, "egpo", "train.max_steps=1")[1:] + ["learner=egpo"]
    )
    roles = nash.start(config)
    roles.oracle = FunctionPreference(lambda prompts, firsts, seconds: [0.9] * len(firsts))  # a gradient every step
    before = {k: v.clone() for k, v in roles.policy.state_dict().items()}
    seen = []
    real_learn = nash.learn

    def watching(config, roles, prompts, firsts, seconds, preference):
        seen.append({k: torch.equal(v, before[k]) for k, v in roles.policy.state_dict().items()})
        return real_learn(config, roles, prompts, firsts, seconds, preference)

    monkeypatch.setattr(nash, "learn", watching)
    for batch in roles.run.steps():
        metrics, total = nash.extragradient_step(config, roles, [roles.train_prompts[i] for i in batch])
        roles.run.end_step(total, metrics)
    assert all(seen[0].values()) and all(seen[1].values())  # both losses are taken at θ_t
    steps = {int(s["step"]) for s in roles.run.optimizer.state_dict()["state"].values()}
    assert steps == {1}  # the half step's optimizer update was undone
    assert any(not torch.equal(v, before[k]) for k, v in roles.policy.state_dict().items())
