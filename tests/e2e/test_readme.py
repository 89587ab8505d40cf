"""The README's "Your data, your model, your reward" section runs as written: every command and
the Python example, on files of the shapes they name, with only the model and the run's length
made small (a tiny model, one step)."""

import json
import re
import shlex
from pathlib import Path

import pytest

from rlxf.cli import main

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
README = (REPO / "README.md").read_text(encoding="utf-8")
SECTION = README.split("## Your data, your model, your reward", 1)[1].split("\n## ", 1)[0]

TINY_POLICY = ["policy.name=tiny-llama", "train.max_steps=1", "train.batch_size=2"]
TINY_DATA = ["data.limit=8", "data.eval_limit=4", "data.max_length=64", "data.max_prompt_length=32"]
SMALL = {
    "rm": ["train.max_steps=1", "train.batch_size=2", *TINY_DATA],
    "dpo": [*TINY_POLICY, *TINY_DATA],
    "kto": [*TINY_POLICY, *TINY_DATA],
    "sft": [*TINY_POLICY, *TINY_DATA],
    "eval": ["reference=tiny-llama", "generation.num_prompts=2", "generation.max_new_tokens=4", *TINY_DATA],
}
SMALL_ONLINE = [*TINY_POLICY, "sampling.max_new_tokens=4", "task.limit=8"]
SMALL.update(
    pm=["train.max_steps=1", "train.batch_size=2", *TINY_DATA],
    nash_md=[*TINY_POLICY, "max_new_tokens=4", "task.limit=8", "task.eval_count=4"],
    games=["iterations=10", "sweep=[0.1]", "responses=3"],
)
PLACEHOLDERS = {"/path/to/hf_model": "tiny-llama"}


def readme_blocks() -> list[list[list[str]]]:
    """The section's shell blocks, each as the arguments of its `rlxf` lines (comments dropped)."""
    blocks = []
    for block in re.findall(r"```bash\n(.*?)```", SECTION, flags=re.DOTALL):
        lines = [line for line in block.splitlines() if line.startswith(".venv/bin/rlxf ")]
        blocks.append([[PLACEHOLDERS.get(a, a) for a in shlex.split(line, comments=True)[1:]] for line in lines])
    return blocks


@pytest.fixture
def user_folder(tmp_path, monkeypatch):
    """A folder holding the files the section names, in the shapes its comments give."""
    monkeypatch.chdir(tmp_path)
    for shipped in ("configs", "data"):
        (tmp_path / shipped).symlink_to(REPO / shipped)
    pairs = (REPO / "data" / "hh_rlhf_harmless_demo.jsonl").read_text(encoding="utf-8").splitlines()[:40]
    Path("my_pairs.jsonl").write_text("\n".join(pairs) + "\n", encoding="utf-8")
    rows = {
        "my_thumbs.jsonl": [{"prompt": f"Is {n} even?", "completion": "yes", "label": n % 2 == 0} for n in range(12)],
        "my_demos.jsonl": [{"prompt": f"Say {n}.", "completion": str(n)} for n in range(12)],
        "my_prompts.jsonl": [{"prompt": f"What is {n} + 1?", "answer": str(n + 1)} for n in range(8)],
    }
    for name in ("gsm8k_train.jsonl", "mbpp_train.jsonl"):
        rows[name] = [json.loads(line) for line in (SHARED_DATA / name).read_text().splitlines()[:20]]
    rows["prompts.jsonl"] = [{"prompt": f"Write a word that starts with {c}."} for c in "abcdefghij"]
    rows["pairs.jsonl"] = [{"prompt": f"Say {n}.", "chosen": str(n), "rejected": "no"} for n in range(10)]
    for name, content in rows.items():
        Path(name).write_text("".join(json.dumps(r) + "\n" for r in content), encoding="utf-8")
    Path("my_rewards.py").write_text(
        "def correct(completions, answer, **kwargs):\n    return [float(a in c) for c, a in zip(completions, answer)]\n"
    )
    return tmp_path


@pytest.mark.slow
def test_the_readme_commands_run_as_written(user_folder, capsys):
    """The first block is one user's session (each command reads what an earlier one wrote); the
    online block's lines are alternatives, each run in a folder of its own."""
    session, alternatives, beyond = readme_blocks()
    assert len(session) >= 8 and len(alternatives) >= 7, "the section lost its commands"
    for args in session:
        extra = [] if "--help" in args else SMALL.get(args[0], SMALL_ONLINE)
        assert main([*args, *extra]) == 0, args
    assert "train.lr" in capsys.readouterr().out  # `rlxf dpo --help`
    for run in ("runs/my_rm", "runs/dpo", "runs/dpo_hh", "runs/kto", "runs/sft", "runs/eval", "runs/online"):
        assert (user_folder / run / "eval.json").exists(), run
    assert "kind: python" in (user_folder / "runs" / "online" / "config.yaml").read_text()
    for number, args in enumerate(alternatives):
        extra = [] if "--help" in args else [*SMALL_ONLINE, f"output_dir=runs/example-{number}"]
        assert main([*args, *extra]) == 0, args
        assert "--help" in args or (user_folder / f"runs/example-{number}/model").is_dir(), args
    for args in beyond:  # one session again: the preference model first, then a learner against it
        assert main([*args, *SMALL[args[0]]]) == 0, args
    assert (user_folder / "runs" / "pm" / "reliability.png").is_file()
    assert (user_folder / "runs" / "nash" / "eval.json").is_file() and (
        user_folder / "runs" / "games" / "report.md"
    ).is_file()


def test_the_readme_python_example_runs_as_written(tmp_path):
    (block,) = re.findall(r"```python\n(.*?)```", SECTION, flags=re.DOTALL)
    small = 'rewards=[correct], output_dir=OUT, sampling={"n": 2, "max_new_tokens": 4}, train={"max_steps": 1})'
    code = block.replace('"smollm2-135m-instruct"', '"tiny-llama"').replace("rewards=[correct])", small)
    assert code.count("tiny-llama") == 1 and "OUT" in code, "the example's call changed: update this test"
    namespace = {"OUT": str(tmp_path / "grpo")}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    assert namespace["result"].metrics["steps"] == 1 and (tmp_path / "grpo" / "model").is_dir()
