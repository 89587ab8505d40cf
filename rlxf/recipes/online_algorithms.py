"""What each online algorithm means: its advantage estimator (:mod:`rlxf.advantages`), its policy
loss (:mod:`rlxf.losses.policy`), and the defaults its paper gives for where the KL to the reference
goes, which KL estimator, and how token losses are aggregated."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Algorithm:
    advantage: str  # a key of ADVANTAGE_ESTIMATORS
    policy_loss: str  # a key of POLICY_LOSSES
    kl_penalty: str  # where the paper puts the KL to the reference: loss (a loss term) or reward
    kl_estimator: str  # k1, k2 or k3
    aggregation: str  # a key of AGGREGATIONS
    source: str  # where these defaults come from


ALGORITHMS: dict[str, Algorithm] = {
    "grpo": Algorithm(
        advantage="group_normalized",
        policy_loss="clipped_pg",
        kl_penalty="loss",
        kl_estimator="k3",
        aggregation="sequence_mean",
        source="Shao et al., DeepSeekMath, 2024: Eq. 3 (KL in the loss, 1/G Σ_i 1/|o_i| Σ_t), Eq. 4 (k3)",
    ),
    "dr_grpo": Algorithm(
        advantage="group_centered",
        policy_loss="clipped_pg",
        kl_penalty="loss",
        kl_estimator="k3",
        aggregation="constant",
        source="Liu et al., Understanding R1-Zero-Like Training, 2025: Σ_t / generation budget (their code)",
    ),
    "rloo": Algorithm(
        advantage="leave_one_out",
        policy_loss="clipped_pg",
        kl_penalty="reward",
        kl_estimator="k1",
        aggregation="token_mean",
        source="Ahmadian et al., Back to Basics, 2024: r − β log π/π_ref as the reward; OpenRLHF's token mean",
    ),
    "remax": Algorithm(
        advantage="greedy_baseline",
        policy_loss="clipped_pg",
        kl_penalty="reward",
        kl_estimator="k1",
        aggregation="token_mean",
        source="Li et al., ReMax, 2024, the authors' code: β·(log π_ref − log π) in the reward, a token mean",
    ),
    "reinforce_pp": Algorithm(
        advantage="reinforce_pp",
        policy_loss="clipped_pg",
        kl_penalty="reward",
        kl_estimator="k1",
        aggregation="token_mean",
        source="Hu, REINFORCE++, 2025: r_t = 1[t = T]·r − β·KL_t, KL_t = log π_old/π_ref (k1); global token mean",
    ),
    "ppo": Algorithm(
        advantage="gae",
        policy_loss="clipped_pg",
        kl_penalty="reward",
        kl_estimator="k1",
        aggregation="token_mean",
        source="Ziegler et al. 2019; Ouyang et al., InstructGPT, 2022, Eq. 2: r − β log π/π_ref as the reward",
    ),
    "rft": Algorithm(
        advantage="best_of_n",
        policy_loss="filtered_sft",
        kl_penalty="loss",
        kl_estimator="k3",
        aggregation="token_mean",
        source="Yuan et al. 2023 (no KL); Mukobi et al., SuperHF, 2023: KL as a loss term",
    ),
    "nft": Algorithm(
        advantage="success_rate",
        policy_loss="nft",
        kl_penalty="loss",
        kl_estimator="k3",
        aggregation="token_mean",
        source="Chen et al., NFT, 2025: token-level normalization (App. C); no KL in their runs",
    ),
    "sppo": Algorithm(
        advantage="sppo_soft_mean",
        policy_loss="sppo",
        kl_penalty="loss",
        kl_estimator="k3",
        aggregation="sequence_sum",
        source="Wu et al., SPPO, 2024, as verl's recipe: (log π/π_old − η(r − SoftMean_η(r)))² per sequence, η 1",
    ),
}
"""One line per algorithm: a new one is a row here (with an estimator and a loss from the registries)."""


PRESETS = {
    "spo": (
        ["algo=grpo", "rewards=[{kind: win_rate}]"],
        "SPO (Swamy et al. 2024): self-play with each sample's win proportion against its prompt's other samples as "
        "the reward, under a preference oracle (rewards=[{kind: win_rate, model: runs/pm/model}], else an LLM judge)",
    ),
    "dapo": (
        ["algo=grpo", "clip_high=0.28", "dynamic_sampling=true", "aggregation=token_mean", "updates_per_rollout=2"],
        "DAPO (Yu et al. 2025): GRPO with clip-higher 0.28, dynamic sampling, token-level loss and several "
        "updates per rollout (so the ratio leaves 1 and the clip acts)",
    ),
}
"""Algorithms that are a set of online settings under a name of their own (`rlxf dapo`, `rlxf.dapo`); the
user's settings win."""
