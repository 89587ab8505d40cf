"""A judge of one's own from people's labels (JudgeLM/PandaLM-style verdicts, LoRA through `rlxf sft`):
the tiny model that cannot answer a judge's question learns to answer it as the people did, and
serves as a pairwise reward."""

import json

from rlxf.config import load_config
from rlxf.recipes.ai_feedback import AnnotateConfig, JudgeDataConfig, annotate, write_judge_data
from rlxf.recipes.sft import SFTConfig, train_sft
from rlxf.rewards.registry import build_reward_source


def test_a_lora_judge_trained_on_peoples_verdicts_agrees_with_them_and_rewards_like_them(tmp_path):
    # people prefer "yes" to "no", whatever the question; held-out questions are new
    rows = [{"prompt": f"question {i}", "chosen": "yes", "rejected": "no"} for i in range(120)]
    (tmp_path / "people.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = write_judge_data(
        load_config(JudgeDataConfig, None, [f"output_dir={tmp_path / 'jd'}", f"data.path={tmp_path / 'people.jsonl'}"])
    )
    train_sft(
        load_config(
            SFTConfig,
            None,
            [
                f"output_dir={tmp_path / 'judge'}",
                "policy.name=tiny-llama",
                "policy.lora.rank=16",
                "policy.lora.alpha=32",
                f"data.path={tmp_path / 'jd/train.jsonl'}",
                "data.max_length=1024",
                "data.eval_fraction=0.05",
                "train.max_steps=150",
                "train.batch_size=8",
                "train.lr=5e-3",
                "train.scheduler=constant",
            ],
        )
    )
    judged = {}
    for name, model in (("untrained", "tiny-llama"), ("trained", str(tmp_path / "judge/model"))):
        results = annotate(
            load_config(
                AnnotateConfig,
                None,
                [
                    f"output_dir={tmp_path / name}",
                    f"data.path={tmp_path / 'jd/held_out.jsonl'}",
                    f"judges=[{model}]",
                    "aspects=[overall]",
                    "mode=pairwise",
                    "max_new_tokens=24",
                ],
            )
        )
        judged[name] = results["agreement_with_people"][f"judge {model}"]
    assert data["eval_pairs"] >= 8
    assert judged["untrained"]["compared"] == 0  # noise: no verdict parses
    assert judged["trained"]["compared"] == data["eval_pairs"] and judged["trained"]["accuracy_on_decided"] == 1.0

    judge = build_reward_source("judge", model=str(tmp_path / "judge/model"), mode="pairwise")
    prompts = [[{"role": "user", "content": "question 999"}]] * 2
    assert judge.score(prompts, ["yes", "no"], reference=["no", "yes"]).rewards.tolist() == [1.0, 0.0]
