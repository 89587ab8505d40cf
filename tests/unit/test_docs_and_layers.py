"""docs/algorithms.md lists what the registries hold and says what the defaults do; the package's
layering holds (import-linter contracts in pyproject.toml)."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rlxf.advantages import ADVANTAGE_ESTIMATORS
from rlxf.losses.policy import POLICY_LOSSES
from rlxf.losses.preference import PREFERENCE_LOSSES
from rlxf.recipes.online_config import ALGORITHMS
from rlxf.rewards.registry import REWARD_SOURCES, reward_source_options

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "algorithms.md").read_text(encoding="utf-8")


def table(first_header: str) -> dict[str, list[str]]:
    """The rows of the markdown table whose first header cell is ``first_header``, by first cell
    (backticks dropped), each with its cells."""
    lines = DOC.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells
    return rows


def names(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def test_the_algorithm_table_is_the_registry_and_its_defaults():
    rows = table("`algo`")
    assert set(rows) == set(ALGORITHMS)
    for name, algorithm in ALGORITHMS.items():
        _, advantage, loss, kl, aggregation, _ = rows[name]
        assert names(advantage) == [algorithm.advantage], name
        assert names(loss) == [algorithm.policy_loss], name
        assert kl == f"{algorithm.kl_penalty}, {algorithm.kl_estimator}", name
        assert names(aggregation) == [algorithm.aggregation], name


def test_the_estimator_loss_and_reward_tables_list_their_registries():
    estimators = table("`advantage`")
    assert set(estimators) == set(ADVANTAGE_ESTIMATORS)
    for name, estimator in ADVANTAGE_ESTIMATORS.items():
        assert estimators[name][1].split(", ") == list(estimator.produces), name
    losses = table("`policy_loss`")
    assert set(losses) == set(POLICY_LOSSES)
    for name, loss in POLICY_LOSSES.items():
        assert losses[name][1].split(", ") == list(loss.inputs), name
    sources = table("`kind`")
    assert set(sources) == set(REWARD_SOURCES)
    for kind in REWARD_SOURCES:
        assert names(sources[kind][1]) == reward_source_options(kind), kind
    assert set(table("name")) >= set(PREFERENCE_LOSSES)


def test_cli_help_lists_the_registries(capsys):
    from rlxf.cli import main

    assert main(["grpo", "--help"]) == 0
    shown = capsys.readouterr().out
    for registry in (ALGORITHMS, ADVANTAGE_ESTIMATORS, POLICY_LOSSES, REWARD_SOURCES):
        for name in registry:
            assert name in shown


def test_the_import_layering_holds():
    linter = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if linter is None:
        pytest.fail("lint-imports is missing: pip install -e '.[dev]' installs import-linter")
    done = subprocess.run([linter, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "BROKEN" not in done.stdout and done.stdout.count("KEPT") >= 4
