"""Each online algorithm's loss, through the loop's own loss stage, has the gradient its equation says.

Two prompts, two samples each, fixed tokens and hand-picked rewards; on-policy (ratio 1) every
algorithm's gradient is that of ``-Σ_t c_t · log π(y_t)`` for per-token weights ``c_t`` written out
below from each paper. The loop's gradient must equal it (so a sign, a baseline, a normalization or
an aggregation that departs from the equation fails), and one optimizer step must raise
``Σ_t c_t · log π(y_t)``.
"""

import math
from types import SimpleNamespace

import pytest
import torch

from rlxf.advantages import AdvantageInputs, gae, kl_shaped_rewards, whiten
from rlxf.config import TrainSection, load_config
from rlxf.models.logprobs import token_logps
from rlxf.models.packing import use_packed_attention
from rlxf.models.tiny import tiny_llama
from rlxf.recipes.online_config import OnlineConfig
from rlxf.recipes.online_loss import Experience, loss_pass
from rlxf.recipes.online_rollout import pack_samples
from rlxf.rewards import RewardBatch
from rlxf.train import Run
from rlxf.train.run import MetricSums

PROMPTS = [[1, 5, 9], [1, 7, 7, 3]]
COMPLETIONS = [[40, 41, 2], [50, 2], [60, 61, 62, 2], [70]]  # 3, 2, 4 and 1 tokens
REWARDS = torch.tensor([1.0, 0.0, 0.2, 0.8])
LENGTHS = torch.tensor([3.0, 2.0, 4.0, 1.0])
TOKENS = float(LENGTHS.sum())  # 10
MAX_NEW_TOKENS = 8
SEQUENCES = [(PROMPTS[i // 2], c) for i, c in enumerate(COMPLETIONS)]
MASK = (torch.arange(4)[None, :] < LENGTHS[:, None]).float()

s = 1 / math.sqrt(2)  # GRPO: (r - mean) / sample std of a group of two is ±1/√2 whatever the gap
PER_SAMPLE_WEIGHTS = {
    # DeepSeekMath Eq. 3: (1/G) Σ_i (1/|o_i|) Σ_t Â_i
    "grpo": torch.tensor([s, -s, -s, s]) / LENGTHS / 4,
    # Dr. GRPO: Â = r - mean(r) = ±0.5, ∓0.3; Σ_t / (sequences × generation budget)
    "dr_grpo": torch.tensor([0.5, -0.5, -0.3, 0.3]) / (4 * MAX_NEW_TOKENS),
    # RLOO: r_i - r_other; token mean
    "rloo": torch.tensor([1.0, -1.0, -0.6, 0.6]) / TOKENS,
    # ReMax: r - r(greedy) with greedy rewards 0.5 and 0.5; token mean
    "remax": torch.tensor([0.5, -0.5, -0.3, 0.3]) / TOKENS,
    # RFT: the best of each group if rewarded >= 0.5 (samples 0 and 3), NLL averaged over their 4 tokens
    "rft": torch.tensor([1.0, 0.0, 0.0, 1.0]) / 4,
    # NFT at R = 1: weight 1 - r̂ = 0.5 on correct samples, -r̂ = -0.5 on wrong ones; token mean
    "nft": torch.tensor([0.5, -0.5, -0.5, 0.5]) / TOKENS,
    # SPPO at R = 1 (S = 0): the mean over 4 sequences of (S - c)² has gradient -(2/4) Σ c ∇S; c = r - SoftMean(r)
    # (η = 1): log((e + 1)/2) = 0.620115 and log((e^0.2 + e^0.8)/2) = 0.544341 give c = 0.379885, -0.620115,
    # -0.344341, 0.255659
    "sppo": torch.tensor([0.379885, -0.620115, -0.344341, 0.255659]) / 2,
}


def reinforce_pp_weights():
    """Returns of the last-token reward are the reward on every token: [1]*3, [0]*2, [0.2]*4, [0.8];
    whitened over the batch's 10 tokens: mean (3 + 0 + 0.8 + 0.8) / 10 = 0.46, variance
    (3·0.54² + 2·0.46² + 4·0.26² + 0.34²) / 10 = 1.684 / 10 = 0.1684."""
    returns = REWARDS[:, None].expand(4, 4) * MASK
    mean = (returns * MASK).sum() / TOKENS
    variance = (((returns - mean) * MASK) ** 2).sum() / TOKENS
    assert float(mean) == pytest.approx(0.46) and float(variance) == pytest.approx(0.1684)
    return (returns - mean) / torch.sqrt(variance + 1e-8) * MASK / TOKENS


def policy_and_run(tmp_path, with_critic: bool):
    torch.manual_seed(0)
    policy = tiny_llama(seed=3)
    use_packed_attention(policy)
    trained = policy
    if with_critic:
        critic = tiny_llama(seed=4, reward_head=True)
        use_packed_attention(critic)
        trained = torch.nn.ModuleDict({"policy": policy, "critic": critic})
    train = TrainSection(batch_size=2, lr=1e-3, max_steps=1, max_grad_norm=0.0, scheduler="constant")
    return policy, Run(tmp_path, trained, train, num_examples=2, show_progress=False)


def policy_logps(policy):
    values, _ = token_logps(policy, pack_samples(SEQUENCES, 2)).as_matrix()
    return values  # (4, 4), zero beyond each completion


@pytest.mark.parametrize("algo", ["grpo", "dr_grpo", "rloo", "remax", "reinforce_pp", "ppo", "rft", "nft", "sppo"])
def test_each_algorithms_gradient_is_its_equations(tmp_path, algo):
    config = load_config(
        OnlineConfig,
        None,
        ["policy.name=tiny-llama", f"algo={algo}", "sampling.n=2", f"sampling.max_new_tokens={MAX_NEW_TOKENS}"],
    )
    policy, run = policy_and_run(tmp_path, with_critic=algo == "ppo")
    with torch.no_grad():
        logps = policy_logps(policy)
        values = None
        if algo == "ppo":
            from rlxf.models.logprobs import token_values

            values, _ = token_values(run.model["critic"], pack_samples(SEQUENCES, 2)).as_matrix()
    shaped = kl_shaped_rewards(REWARDS, MASK)
    inputs = AdvantageInputs(
        rewards=shaped.sum(-1),
        token_rewards=shaped,
        mask=MASK,
        group_size=2,
        greedy_rewards=torch.tensor([0.5, 0.5]),
        values=values,
        threshold=0.5,
    )
    experience = Experience(SEQUENCES, MASK, config.estimator(inputs), logps, old_values={"critic": values})
    for _ in run.steps():
        loss_pass(config, run, experience, None, 0.0, MetricSums())
        got = [p.grad.clone() for p in policy.parameters()]
        if algo == "reinforce_pp":
            weights = reinforce_pp_weights()
        elif algo == "ppo":  # GAE (hand-checked in tests/unit/test_online_math.py), whitened, token mean
            advantages, _ = gae(shaped, values, MASK, gamma=1.0, lam=0.95)
            weights = whiten(advantages, MASK) / TOKENS
        else:
            weights = PER_SAMPLE_WEIGHTS[algo][:, None] * MASK
        expected_objective = (weights * policy_logps(policy)).sum()
        expected = torch.autograd.grad(-expected_objective, list(policy.parameters()))
        for mine, theirs in zip(got, expected):
            assert torch.allclose(mine, theirs, atol=1e-6, rtol=1e-4), (algo, (mine - theirs).abs().max())
        before = float(expected_objective.detach())
        run.end_step(0.0, {})
    with torch.no_grad():
        assert float((weights * policy_logps(policy)).sum()) > before, algo


class TwoRanksInOneProcess:
    """An all-reduce between two simulated ranks: each rank's sum adds what the other contributed at
    the same call. Contributions are recorded pass by pass; repeating the passes settles collectives
    that depend on earlier ones (whitening's variance uses the global mean)."""

    def __init__(self):
        self.contributed = {0: [], 1: []}
        self.rank, self.calls, self.heard = 0, 0, {0: [], 1: []}

    def start(self, rank: int):
        self.rank, self.calls = rank, 0
        self.heard[rank] = []

    def global_sum(self, value):
        peer = self.contributed[1 - self.rank]
        other = peer[self.calls] if self.calls < len(peer) else value * 0
        self.heard[self.rank].append(value)
        self.calls += 1
        return value + other

    def settle(self):
        self.contributed = {rank: list(values) for rank, values in self.heard.items()}


@pytest.mark.parametrize(
    "algo, aggregation",
    [
        ("grpo", "sequence_mean"),
        ("grpo", "token_mean"),
        ("dr_grpo", "constant"),
        ("reinforce_pp", "token_mean"),
        ("rft", "token_mean"),
    ],
)
def test_a_batch_split_over_two_ranks_gives_the_whole_batchs_gradient(tmp_path, monkeypatch, algo, aggregation):
    """The loop divides by the global batch's counts (tokens, sequences; reinforce_pp whitens over
    the global batch), so two ranks' gradients add up to the one-rank gradient; dividing by a rank's
    own counts would not."""
    from rlxf.parallel import distributed

    config = load_config(
        OnlineConfig,
        None,
        [
            "policy.name=tiny-llama",
            f"algo={algo}",
            f"aggregation={aggregation}",
            "sampling.n=2",
            f"sampling.max_new_tokens={MAX_NEW_TOKENS}",
        ],
    )

    def gradient(rows, global_sum):
        policy, run = policy_and_run(tmp_path / f"run{len(rows)}", with_critic=False)
        sequences = [SEQUENCES[i] for i in rows]
        mask = MASK[rows]
        shaped = kl_shaped_rewards(REWARDS[rows], mask)
        inputs = AdvantageInputs(shaped.sum(-1), shaped, mask, 2, threshold=0.5, global_sum=global_sum)
        with torch.no_grad():
            logps = policy_logps(policy)[rows]
        for _ in run.steps():
            loss_pass(
                config, run, Experience(sequences, mask, config.estimator(inputs), logps), None, 0.0, MetricSums()
            )
            return torch.cat([p.grad.flatten() for p in policy.parameters()])

    whole = gradient([0, 1, 2, 3], lambda value: value)
    ranks = TwoRanksInOneProcess()
    monkeypatch.setattr(distributed, "global_sum", ranks.global_sum)
    for _ in range(4):
        shares = []
        for rank, rows in enumerate(([0, 1], [2, 3])):
            ranks.start(rank)
            shares.append(gradient(rows, ranks.global_sum))
        ranks.settle()
    assert torch.allclose(shares[0] + shares[1], whole, atol=1e-7, rtol=1e-5)


def test_a_stale_batch_is_weighed_against_the_policy_that_drew_it(tmp_path):
    """With async rollouts the samples come from the policy one update back: the PPO ratio of the
    first pass is π_θ / π_sampler (≠ 1), not π_θ / π_θ. In the synchronous loop it is exactly 1."""
    from rlxf.recipes.online import update_policy

    stale_policy = tiny_llama(seed=5)  # stands in for the weights before the last update
    use_packed_attention(stale_policy)
    with torch.no_grad():
        sampler_logps = policy_logps(stale_policy)
    ratios = {}
    for mode in ("false", "true"):
        overrides = [
            "policy.name=tiny-llama",
            "sampling.n=2",
            f"async_rollouts={mode}",
            "distributed.rollout_workers=1",
        ]
        config = load_config(OnlineConfig, None, overrides)
        policy, run = policy_and_run(tmp_path / mode, with_critic=False)
        shaped = kl_shaped_rewards(REWARDS, MASK)
        targets = config.estimator(AdvantageInputs(shaped.sum(-1), shaped, MASK, 2))
        sums = MetricSums()
        for _ in run.steps():
            update_policy(config, run, Experience(SEQUENCES, MASK, targets, sampler_logps), 0.0, sums)
            with torch.no_grad():
                expected = torch.exp(policy_logps(policy) - sampler_logps)[MASK > 0].mean()
            run.end_step(0.0, {})
        ratios[mode] = sums.means()["ratio"]
    assert ratios["false"] == pytest.approx(1.0, abs=1e-6)
    assert abs(ratios["true"] - 1.0) > 1e-3 and ratios["true"] == pytest.approx(float(expected), rel=1e-5)


DELTA = 0.1 * torch.arange(1, 5, dtype=torch.float32)[None, :].expand(4, 4) * MASK  # log π − log π_ref per token


@pytest.mark.parametrize("algo", ["rloo", "reinforce_pp", "grpo"])
def test_the_kl_goes_where_the_algorithms_paper_puts_it(tmp_path, algo):
    """β = 0.5 against a reference whose log-probs sit δ_t = 0.1·t below the policy's.
    rloo (Ahmadian et al.): r − β Σ_t k1 with k1 = δ: r' = [1 − 0.3, 0 − 0.15, 0.2 − 0.5, 0.8 − 0.05]
      = [0.7, −0.15, −0.3, 0.75]; A = r' − r'_other = [0.85, −0.85, −1.05, 1.05]; token mean; no KL term.
    reinforce_pp (Hu): r_t = 1[t = T]·r − β δ_t, returns, whitened; no KL term.
    grpo (DeepSeekMath Eq. 3): advantages of the raw rewards, and + β·k3(δ_t) per token in the loss."""
    from types import SimpleNamespace

    from rlxf.advantages import discounted_returns
    from rlxf.losses.policy import kl_estimate
    from rlxf.recipes.online import make_experience
    from rlxf.rollout import Rollout

    beta = 0.5
    config = load_config(
        OnlineConfig, None, ["policy.name=tiny-llama", f"algo={algo}", "sampling.n=2", f"kl_coef={beta}"]
    )
    policy, run = policy_and_run(tmp_path, with_critic=False)
    with torch.no_grad():
        logps = policy_logps(policy)
    rollout = Rollout([p for p, _ in SEQUENCES], COMPLETIONS, logps, MASK, [""] * 4, ["eos"] * 4, [0, 0, 1, 1])
    reference = SimpleNamespace(token_logps=lambda batch, temperature: (logps - DELTA)[MASK > 0])
    roles = SimpleNamespace(
        reference=reference,
        critics={},
        kl=SimpleNamespace(coef=beta),
        run=run,
        sampler=None,
        source=None,
        tokenizer=None,
    )
    experience = make_experience(config, roles, None, rollout, RewardBatch(REWARDS))
    # the KL logged: k1 = log π − log π_ref for the reward-side algorithms, k3 for GRPO's loss term
    assert torch.allclose(experience.kl, DELTA if config.kl_in_reward else torch.expm1(-DELTA) + DELTA)
    for _ in run.steps():
        loss_pass(config, run, experience, None, beta, MetricSums())
        got = [p.grad.clone() for p in policy.parameters()]
        current = policy_logps(policy)
        if algo == "rloo":
            advantages = torch.tensor([0.85, -0.85, -1.05, 1.05])
            assert torch.allclose(experience.targets["advantages"][:, 0], advantages, atol=1e-6)
            expected_loss = -(advantages[:, None] * MASK * current).sum() / TOKENS
        elif algo == "reinforce_pp":
            token_rewards = kl_shaped_rewards(REWARDS, MASK) - beta * DELTA
            weights = whiten(discounted_returns(token_rewards, MASK), MASK) / TOKENS
            expected_loss = -(weights * current).sum()
        else:
            advantages = torch.tensor([s, -s, -s, s])
            k3 = kl_estimate(current, current.detach() - DELTA, "k3")
            per_token = (-advantages[:, None] * current + beta * k3) * MASK
            expected_loss = (per_token.sum(-1) / LENGTHS).sum() / 4
        expected = torch.autograd.grad(expected_loss, list(policy.parameters()))
        for mine, theirs in zip(got, expected):
            assert torch.allclose(mine, theirs, atol=1e-6, rtol=1e-4), (algo, (mine - theirs).abs().max())
        run.end_step(0.0, {})


def test_a_sequence_mean_counts_only_the_samples_trained_on(tmp_path):
    """RFT keeps samples 0 and 3 (3 and 1 tokens): with aggregation=sequence_mean each kept sample's
    token mean counts 1/2, not 1/4 (the rows left out are no sequences of this loss)."""
    overrides = ["policy.name=tiny-llama", "algo=rft", "sampling.n=2", "aggregation=sequence_mean"]
    config = load_config(OnlineConfig, None, overrides)
    policy, run = policy_and_run(tmp_path, with_critic=False)
    shaped = kl_shaped_rewards(REWARDS, MASK)
    targets = config.estimator(AdvantageInputs(REWARDS, shaped, MASK, 2, threshold=0.5))
    with torch.no_grad():
        logps = policy_logps(policy)
    for _ in run.steps():
        loss_pass(config, run, Experience(SEQUENCES, MASK, targets, logps), None, 0.0, MetricSums())
        weights = torch.tensor([1.0, 0.0, 0.0, 1.0])[:, None] * MASK / LENGTHS[:, None] / 2
        expected = torch.autograd.grad(-(weights * policy_logps(policy)).sum(), list(policy.parameters()))
        for p, theirs in zip(policy.parameters(), expected):
            assert torch.allclose(p.grad, theirs, atol=1e-6, rtol=1e-4)
        run.end_step(0.0, {})


def test_the_cost_channel_carries_plus_beta_kl_through_the_loop(tmp_path):
    """Safe RLHF through make_experience: RLOO, β = 0.5, the same δ as above (Σ_t δ = 0.6, 0.3, 1.0, 0.1),
    costs 0, 1, 0.5, 0.5 and λ = 2.
    reward channel: A_r = [0.85, −0.85, −1.05, 1.05] (above)
    cost channel c + β Σδ = [0.3, 1.15, 1.0, 0.55] → leave-one-out A_c = [−0.85, 0.85, 0.45, −0.45]
    (A_r − 2 A_c) / 3 = [0.85, −0.85, −0.65, 0.65]."""
    from types import SimpleNamespace

    from rlxf.recipes.online import make_experience
    from rlxf.recipes.online_safety import LagrangeMultiplier
    from rlxf.rollout import Rollout

    config = load_config(
        OnlineConfig,
        None,
        ["policy.name=tiny-llama", "algo=rloo", "sampling.n=2", "kl_coef=0.5", "safety.costs=[{kind: length}]",
         "safety.multiplier_init=2"],
    )  # fmt: skip
    policy, run = policy_and_run(tmp_path, with_critic=False)
    with torch.no_grad():
        logps = policy_logps(policy)
    rollout = Rollout([p for p, _ in SEQUENCES], COMPLETIONS, logps, MASK, [""] * 4, ["eos"] * 4, [0, 0, 1, 1])
    reference = SimpleNamespace(token_logps=lambda batch, temperature: (logps - DELTA)[MASK > 0])
    multiplier = LagrangeMultiplier(config.safety, None, run)
    roles = SimpleNamespace(
        reference=reference, critics={}, kl=SimpleNamespace(coef=0.5), run=run, sampler=None, source=None,
        costs=None, multiplier=multiplier, tokenizer=None,
    )  # fmt: skip
    costs = torch.tensor([0.0, 1.0, 0.5, 0.5])
    experience = make_experience(config, roles, None, rollout, RewardBatch(REWARDS), costs)
    advantages = experience.targets["advantages"]
    assert advantages[:, 0].tolist() == pytest.approx([0.85, -0.85, -0.65, 0.65], abs=1e-5)
    assert torch.equal(advantages == 0, MASK == 0)  # the same advantage on every token of a sample, none on padding


class DigitTokenizer:
    """Token id k decodes to the character chr(ord('a') + k % 26); id 2 is the end token."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(ord("a") + i % 26) for i in ids if i != 2 or not skip_special_tokens)


def test_segment_rewards_and_macro_actions_reach_the_estimator(tmp_path):
    """make_experience puts a fine-grained source's segment rewards on their tokens (REINFORCE++) and
    runs GAE over macro actions (PPO), as the pure functions compute them."""
    from rlxf.advantages import fixed_macro_ids, macro_gae, reinforce_pp
    from rlxf.models.logprobs import token_values
    from rlxf.recipes.online import make_experience
    from rlxf.recipes.online_rollout import pack_samples
    from rlxf.rollout import Rollout

    spans = [[(1, -0.5)], [], [(2, 0.3), (3, 0.3)], []]  # sample 0: its first token; sample 2: its 2nd and 3rd
    dense = torch.zeros(4, 4)
    dense[0, 0], dense[2, 1], dense[2, 2] = -0.5, 0.3, 0.3
    rewards = RewardBatch(REWARDS, span_rewards=spans)

    def experience_of(overrides, with_critic, rewards):
        config = load_config(OnlineConfig, None, ["policy.name=tiny-llama", "sampling.n=2", *overrides])
        policy, run = policy_and_run(tmp_path / "-".join(overrides), with_critic=with_critic)
        with torch.no_grad():
            logps = policy_logps(policy)
        rollout = Rollout([p for p, _ in SEQUENCES], COMPLETIONS, logps, MASK, [""] * 4, ["eos"] * 4, [0, 0, 1, 1])
        critics = {"critic": run.model["critic"]} if with_critic else {}
        roles = SimpleNamespace(
            reference=None, critics=critics, kl=SimpleNamespace(coef=0.0), run=run, sampler=None, source=None,
            tokenizer=DigitTokenizer(),
        )  # fmt: skip
        return make_experience(config, roles, None, rollout, rewards), critics

    experience, _ = experience_of(["algo=reinforce_pp"], False, rewards)
    expected = reinforce_pp(kl_shaped_rewards(REWARDS, MASK, dense=dense), MASK)
    assert torch.allclose(experience.targets["advantages"], expected, atol=1e-6)
    assert not torch.allclose(expected, reinforce_pp(kl_shaped_rewards(REWARDS, MASK), MASK), atol=1e-3)

    macros = ["algo=ppo", "macro_actions=fixed", "macro_size=2"]
    experience, critics = experience_of(macros, True, RewardBatch(REWARDS))
    with torch.no_grad():
        values, _ = token_values(critics["critic"], pack_samples(SEQUENCES, 2)).as_matrix()
    _, returns = macro_gae(kl_shaped_rewards(REWARDS, MASK), values, MASK, fixed_macro_ids(MASK, 2), lam=0.95)
    assert torch.allclose(experience.targets["returns"], returns, atol=1e-5)
