"""How good the labels are: each labeler's accuracy on gold items and self-consistency on
repeats, agreement between people (Krippendorff's alpha over all, Cohen's kappa per pair), and
how often an AI judge and a reward model side with the people's majority.

Labels are compared by response, not by screen position (see `rlxf.feedback.answers`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from itertools import combinations

import numpy as np
from sqlalchemy.orm import Session

from rlxf.eval.stats import cohens_kappa, majority
from rlxf.feedback.answers import gold_accuracy, gold_scores, project_answers
from rlxf.feedback.store import Project

__all__ = ["cohens_kappa", "krippendorff_alpha", "majority", "quality_report"]


def krippendorff_alpha(labels_by_item: dict[int, dict[str, object]], level: str = "nominal") -> float:
    """Krippendorff's alpha (Krippendorff 2004) over items with two or more labels, computed by
    the ``krippendorff`` package: nominal for categories, ordinal for 1-5 ratings."""
    import krippendorff

    items = [labels for labels in labels_by_item.values() if len(labels) >= 2]
    values = sorted({repr(v) for labels in items for v in labels.values()})
    if len(items) < 1 or len(values) < 2:
        return float("nan")
    raters = sorted({rater for labels in items for rater in labels})
    code = {value: index for index, value in enumerate(values)}
    data = np.full((len(raters), len(items)), np.nan)
    for column, labels in enumerate(items):
        for rater, value in labels.items():
            data[raters.index(rater), column] = value if level == "ordinal" else code[repr(value)]
    return float(krippendorff.alpha(reliability_data=data, level_of_measurement=level))


def finite(value: float) -> float | None:
    """None for an undefined statistic (nan), so reports stay valid JSON."""
    return None if math.isnan(value) else value


def quality_report(session: Session, project: Project) -> dict:
    """The project's quality measures: per labeler, agreement overall and per pair, per item,
    per AI judge and for the reward model (the page ``/admin/projects/N/quality`` shows it)."""
    loaded = project_answers(session, project)
    items, users, answers, labels = loaded.items, loaded.users, loaded.answers, loaded.labels
    human = loaded.human()

    per_labeler: dict[str, dict] = defaultdict(
        lambda: {"answers": 0, "gold": 0, "gold_correct": 0, "repeats": 0, "repeats_consistent": 0}
    )
    first_label = {(a.user_id, a.item_id): labels[a.id] for a in human}
    task_labels: dict[int, dict[str, object]] = defaultdict(dict)
    ratings: dict[str, dict[int, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    for answer in human:
        item, name = items[answer.item_id], users[answer.user_id].name
        row = per_labeler[name]
        row["answers"] += 1
        if item.kind == "repeat" and (answer.user_id, item.repeat_of) in first_label:
            row["repeats"] += 1
            row["repeats_consistent"] += labels[answer.id] == first_label[(answer.user_id, item.repeat_of)]
        elif item.kind == "task" and labels[answer.id] is not None:
            task_labels[item.id][name] = labels[answer.id]
        elif item.kind == "task" and answer.question == "rating":
            for aspect, score in answer.payload["scores"].items():
                ratings[aspect][item.id][name] = score

    kappas = {}
    for a, b in combinations(sorted(per_labeler), 2):
        shared = [i for i, given in task_labels.items() if a in given and b in given]
        if len(shared) >= 2:
            kappas[(a, b)] = cohens_kappa([task_labels[i][a] for i in shared], [task_labels[i][b] for i in shared])
    gold = gold_scores(loaded)
    for name, row in per_labeler.items():
        row.update(gold[name])
        row["gold_accuracy"] = gold_accuracy(row)
        row["consistency"] = row["repeats_consistent"] / row["repeats"] if row["repeats"] else None
        theirs = [k for pair, k in kappas.items() if name in pair and not math.isnan(k)]
        row["mean_kappa"] = sum(theirs) / len(theirs) if theirs else None

    majorities = {i: majority(list(given.values())) for i, given in task_labels.items()}
    return {
        "labelers": dict(per_labeler),
        "alpha": finite(krippendorff_alpha(task_labels)),
        "kappa_pairs": {f"{a} / {b}": finite(k) for (a, b), k in kappas.items()},
        "items_with_overlap": sum(len(g) >= 2 for g in task_labels.values()),
        "disputed_items": sorted(i for i, given in task_labels.items() if len(given) >= 2 and majorities[i] is None),
        "aspect_alpha": {aspect: finite(krippendorff_alpha(by_item, "ordinal")) for aspect, by_item in ratings.items()},
        "items": item_rows(items, task_labels, majorities, answers, users, labels),
        "judges": judge_agreement(answers, users, items, labels, majorities),
        "reward_model": reward_model_agreement(items, majorities),
    }


def judge_agreement(answers, users, items, labels, majorities) -> dict:
    """Per judge account: how often its two orders agree (position consistency) and, where they
    do, how often it sides with the people's majority."""
    verdicts: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    for answer in answers:
        if users[answer.user_id].role == "judge" and items[answer.item_id].kind == "task":
            verdicts[users[answer.user_id].name][answer.item_id].append(labels[answer.id])
    report = {}
    for name, by_item in verdicts.items():
        both = {i: v for i, v in by_item.items() if len(v) == 2}
        consistent = {i: v[0] for i, v in both.items() if v[0] == v[1]}
        compared = [i for i in consistent if majorities.get(i) is not None]
        report[name] = {
            "items": len(both),
            "position_consistency": len(consistent) / len(both) if both else None,
            "agreement_with_majority": (
                sum(consistent[i] == majorities[i] for i in compared) / len(compared) if compared else None
            ),
            "compared": len(compared),
        }
    return report


def reward_model_agreement(items, majorities) -> dict:
    """How often the reward model's preferred response is the people's majority choice (pairs
    with a decided majority and a reward-model preference)."""
    compared = [
        (items[i].model_preference, label)
        for i, label in majorities.items()
        if label in (0, 1) and items[i].model_preference is not None
    ]
    agree = sum((0 if p > 0.5 else 1) == label for p, label in compared)
    return {"compared": len(compared), "agreement_with_majority": agree / len(compared) if compared else None}


def item_rows(items, task_labels, majorities, answers, users, labels, limit: int = 200) -> list[dict]:
    """Per item: each person's label, the majority, the judges' labels and the reward model's
    preference; items without a majority first."""
    judged: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for answer in answers:
        if users[answer.user_id].role == "judge":
            judged[answer.item_id][users[answer.user_id].name].append(labels[answer.id])
    rows = [
        {
            "item": item_id,
            "prompt": next((m["content"] for m in reversed(items[item_id].prompt) if m["role"] == "user"), "")[:120],
            "labels": given,
            "majority": majorities[item_id],
            "judges": dict(judged.get(item_id, {})),
            "model_preference": items[item_id].model_preference,
        }
        for item_id, given in task_labels.items()
    ]
    rows.sort(key=lambda row: (row["majority"] is not None, row["item"]))
    return rows[:limit]
