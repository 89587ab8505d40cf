"""A seq2seq reward model (Zhou et al. 2025) on a tiny model: trained by `rlxf sft` on correction and
identity rows, it keeps the tokens of the response people chose and flags those of the one they did not,
and its token rewards reach PPO's per-token rewards."""

import json
from types import SimpleNamespace

import torch

from rlxf.config import load_config
from rlxf.models.tiny import tiny_tokenizer
from rlxf.recipes.language_feedback import CorrectionDataConfig, write_correction_data
from rlxf.recipes.online import OnlineConfig, train_online
from rlxf.recipes.online_rollout import dense_token_rewards
from rlxf.recipes.sft import SFTConfig, train_sft
from rlxf.rewards.base import RewardBatch
from rlxf.rewards.registry import build_reward_source
from tests.integration.test_recipes_learn import train_rows


def test_a_correction_model_rewards_the_chosen_tokens_and_penalizes_the_rejected(tmp_path):
    rows = [{"prompt": f"question {i}", "chosen": "yes indeed", "rejected": "no way"} for i in range(60)]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_correction_data(
        load_config(
            CorrectionDataConfig, None, [f"output_dir={tmp_path / 'cd'}", f"data.path={tmp_path / 'pairs.jsonl'}"]
        )
    )
    train_sft(
        load_config(
            SFTConfig,
            None,
            [
                f"output_dir={tmp_path / 'rm'}",
                "policy.name=tiny-llama",
                f"data.path={tmp_path / 'cd/train.jsonl'}",
                "data.max_length=512",
                "train.max_steps=80",
                "train.batch_size=8",
                "train.lr=3e-3",
                "train.scheduler=constant",
            ],
        )
    )
    source = build_reward_source("seq2seq", model=str(tmp_path / "rm/model"))
    prompts = [[{"role": "user", "content": "question 999"}]] * 2
    batch = source.score(prompts, ["yes indeed", "no way"])
    kept, flagged = batch.details
    assert kept["kept_share"] == 1.0 and batch.rewards[0] == kept["tokens"]  # every token +1
    assert flagged["kept_share"] < 0.5 and batch.rewards[1] < 0  # "no way" is not what it would write
    assert [end for end, _ in batch.span_rewards[0]][:3] == [1, 2, 3]  # byte tokens: one character each
    assert batch.span_rewards[0][-1][0] == len("yes indeed")

    # each verdict lands on the policy's token that ends where the verdict's token ends
    tokenizer = tiny_tokenizer()
    ids = tokenizer("no way", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    rollout = SimpleNamespace(completion_ids=[ids], mask=torch.ones(1, len(ids)))
    verdicts = [value for _, value in batch.span_rewards[1]]
    dense = dense_token_rewards(RewardBatch(batch.rewards[1:], span_rewards=batch.span_rewards[1:]), rollout, tokenizer)
    # one byte a token: verdicts 1-5 on tokens 0-4; the last character's and the end of turn's on token 5
    assert dense[0, :5].tolist() == verdicts[:5] and dense[0, 5].item() == sum(verdicts[5:]) and dense[0, 6] == 0

    # the same model as PPO's token-level reward, for one step
    prompt_file = tmp_path / "prompts.jsonl"
    prompt_file.write_text("".join(json.dumps({"prompt": f"question {i}"}) + "\n" for i in range(8)))
    config = load_config(
        OnlineConfig,
        None,
        [
            f"output_dir={tmp_path / 'ppo'}",
            "algo=ppo",
            "policy.name=tiny-llama",
            "task.name=file",
            f"task.path={prompt_file}",
            "task.eval_count=0",
            "sampling.n=2",
            "sampling.max_new_tokens=8",
            "train.batch_size=4",
            "train.max_steps=1",
            f"rewards=[{{kind: seq2seq, model: {tmp_path / 'rm/model'}, weight: 0.1}}]",
        ],
    )
    train_online(config)
    step = train_rows(tmp_path / "ppo")[0]
    assert step["reward"] < 0  # the policy's noise is not what the model would write: mostly −0.1 a token
