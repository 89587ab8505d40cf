import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
DEMO_DATA = ROOT / "data" / "hh_rlhf_harmless_demo.jsonl"

# Keep converted embedded models in one place across the test session (and CI runs).
os.environ.setdefault("RLXF_CACHE", str(ROOT / ".cache"))


@pytest.fixture
def small_hh(tmp_path) -> Path:
    """The first 40 shipped HH pairs as a file of their own."""
    lines = DEMO_DATA.read_text(encoding="utf-8").splitlines(keepends=True)[:40]
    path = tmp_path / "hh.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    return path


@pytest.fixture
def prompt_file(tmp_path) -> Path:
    """40 plain prompts; a tiny random model's samples contain a digit about half the time."""
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"write something {i}"}) + "\n" for i in range(40)))
    return path


@pytest.fixture
def small_qa(tmp_path) -> tuple[Path, Path]:
    """40 rows of the qa-feedback data, and their prompts (the first passage, then the question)."""
    from rlxf.data.fine_grained import qa_prompt

    rows = json.loads((SHARED_DATA / "qa_feedback_dev_feedback.json").read_text())[:40]
    path = tmp_path / "qa.json"
    path.write_text(json.dumps(rows))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": qa_prompt(r["question"], r["passages"][:1])}) + "\n" for r in rows)
    )
    return path, prompts
