"""The over-optimization watch of `rlxf online`: a gold signal scored beside the optimized (proxy)
reward every step, and one warning when the proxy keeps rising while the gold falls (Gao et al.,
"Scaling Laws for Reward Model Overoptimization", ICML 2023), naming the step where they parted; and
the samples it hands to people, whose answers `rlxf report RUN_DIR labels=...` reads as gold."""

from __future__ import annotations

import json

import torch

from rlxf.eval.overoptimization import parting_step
from rlxf.parallel import distributed
from rlxf.recipes.common import say
from rlxf.recipes.online_rollout import score
from rlxf.train import Run


class OveroptimizationWatch:
    """The gold source, the per-step proxy and gold means so far (resumed with the run), and the step
    where they parted."""

    def __init__(self, window: int, gold, run: Run):
        self.window, self.source, self.run = window, gold, run
        self.proxy: list[float] = []
        self.gold: list[float] = []
        self.parted_at: int | None = None
        if saved := run.resumed_files.get("watch"):
            self.proxy, self.gold = saved["proxy"].tolist(), saved["gold"].tolist()
            self.parted_at = int(saved["parted_at"]) if int(saved["parted_at"]) >= 0 else None

    def observe(self, prompts, rollout, metrics: dict[str, float]) -> None:
        """The gold signal on this step's samples (gold, gold/<source>) beside the reward it does not
        drive; both means over ranks join the series; a warning the first time they part."""
        gold = score(self.source, prompts, rollout)
        metrics.update(gold.metrics("gold"))
        means = distributed.mean_over_ranks({"reward": metrics["reward"], "gold": metrics["gold"]})
        self.proxy.append(means["reward"])
        self.gold.append(means["gold"])
        if self.parted_at is None and (peak := parting_step(self.proxy, self.gold, self.window)) is not None:
            self.parted_at = peak
            say(
                f"warning: over-optimization: the reward rose while the gold signal fell since step {peak + 1} "
                f"(gold {self.gold[peak]:.3g} then, {self.gold[-1]:.3g} now); see report.md"
            )
        metrics["overoptimization"] = float(self.parted_at is not None)
        if self.parted_at is not None:
            metrics["gold_peak_step"] = float(self.parted_at + 1)
        self.run.save_with_checkpoint(
            "watch",
            {
                "proxy": torch.tensor(self.proxy, dtype=torch.float64),
                "gold": torch.tensor(self.gold, dtype=torch.float64),
                "parted_at": torch.tensor(-1 if self.parted_at is None else self.parted_at),  # the verdict stands
            },
        )


class LabelerExport:
    """Every ``every`` steps, ``samples`` of the step's samples appended to watch/for_labelers.jsonl as
    `rlxf feedback import` rows, each response tagged with the step that wrote it
    (``"model": "<output_dir, absolute>/step-N"``); the feedback app's export carries the tag back
    beside each answer, so a report can put people's verdicts on the run's steps. A resumed run drops
    the rows of steps after its checkpoint (they are written again), and a last line cut off by a
    kill."""

    def __init__(self, every: int, samples: int, run: Run):
        self.every, self.samples, self.run = every, samples, run
        self.path = run.dir / "watch" / "for_labelers.jsonl"
        if distributed.is_main():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            kept = [row for row in _complete_rows(self.path) if row["step"] <= run.step]
            self.path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in kept), "utf-8")

    def observe(self, prompts, rollout) -> None:
        step = self.run.step + 1  # the step being trained (run.step counts finished ones)
        if step % self.every or not distributed.is_main():
            return
        count = min(self.samples, len(rollout.texts))
        picked = [i * len(rollout.texts) // count for i in range(count)]  # spread over the step's prompts
        with self.path.open("a", encoding="utf-8") as out:
            for i in picked:
                response = {"text": rollout.texts[i], "model": f"{self.run.dir.resolve()}/step-{step}"}
                row = {"prompt": prompts[rollout.prompt_index[i]].messages, "responses": [response], "step": step}
                out.write(json.dumps(row, ensure_ascii=False) + "\n")


def _complete_rows(path) -> list[dict]:
    """The rows of a file :class:`LabelerExport` wrote, but for a last line a kill cut off."""
    rows = []
    for line in path.read_text("utf-8").splitlines() if path.exists() else []:
        try:
            rows.append(json.loads(line))
        except ValueError:
            break  # only the last line can be cut off: every earlier one was flushed whole
    return rows
