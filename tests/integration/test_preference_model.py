"""`rlxf pm` learns what a Bradley-Terry reward model cannot: preferences that go round in a cycle."""

import json

import pytest

from rlxf.cli import main

BEATS = [("paper", "rock"), ("scissors", "paper"), ("rock", "scissors")]  # each beats the next: no ranking fits


@pytest.fixture
def cyclic(tmp_path):
    def write(name, copies):
        rows = [
            {"prompt": f"Game {i}: pick a hand.", "chosen": winner, "rejected": loser}
            for i in range(copies)
            for winner, loser in BEATS
        ]
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path

    return write("train.jsonl", 16), write("held.jsonl", 2)


def run(command, folder, data, steps=40):
    train, held = data
    argv = [command, f"output_dir={folder}", "model.name=tiny-llama", f"data.path={train}", f"data.eval_path={held}",
            "data.max_length=64", "data.max_prompt_length=32", f"train.max_steps={steps}", "train.batch_size=8",
            "train.lr=1e-3", "train.scheduler=constant"]  # fmt: skip
    assert main(argv) == 0
    return json.loads((folder / "eval.json").read_text())["held_out"]


def test_a_preference_model_learns_a_cycle_that_a_reward_model_cannot(tmp_path, cyclic):
    preference = run("pm", tmp_path / "pm", cyclic)
    assert preference["accuracy"] == 1.0 and preference["pairs"] == 6
    assert 0 <= preference["ece"] <= 0.5 and (tmp_path / "pm" / "reliability.png").stat().st_size > 5000
    reward = run("rm", tmp_path / "rm", cyclic, steps=8)
    assert reward["accuracy"] <= 2 / 3 + 1e-9  # any three scores misorder one pair of the cycle
