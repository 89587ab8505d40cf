"""From people to a reward model: set up with `rlxf feedback`, label over the API, export a
snapshot, train `rlxf rm` on it."""

import json
import re
import subprocess
import sys

from fastapi.testclient import TestClient

from rlxf.data import read_preferences
from rlxf.feedback.export import records_of
from rlxf.feedback.server import create_app
from rlxf.feedback.store import Answer, Store
from rlxf.train.metrics import read_metrics


def rlxf(*args) -> str:
    result = subprocess.run([sys.executable, "-m", "rlxf.cli", *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_records_follow_the_order_the_labeler_saw():
    def answer(question, payload):
        return Answer(id=7, item_id=3, question=question, payload=payload)

    prompt, shown = [{"role": "user", "content": "q"}], ["left text", "right text"]
    pair = records_of(answer("pairwise", {"choice": "B", "reason": "r"}), prompt, shown, "ana")["pairwise"][0]
    assert (pair["chosen"], pair["rejected"], pair["tie"], pair["annotator"]) == (
        "right text",
        "left text",
        False,
        "ana",
    )
    assert records_of(answer("pairwise", {"choice": "tie"}), prompt, shown, "ana")["pairwise"][0]["tie"]
    both_bad = records_of(answer("pairwise", {"choice": "both_bad"}), prompt, shown, "ana")["labeled"]
    assert [(r["completion"], r["label"]) for r in both_bad] == [("left text", 0.0), ("right text", 0.0)]
    ranked = records_of(answer("ranking", {"order": [1, 0]}), prompt, shown, "ana")["rankings"][0]
    assert ranked["responses"] == ["right text", "left text"]
    spans = {"spans": [{"candidate": 1, "start": 0, "end": 5, "tag": "error"}]}
    rows = records_of(answer("spans", spans), prompt, shown, "ana")["spans"]
    assert rows[0]["spans"] == [] and rows[1]["spans"][0]["text"] == "right"
    liked = records_of(answer("reaction", {"reaction": "dislike"}), prompt, ["only"], "ana")["labeled"][0]
    assert liked["label"] == 0.0


def test_labels_given_over_the_api_export_to_a_snapshot_that_trains_a_reward_model(tmp_path, small_hh):
    db, out = tmp_path / "feedback.db", tmp_path / "snapshots"
    rlxf("feedback", "create-project", f"db={db}", "name=harmless", "question=pairwise", "overlap=2")
    rlxf("feedback", "import", f"db={db}", "project=harmless", f"file={small_hh}")
    tokens = {}
    for name in ("ana", "ben"):
        created = rlxf("feedback", "add-user", f"db={db}", f"name={name}")
        tokens[name] = re.search(r"API token \(shown once\): (\S+)", created).group(1)
        rlxf("feedback", "add-member", f"db={db}", "project=harmless", f"name={name}")

    pairs, _ = read_preferences(small_hh)
    truth = {pair.chosen for pair in pairs}
    client = TestClient(create_app(Store(db), secret="s"))
    first_answer = {}
    for name, token in tokens.items():
        bearer = {"Authorization": f"Bearer {token}"}
        while (response := client.get("/api/projects/1/next", headers=bearer)).status_code == 200:
            task = response.json()
            choice = "A" if task["responses"][0] in truth else "B"  # both follow the data's preference
            body = {
                "item_id": task["item_id"],
                "answer": {"choice": choice},
                "idempotency_key": f"{name}-item-{task['item_id']:04d}",
            }
            stored = client.post("/api/projects/1/answers", json=body, headers=bearer)
            assert stored.status_code == 201
            first_answer.setdefault(name, (task["item_id"], stored.json()["answer_id"]))
    item, answer_id = first_answer["ana"]  # ana changes her mind about her first item: a tie
    correction = {"item_id": item, "answer": {"choice": "tie"}, "idempotency_key": "ana-fix-1", "supersedes": answer_id}
    assert (
        client.post(
            "/api/projects/1/answers", json=correction, headers={"Authorization": f"Bearer {tokens['ana']}"}
        ).status_code
        == 201
    )

    rlxf("feedback", "export", f"db={db}", f"out={out}")
    snapshot = out / "harmless" / "v0001"
    manifest = json.loads((snapshot / "manifest.json").read_text())
    assert manifest["answers"] == 80 and manifest["labelers"] == ["ana", "ben"]
    rows = [json.loads(line) for line in (snapshot / "pairwise.jsonl").read_text().splitlines()]
    assert len(rows) == 80 and sum(r["tie"] for r in rows) == 1
    assert all(r["chosen"] in truth for r in rows if not r["tie"])  # resolved through the shown order
    assert [r for r in rows if r["tie"]][0]["answer_id"] > answer_id

    rlxf("feedback", "export", f"db={db}", f"out={out}")
    assert (out / "harmless" / "v0002" / "pairwise.jsonl").exists()  # a new version, the old one kept

    run = tmp_path / "rm"
    rlxf(
        "rm",
        f"output_dir={run}",
        "model.name=tiny-llama",
        f"data.path={snapshot / 'pairwise.jsonl'}",
        "data.max_length=160",
        "data.max_prompt_length=96",
        "data.eval_fraction=0.25",
        "data.limit=8",
        "train.max_steps=30",
        "train.batch_size=4",
        "train.lr=3e-3",
        "train.scheduler=constant",
    )
    losses = [r["loss"] for r in read_metrics(run / "metrics.jsonl", "train")]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    assert (run / "model" / "config.json").exists()
