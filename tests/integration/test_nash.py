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
from rlxf.models.packing import use_packed_attention
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


def test_frozen_iterates_refresh_on_their_schedule_and_nash_mp_takes_its_full_step_from_the_anchor():
    class Roles:
        def __init__(self):
            self.policy, self.anchor, self.opponent, self.anchor_optimizer = torch.nn.Linear(1, 1), None, None, None
            self.run = type("Run", (), {"step": 0, "optimizer": torch.optim.SGD(self.policy.parameters(), lr=1.0)})()

    seen = {}
    for learner in ("inpo", "nash_mp"):
        config, roles = NashConfig(learner=learner, anchor_every=2), Roles()
        seen[learner] = []
        for step in range(6):
            roles.run.step = step
            before = (roles.anchor, roles.opponent)
            nash.refresh_anchors(config, roles)
            seen[learner].append((roles.anchor is not before[0], roles.opponent is not before[1]))
            if learner == "nash_mp" and step == 2:  # back at π_k's weights for the full step
                assert torch.equal(roles.policy.weight, roles.anchor.weight)
            with torch.no_grad():
                roles.policy.weight += 1.0  # a training step
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
    resumed = Roles()
    resumed.run.step = 3  # a run resumed between refreshes takes its iterates from the resumed weights
    nash.refresh_anchors(NashConfig(learner="nash_mp", anchor_every=2), resumed)
    assert resumed.anchor is not None and resumed.opponent is not None


@pytest.mark.parametrize("learner", ["inpo", "nash_mp"])
def test_a_run_with_frozen_iterates_resumes_between_refreshes(tmp_path, setup, learner):
    argv = arguments(tmp_path, setup, learner, "train.max_steps=3", "train.save_every=1", "anchor_every=2")
    assert main(argv) == 0
    import shutil

    shutil.rmtree(tmp_path / learner / "checkpoints" / "checkpoint-3")
    shutil.rmtree(tmp_path / learner / "model")
    assert main(argv) == 0  # resumes at step 2, between refreshes
    steps = [json.loads(line)["step"] for line in (tmp_path / learner / "metrics.jsonl").read_text().splitlines()]
    assert steps.count(3) >= 1 and (tmp_path / learner / "model").is_dir()


class Recorder:
    """An engine that records which models it was built with and returns fixed completions."""

    built: list = []

    def __init__(self, *models, alpha=None, **kwargs):
        Recorder.built.append((models[:-1] if alpha is not None else models[:1], alpha))

    def generate(self, messages, params):
        from rlxf.rollout.base import Rollout

        rows = len(messages) * params.n
        return Rollout([[1, 2]] * rows, [[5, 6]] * rows, torch.zeros(rows, 2), torch.ones(rows, 2),
                       ["x"] * rows, ["eos"] * rows, [i // params.n for i in range(rows)])  # fmt: skip


def test_each_learner_draws_its_pairs_from_the_opponent_its_paper_names(monkeypatch):
    monkeypatch.setattr(nash, "HFEngine", Recorder)
    monkeypatch.setattr(nash, "GeometricMixtureEngine", Recorder)
    live, reference, anchor, opponent = (torch.nn.Linear(1, 1) for _ in range(4))
    roles = nash.Roles(
        None, live, reference, Recorder(live), None, None, [], [], None, anchor=anchor, opponent=opponent
    )
    drawn = {}
    for learner in LEARNERS:
        Recorder.built = []
        nash.draw_pairs(NashConfig(learner=learner, mixture=0.25), roles, [type("P", (), {"messages": []})()] * 2)
        drawn[learner] = Recorder.built
    assert drawn["online_dpo"] == drawn["online_ipo"] == drawn["egpo"] == []  # two samples of the live policy
    assert drawn["inpo"] == [((anchor,), None)]  # two samples of the frozen π_t
    assert drawn["nash_md"] == [((live, reference), 0.25)]  # the geometric mixture of π and μ
    assert drawn["nash_mp"] == [((opponent,), None)]  # π_k, then the half point


def test_each_learners_loss_is_its_equation_on_the_pairs_it_drew(tmp_path, setup):
    config = load_config(
        NashConfig, None, arguments(tmp_path, setup, "inpo", "train.max_steps=1")[1:] + ["learner=inpo"]
    )
    roles = nash.start(config)
    roles.anchor = tiny_llama(seed=9).eval()  # π_t apart from μ, so a loss reading the wrong one fails
    use_packed_attention(roles.anchor)
    prompts = roles.train_prompts[:2]
    firsts, seconds = nash.draw_pairs(NashConfig(learner="online_dpo"), roles, prompts)
    preference = torch.tensor([0.8, 0.3])
    with torch.no_grad():
        pa, pb = nash.logps(roles.policy, firsts, grad=False), nash.logps(roles.policy, seconds, grad=False)
        ra, rb = nash.logps(roles.reference, firsts, grad=False), nash.logps(roles.reference, seconds, grad=False)
        oa, ob = nash.logps(roles.anchor, firsts, grad=False), nash.logps(roles.anchor, seconds, grad=False)
    from rlxf.losses.nash import egpo, inpo, nash_md, nash_mp, online_ipo

    def expected(learner):
        if learner == "inpo":  # a wins with probability p: p L(a, b) + (1 - p) L(b, a)
            win, _ = inpo(pa, pb, ra, rb, oa, ob, eta=config.eta, tau=config.beta)
            lose, _ = inpo(pb, pa, rb, ra, ob, oa, eta=config.eta, tau=config.beta)
            return (preference * win + (1 - preference) * lose).mean()
        if learner == "egpo":  # one distribution for a, b and the opponent: the gap is P(a ≻ b) - ½
            return egpo(pa, pb, ra, rb, preference - 0.5, beta=config.beta)[0].mean()
        if learner == "online_ipo":
            return online_ipo(pa, pb, ra, rb, preference, beta=config.beta)[0].mean()
        if learner == "nash_md":  # the gradient flows through the policy's own sample only
            return nash_md(pa, ra, preference, beta=config.beta)[0].mean()
        return nash_mp(pa, ra, oa, preference, beta=config.beta, eta=config.eta)[0].mean()

    for learner in ("inpo", "egpo", "online_ipo", "nash_md", "nash_mp"):
        roles.policy.zero_grad()
        _, loss = nash.learn(NashConfig(learner=learner, beta=config.beta, eta=config.eta), roles, prompts, firsts,
                             seconds, preference)  # fmt: skip
        assert loss == pytest.approx(expected(learner).item(), rel=1e-5), learner
        if learner in ("nash_md", "nash_mp"):  # the same gradient as the equation's on the policy's own samples
            own = nash.logps(roles.policy, firsts, grad=True)
            objective = nash_md(own, ra, preference, beta=config.beta)[0] if learner == "nash_md" else (
                nash_mp(own, ra, oa, preference, beta=config.beta, eta=config.eta)[0])  # fmt: skip
            parameters = [p for p in roles.policy.parameters() if p.grad is not None]
            wanted = torch.autograd.grad(objective.mean(), parameters)
            assert all(torch.allclose(p.grad, w, atol=1e-6) for p, w in zip(parameters, wanted)), learner


def test_a_preference_model_and_a_reward_model_serve_as_oracles(tmp_path, small_hh):
    common = ["model.name=tiny-llama", f"data.path={small_hh}", "data.max_length=64", "data.max_prompt_length=32",
              "train.max_steps=2", "train.batch_size=4"]  # fmt: skip
    assert main(["pm", f"output_dir={tmp_path / 'pm'}", *common]) == 0
    assert main(["rm", f"output_dir={tmp_path / 'rm'}", *common]) == 0
    argv = ["nash_md", f"output_dir={tmp_path / 'nash'}", "policy.name=tiny-llama", f"task.path={small_hh}",
            "task.on_bad_row=skip", "task.eval_count=4", "max_new_tokens=4", "train.max_steps=2", "train.batch_size=2",
            f"oracle={tmp_path / 'pm' / 'model'}", f"eval_oracle={tmp_path / 'rm' / 'model'}"]  # fmt: skip
    assert main(argv) == 0
    held = json.loads((tmp_path / "nash" / "eval.json").read_text())["held_out"]
    assert held["prompts"] == 4 and held["judge"] == str(tmp_path / "rm" / "model")


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
