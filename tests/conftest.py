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
