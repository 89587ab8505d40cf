"""People as gold: the answers read back onto the run's steps, bad rows named, the samples handed out."""

import json
import math
from types import SimpleNamespace

import pytest

from rlxf.eval.people_gold import people_section, people_series, read_people_scores
from rlxf.feedback.export import records_of
from rlxf.recipes.online_watch import LabelerExport


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_answers_go_to_the_steps_of_this_run_only(tmp_path, monkeypatch):
    run = tmp_path / "runs" / "grpo"
    labels = write(
        tmp_path / "labeled.jsonl",
        [
            {"completion": "a", "label": 1.0, "model": f"{run}/step-2"},
            {"completion": "b", "label": 0.0, "model": f"{tmp_path}/runs/../runs/grpo/step-2"},  # the same folder
            {"completion": "c", "label": 0.0, "model": f"{run}/step-10"},
            {"completion": "d", "label": 1.0, "model": f"{tmp_path}/other/grpo/step-2"},  # another run, same name
            {"completion": "e", "label": 1.0, "model": f"{run}/model"},  # the final model, no step
            {"completion": "f", "label": 1.0},  # imported without a model
        ],
    )
    scores = read_people_scores(labels, run)
    assert scores.by_step == {2: [1.0, 0.0], 10: [0.0]}
    assert (scores.other_runs, scores.untagged) == (2, 1)
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path / "runs")
    assert read_people_scores(labels, "grpo").by_step == scores.by_step  # a relative run folder is the same run


def test_a_rating_reads_its_aspect_or_the_mean_of_its_aspects(tmp_path):
    labels = write(
        tmp_path / "ratings.jsonl", [{"scores": {"helpful": 4, "honest": 1}, "model": f"{tmp_path}/r/step-1"}]
    )
    assert read_people_scores(labels, tmp_path / "r", "honest").by_step == {1: [1.0]}
    assert read_people_scores(labels, tmp_path / "r").by_step == {1: [2.5]}


@pytest.mark.parametrize(
    "row, message",
    [
        ("{not json", "line 2: not JSON"),
        ({"label": "yes", "model": "r/step-1"}, "line 2, field label: expected a number"),
        ({"label": float("nan"), "model": "r/step-1"}, "line 2, field label: expected a number"),
        ({"scores": {"helpful": 4}, "model": "r/step-1"}, "line 2, field scores: no aspect 'honest'"),
        ({"completion": "x", "model": "r/step-1"}, "line 2: expected a label"),
        ({"label": 1, "model": 3}, "line 2, field model: expected a string"),
        ({"label": True, "model": "r/step-1"}, "line 2, field label: expected a number"),
        ([1, 2], "line 2: expected an object, got list"),
    ],
)
def test_a_bad_row_is_named_by_file_line_and_field(tmp_path, monkeypatch, row, message):
    monkeypatch.chdir(tmp_path)
    good = {"scores": {"honest": 1}, "label": 1, "model": "r/step-1"}
    labels = write(tmp_path / "labels.jsonl", [good, row if not isinstance(row, list) else json.dumps(row)])
    with pytest.raises(ValueError, match=f"labels.jsonl, {message}"):
        read_people_scores(labels, "r", "honest" if "scores" in str(row) else "")


def test_a_snapshot_folder_gives_the_file_with_this_runs_answers(tmp_path):
    write(tmp_path / "labeled.jsonl", [{"label": 1, "model": f"{tmp_path}/other/step-1"}])
    write(tmp_path / "ratings.jsonl", [{"scores": {"a": 3}, "model": f"{tmp_path}/runs/r/step-4"}])
    assert read_people_scores(tmp_path, tmp_path / "runs" / "r").by_step == {4: [3.0]}
    with pytest.raises(ValueError, match="with answers about .*nobody's samples"):
        read_people_scores(tmp_path, tmp_path / "nobody")
    with pytest.raises(FileNotFoundError, match="no such file or snapshot folder"):
        read_people_scores(tmp_path / "missing", "r")


def test_the_series_pairs_each_labeled_step_with_its_reward():
    scores = SimpleNamespace(by_step={3: [1.0, 0.0, 0.0], 1: [1.0]})
    series = people_series(scores, [{"step": 1, "reward": 0.5}, {"step": 2, "reward": 0.6}, {"step": 3, "reward": 0.9}])
    assert [(p["step"], p["reward"], p["n"]) for p in series] == [(1, 0.5, 1), (3, 0.9, 3)]
    assert series[1]["people"] == pytest.approx(1 / 3)
    assert series[1]["people_se"] == pytest.approx(math.sqrt(1 / 3) / math.sqrt(3))  # sample sd of (1, 0, 0)
    assert math.isnan(series[0]["people_se"])


def test_the_section_names_the_step_where_people_and_reward_parted(tmp_path):
    people = [0.5, 0.8, 0.9, 1.0, 0.9, 0.6, 0.3, 0.2, 0.1, 0.1]  # rises, then falls
    reward = [0.1 * s for s in range(1, 11)]  # rises throughout
    scores = SimpleNamespace(by_step={s: [v] for s, v in enumerate(people, 1)}, other_runs=1, untagged=0)
    train = [{"step": s, "reward": r} for s, r in enumerate(reward, 1)]
    lines, summary = people_section(scores, train, tmp_path, window=3)
    # people's trailing 3-step means: 0.733 at step 3, 0.9 at 4, 0.933 at 5 (the peak), 0.8 at 6, ...,
    # 0.133 at 10; the reward rises by exactly 0.1 a step, so it has no noise and any rise counts
    assert summary["parted_at_step"] == 5 and summary["answers"] == 10
    assert any("by people's verdict" in line and "from step 5" in line for line in lines)
    assert any("Not counted: 1 about other runs'" in line for line in lines)
    flat = SimpleNamespace(by_step={s: [0.5 + 0.01 * s] for s in range(1, 11)}, other_runs=0, untagged=0)
    lines, summary = people_section(flat, train, tmp_path, window=3)
    assert summary["parted_at_step"] is None and any("did not fall" in line for line in lines)


def test_samples_are_handed_out_spread_over_the_step_and_cut_back_on_resume(tmp_path):
    run = SimpleNamespace(dir=tmp_path, step=0)
    export = LabelerExport(every=2, samples=2, run=run)
    rollout = SimpleNamespace(texts=["a0", "a1", "b0", "b1"], prompt_index=[0, 0, 1, 1])
    prompts = [SimpleNamespace(messages=[{"role": "user", "content": p}]) for p in ("A", "B")]
    for step in range(4):  # steps 1-4 are trained; 2 and 4 are handed out
        run.step = step
        export.observe(prompts, rollout)
    rows = [json.loads(line) for line in export.path.read_text().splitlines()]
    assert [(r["step"], r["responses"][0]["text"], r["prompt"][0]["content"]) for r in rows] == [
        (2, "a0", "A"),
        (2, "b0", "B"),
        (4, "a0", "A"),
        (4, "b0", "B"),
    ]
    assert rows[0]["responses"][0]["model"] == f"{tmp_path.resolve()}/step-2"
    run.step = 3  # resumed from the checkpoint of step 3: step 4 is trained again
    LabelerExport(every=2, samples=2, run=run)
    assert [json.loads(line)["step"] for line in export.path.read_text().splitlines()] == [2, 2]
    run.step = 2  # a checkpoint at exactly an exported step keeps that step's rows
    with export.path.open("a") as out:
        out.write('{"prompt": "cut off by a kill", "respon')
    LabelerExport(every=2, samples=2, run=run)
    assert [json.loads(line)["step"] for line in export.path.read_text().splitlines()] == [2, 2]


def test_the_export_names_the_model_that_wrote_a_labeled_response():
    answer = SimpleNamespace(question="reaction", payload={"reaction": "love"}, item_id=1, id=2)
    row = records_of(answer, [], ["text"], "ana", ["runs/x/step-3"])["labeled"][0]
    assert row["model"] == "runs/x/step-3" and row["label"] == 1.0
    assert "model" not in records_of(answer, [], ["text"], "ana", [""])["labeled"][0]
    both_bad = SimpleNamespace(question="pairwise", payload={"choice": "both_bad"}, item_id=1, id=2)
    rows = records_of(both_bad, [], ["x", "y"], "ana", ["m/step-1", "m/step-2"])["labeled"]
    assert [r["model"] for r in rows] == ["m/step-1", "m/step-2"]
