"""Prompt files and the rewrite for `bash bench/verbal_feedback.sh`: GSM8K word problems in scope,
bare arithmetic near it (math, but no word problem), the shipped HH prompts out of scope.

The feedback is "When you solve a math word problem, begin with 'Let's think step by step.'". The
embedded model cannot be relied on to rewrite its answers that way (the run reports how many of its
rewrites do); `prepend` stands in for an instruction-following rewriter."""

import json
import sys
from pathlib import Path

from rlxf.data.tasks import arithmetic

OPENING = "Let's think step by step."


def prepend(prompt: str, answer: str, feedback: str) -> str:
    return f"{OPENING} {answer}"


def write_prompt_files(gsm8k: str, out: str, count: int = 48) -> None:
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    questions = [json.loads(line)["question"] for line in Path(gsm8k).read_text().splitlines()[:count]]
    (out_dir / "in_scope.jsonl").write_text("".join(json.dumps({"prompt": q}) + "\n" for q in questions))
    sums = [p.messages[0]["content"] for p in arithmetic(count, digits=2, operation="*", seed=3)]
    (out_dir / "near_scope.jsonl").write_text("".join(json.dumps({"prompt": q}) + "\n" for q in sums))


if __name__ == "__main__":
    write_prompt_files(sys.argv[1], sys.argv[2])
