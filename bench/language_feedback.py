"""Measurements for `bash bench/language_feedback.sh`.

pairs OUT HELD_OUT MODEL: held-out pair accuracy of the seq2seq reward model, scoring each response by
    the sum and by the mean of its token rewards, beside "the longer response wins".
refined OUT REFINE_DIR GOLD: how a gold reward model scores each rewrite against its original.
"""

import json
import sys
from pathlib import Path

from rlxf.data import read_preferences
from rlxf.eval.stats import proportion
from rlxf.rewards.registry import build_reward_source


def pair_accuracy(out: str, held_out: str, model: str) -> None:
    pairs, _ = read_preferences(held_out)
    pairs = [p for p in pairs if not p.tie]
    source = build_reward_source("seq2seq", model=model)
    chosen = source.score([p.prompt for p in pairs], [p.chosen for p in pairs])
    rejected = source.score([p.prompt for p in pairs], [p.rejected for p in pairs])
    mean = lambda batch, i: batch.rewards[i].item() / max(batch.details[i]["tokens"], 1)  # noqa: E731
    results = {
        "pairs": len(pairs),
        "sum": proportion([float(chosen.rewards[i] > rejected.rewards[i]) for i in range(len(pairs))]).as_dict(),
        "mean_per_token": proportion([float(mean(chosen, i) > mean(rejected, i)) for i in range(len(pairs))]).as_dict(),
        "longer_wins": proportion([float(len(p.chosen) > len(p.rejected)) for p in pairs]).as_dict(),
        "kept_share_chosen": sum(d["kept_share"] for d in chosen.details) / len(pairs),
        "kept_share_rejected": sum(d["kept_share"] for d in rejected.details) / len(pairs),
    }
    Path(out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


def refined_gold(out: str, refine_dir: str, gold: str) -> None:
    pairs, _ = read_preferences(Path(refine_dir) / "pairs.jsonl")
    source = build_reward_source("reward_model", model=gold)
    rewrite = source.score([p.prompt for p in pairs], [p.chosen for p in pairs]).rewards
    original = source.score([p.prompt for p in pairs], [p.rejected for p in pairs]).rewards
    results = {
        "pairs": len(pairs),
        "rewrite_scores_higher": proportion((rewrite > original).float().tolist()).as_dict(),
        "mean_gold_original": float(original.mean()),
        "mean_gold_rewrite": float(rewrite.mean()),
        "mean_chars_original": sum(len(p.rejected) for p in pairs) / len(pairs),
        "mean_chars_rewrite": sum(len(p.chosen) for p in pairs) / len(pairs),
    }
    Path(out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    {"pairs": pair_accuracy, "refined": refined_gold}[sys.argv[1]](*sys.argv[2:])
