"""`rlxf feedback export`: answers as the record files learners read, in versioned snapshots.

A snapshot is a folder ``<out>/<project>/v0001/`` (the next number each time) holding one
JSON-lines file per record type and a ``manifest.json`` (counts, project settings, the answer
ids it covers). Only the newest answer of each correction chain is exported. Answers to gold and repeated items
measure labelers and stay out; an AI judge's answers go to files of their own (``ai_pairwise.jsonl``).
Every human row carries ``reliability``, the labeler's smoothed gold accuracy (correct + 1) /
(gold + 2); ``weight_by_reliability`` also writes it as ``weight``, which `rlxf rm`, `rlxf dpo`
and `rlxf kto` multiply each example's loss by; ``min_gold_accuracy`` leaves out labelers
measured below it. Pairwise files use
rlxf's preference layout, so `rlxf rm data.path=.../pairwise.jsonl` trains on them directly:

- ``pairwise.jsonl``: prompt, chosen, rejected, tie, annotator (+ reason, item and answer ids)
- ``labeled.jsonl``: prompt, completion, label (reactions: love/like 1, dislike 0; both
  responses of a "both bad" pair 0) — the unpaired layout KTO reads; a row about one response
  also names the ``model`` that wrote it, where the item was imported with one
- ``rankings.jsonl``: prompt, responses best first; ``ratings.jsonl``: prompt, completion,
  scores per aspect; ``spans.jsonl``: prompt, completion, spans (start, end, tag, text);
  ``verbal.jsonl``: prompt, completions shown, feedback text
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from collections import defaultdict
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from rlxf import __version__
from rlxf.feedback.answers import gold_accuracy, gold_scores, project_answers
from rlxf.feedback.questions import REACTIONS
from rlxf.feedback.store import Answer, Candidate, Item, Project, Store


def records_of(
    answer: Answer, prompt: list, shown: list[str], annotator: str, models: list[str] | None = None
) -> dict[str, list[dict]]:
    """The records one answer gives, by file name. A row about one response carries ``model``, the
    model or checkpoint that wrote it, where the item was imported with one."""
    payload, ids = answer.payload, {"item_id": answer.item_id, "answer_id": answer.id, "annotator": annotator}
    by = [{"model": model} if model else {} for model in (models or [""] * len(shown))]
    if answer.question == "pairwise":
        choice = payload["choice"]
        if choice == "both_bad":
            return {
                "labeled": [
                    {"prompt": prompt, "completion": text, "label": 0.0, **ids, **by[i]} for i, text in enumerate(shown)
                ]
            }
        chosen, rejected = shown if choice in ("A", "tie") else shown[::-1]
        pair = {"prompt": prompt, "chosen": chosen, "rejected": rejected, "tie": choice == "tie"}
        return {"pairwise": [{**pair, "reason": payload.get("reason", ""), **ids}]}
    if answer.question == "reaction":
        label = REACTIONS[payload["reaction"]]
        row = {"prompt": prompt, "completion": shown[0], "label": label, "reaction": payload["reaction"], **ids}
        return {"labeled": [{**row, **by[0]}]}
    if answer.question == "ranking":
        return {"rankings": [{"prompt": prompt, "responses": [shown[p] for p in payload["order"]], **ids}]}
    if answer.question == "rating":
        return {"ratings": [{"prompt": prompt, "completion": shown[0], "scores": payload["scores"], **ids, **by[0]}]}
    if answer.question == "spans":
        by_response = defaultdict(list)
        for span in payload["spans"]:
            text = shown[span["candidate"]]
            by_response[span["candidate"]].append({**span, "text": text[span["start"] : span["end"]]})
        rows = [
            {"prompt": prompt, "completion": text, "spans": by_response.get(position, []), **ids, **by[position]}
            for position, text in enumerate(shown)
        ]
        return {"spans": rows}
    return {"verbal": [{"prompt": prompt, "completions": shown, "feedback": payload["text"], **ids}]}


def next_version(folder: Path) -> Path:
    versions = [int(p.name[1:]) for p in folder.glob("v[0-9][0-9][0-9][0-9]") if p.is_dir()]
    return folder / f"v{max(versions, default=0) + 1:04d}"


def export_project(
    session: Session, project: Project, out: Path, min_gold_accuracy: float = 0.0, weight_by_reliability: bool = False
) -> Path:
    """A new snapshot folder of ``project`` under ``out``, as the module describes; returns it."""
    loaded = project_answers(session, project)
    items, users = loaded.items, loaded.users
    candidates = session.execute(
        select(Candidate.id, Candidate.text, Candidate.model).join(Item).where(Item.project_id == project.id)
    ).all()
    texts = {id_: text for id_, text, _ in candidates}
    models = {id_: model for id_, _, model in candidates}
    measured = gold_scores(loaded)
    reliability = {name: (score["gold_correct"] + 1) / (score["gold"] + 2) for name, score in measured.items()}
    excluded = sorted(
        name
        for name, score in measured.items()
        if gold_accuracy(score) is not None and gold_accuracy(score) < min_gold_accuracy
    )
    files: dict[str, list[dict]] = defaultdict(list)
    exported = []
    for answer in loaded.answers:
        user = users[answer.user_id]
        if items[answer.item_id].kind != "task" or user.name in excluded:
            continue
        shown, shown_models = [texts[i] for i in answer.shown_order], [models[i] for i in answer.shown_order]
        prefix = "ai_" if user.role == "judge" else ""
        records = records_of(answer, items[answer.item_id].prompt, shown, user.name, shown_models)
        for name, rows in records.items():
            if not prefix:
                measured_reliability = reliability.get(user.name, 0.5)
                rows = [{**row, "reliability": measured_reliability} for row in rows]
                if weight_by_reliability:  # learners weigh each example's loss by it
                    rows = [{**row, "weight": measured_reliability} for row in rows]
            files[prefix + name].extend(rows)
        exported.append(answer)
    target = next_version(project_folder(out, project))
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)  # left by an export that died
    partial.mkdir(parents=True)
    for name, rows in files.items():
        with open(partial / f"{name}.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    manifest = {
        "project": project.name,
        "question": project.question,
        "overlap": project.overlap,
        "aspects": project.aspects,
        "span_tags": project.span_tags,
        "answers": len(exported),
        "answer_ids": [exported[0].id, exported[-1].id] if exported else [],
        "files": {f"{name}.jsonl": len(rows) for name, rows in files.items()},
        "labelers": sorted({users[a.user_id].name for a in exported}),
        "excluded_labelers": excluded,
        "min_gold_accuracy": min_gold_accuracy,
        "weight_by_reliability": weight_by_reliability,
        "app_versions": sorted({a.app_version for a in exported}),
        "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "rlxf_version": __version__,
    }
    (partial / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    partial.rename(target)  # a snapshot appears whole or not at all
    return target


def project_folder(out: Path, project: Project) -> Path:
    """``out/<slug of the project's name>``, checked to stay inside ``out`` whatever the name
    (names are validated when projects are made; older stores may hold any)."""
    slug = re.sub(r"[^A-Za-z0-9._-]", "-", project.name).lstrip(".") or f"project-{project.id}"
    folder = (out / slug).resolve()
    if folder.parent != out.resolve():
        raise ValueError(f"project {project.name!r} would export outside {out}")
    return folder


def export_snapshot(
    store: Store,
    out: str | Path,
    projects: list[str] | None = None,
    *,
    min_gold_accuracy: float = 0.0,
    weight_by_reliability: bool = False,
) -> list[Path]:
    """One new snapshot folder per project (all projects unless named); returns the folders."""
    with store.session() as session:
        query = select(Project).order_by(Project.id)
        if projects:
            query = query.where(Project.name.in_(projects))
        chosen = list(session.scalars(query))
        missing = set(projects or []) - {p.name for p in chosen}
        if missing:
            raise ValueError(f"no project named {', '.join(sorted(missing))}")
        return [
            export_project(session, project, Path(out), min_gold_accuracy, weight_by_reliability) for project in chosen
        ]
