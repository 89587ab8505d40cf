"""`rlxf mpo`: Mixed Preference Optimization — DPO on the easy pairs, then online RL on the hard ones
with the DPO model as the starting point and the KL reference.

Gou & Nguyen, "Mixed Preference Optimization: Reinforcement Learning with Data Selection and Better
Reference Model" (2024): a reward model scores both responses of every pair; pairs with a large reward
gap are easy (their labels are clear, and DPO learns them well offline), those with a small gap are hard
(left to PPO, which explores with the reward model). Stages:
    1. split: each pair's margin r(chosen) − r(rejected) under ``reward_model``; the ``easy_fraction`` with
       the largest margins → easy.jsonl, the prompts of the rest → hard_prompts.jsonl
    2. DPO on easy.jsonl                                   (dpo/, the `rlxf dpo` recipe)
    3. online RL on hard_prompts.jsonl from dpo/model, KL to it, rewarded by ``reward_model`` (online/)
The paper's abstract fixes the order of the stages and the reference; the split's cut (a share of pairs
here, the signed margin so a pair the reward model contradicts counts as hard) is rlxf's choice.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from rlxf.config import Checked, ConfigError, DataSection, ModelSection, TrainSection
from rlxf.data.formats import read_preferences
from rlxf.recipes.common import report_bad_rows, resolve_path, say, write_json
from rlxf.recipes.dpo import DPOConfig, train_dpo
from rlxf.recipes.online import OnlineConfig, train_online
from rlxf.recipes.online_sections import RewardSection, TaskSection
from rlxf.rewards.learned import LearnedReward


@dataclass
class MPOConfig(Checked):
    output_dir: str = "runs/mpo"
    """split/ (easy.jsonl, hard_prompts.jsonl, margins.json), dpo/ and online/."""
    data: DataSection = field(default_factory=lambda: DataSection(max_length=512))
    """The preference pairs to split (path, format, on_bad_row); each stage holds out its own share."""
    reward_model: str = ""
    """A folder saved by `rlxf rm`: the margins that split the pairs, and the online stage's reward."""
    easy_fraction: float = 0.5
    """Share of the pairs, largest margin first, that DPO learns; the rest are the online stage's prompts."""
    dpo: DPOConfig = field(default_factory=lambda: DPOConfig(train=TrainSection(epochs=1, batch_size=8, lr=5e-7)))
    """Stage 2 (its data.path is set to the easy pairs; its policy is the model both stages start from)."""
    online: OnlineConfig = field(
        default_factory=lambda: OnlineConfig(
            algo="ppo",
            kl_coef=0.05,
            policy=ModelSection(name="set-by-mpo"),
            task=TaskSection(name="file", path="set-by-mpo"),
        )
    )
    """Stage 3 (policy, task.path and rewards are set: the DPO model, the hard prompts, the reward model)."""

    def check(self):
        if not self.reward_model:
            raise ValueError("give the reward model that splits the pairs: reward_model=runs/rm/model")
        if not 0 < self.easy_fraction < 1:
            raise ValueError(f"easy_fraction must be in (0, 1), got {self.easy_fraction}")
        if self.online.kl_coef <= 0:
            raise ValueError("online.kl_coef must be > 0: MPO keeps the DPO model as the online stage's KL reference")


def run_mpo(config: MPOConfig) -> dict:
    output_dir = Path(config.output_dir)
    split = split_by_margin(config, output_dir / "split")
    dpo = config.dpo
    dpo.output_dir, dpo.data.path = str(output_dir / "dpo"), split["easy_path"]
    say(f"mpo: DPO on {split['easy']} easy pairs")
    dpo_results = train_dpo(dpo)
    online = config.online
    online.output_dir, online.policy.name = str(output_dir / "online"), str(output_dir / "dpo" / "model")
    online.reference.name = ""  # the reference is the starting policy: the DPO model
    online.task.name, online.task.path = "file", split["hard_path"]
    online.rewards = [RewardSection(kind="reward_model", model=config.reward_model)]
    say(f"mpo: online RL on the prompts of {split['hard']} hard pairs, from the DPO model")
    online_results = train_online(online)
    summary = {"split": split, "dpo": dpo_results.get("held_out", {}), "online": online_results.get("held_out", {})}
    write_json(output_dir / "mpo.json", summary)
    return summary


def split_by_margin(config: MPOConfig, folder: Path) -> dict:
    """easy.jsonl (the pairs with the largest margins) and hard_prompts.jsonl (the other pairs' prompts,
    each once), and margins.json; kept as they are when an earlier run of the same split wrote them."""
    folder.mkdir(parents=True, exist_ok=True)
    summary_path = folder / "margins.json"
    path = resolve_path(config.data.path)
    key = {
        "data": str(config.data.path),
        "data_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "reward_model": config.reward_model,
        "easy_fraction": config.easy_fraction,
    }
    if summary_path.exists():
        try:
            summary = json.loads(summary_path.read_text())
            made_otherwise = summary["key"] != key
        except (ValueError, KeyError, TypeError):
            raise ConfigError(f"{summary_path} is not a split rlxf mpo wrote: delete {folder} to split again") from None
        if made_otherwise:
            raise ConfigError(
                f"{folder} holds a split of other data or settings ({summary['key']}): use another output_dir"
            )
        return summary
    records, bad = read_preferences(path, format=config.data.format, on_bad_row=config.data.on_bad_row)
    report_bad_rows(bad, path)
    judge = LearnedReward(config.reward_model)
    chosen = judge.score([r.prompt for r in records], [r.chosen for r in records]).rewards
    rejected = judge.score([r.prompt for r in records], [r.rejected for r in records]).rewards
    margins = (chosen - rejected).tolist()
    order = sorted(range(len(records)), key=lambda i: -margins[i])
    cut = round(config.easy_fraction * len(records))
    easy, hard = order[:cut], order[cut:]
    if not easy or not hard:
        raise ConfigError(f"easy_fraction={config.easy_fraction} of {len(records)} pairs leaves a stage with none")
    write_rows(folder / "easy.jsonl", [pair_row(records[i]) for i in sorted(easy)])
    prompts = {json.dumps(records[i].prompt): records[i].prompt for i in sorted(hard)}
    write_rows(folder / "hard_prompts.jsonl", [{"prompt": p} for p in prompts.values()])
    summary = {
        "key": key,
        "easy": len(easy),
        "hard": len(hard),
        "hard_prompts": len(prompts),
        "margin_cut": margins[order[cut - 1]],
        "easy_mean_margin": sum(margins[i] for i in easy) / len(easy),
        "hard_mean_margin": sum(margins[i] for i in hard) / len(hard),
        "easy_path": str(folder / "easy.jsonl"),
        "hard_path": str(folder / "hard_prompts.jsonl"),
    }
    write_json(summary_path, summary)
    say(f"mpo: {len(easy)} easy pairs (margin >= {summary['margin_cut']:.3f}), {len(hard)} hard")
    return summary


def pair_row(record) -> dict:
    """The pair as rlxf's preference layout writes it, its tie, margin and weight kept."""
    row = {"prompt": record.prompt, "chosen": record.chosen, "rejected": record.rejected, "tie": record.tie}
    row.update(weight=record.weight, **({"margin": record.margin} if record.margin is not None else {}))
    return row


def write_rows(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
