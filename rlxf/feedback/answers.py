"""Which answers count and what they say, shared by the quality report and the export.

Only the newest answer of each correction chain counts. Labels are compared in the file's order
of responses ("canonical"), not the order shown: a pairwise answer "A" on an item shown as
(response 1, response 0) prefers response 1.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from rlxf.feedback.questions import REACTIONS
from rlxf.feedback.store import Answer, Candidate, Item, Project, User


def latest_answers(session: Session, project: Project) -> list[Answer]:
    """Answers of ``project`` that no later answer supersedes, oldest first."""
    superseded = select(Answer.supersedes).where(Answer.supersedes.is_not(None))
    return list(
        session.scalars(
            select(Answer).where(Answer.project_id == project.id, Answer.id.not_in(superseded)).order_by(Answer.id)
        )
    )


def canonical_label(answer: Answer, position_of: dict[int, int]):
    """The answer in terms of the responses' file positions, or None where no single label
    exists (ratings, spans, written feedback)."""
    payload = answer.payload
    if answer.question == "pairwise":
        choice = payload["choice"]
        if choice in ("tie", "both_bad"):
            return choice
        return position_of[answer.shown_order[0 if choice == "A" else 1]]
    if answer.question == "reaction":
        return "desirable" if REACTIONS[payload["reaction"]] > 0 else "undesirable"
    if answer.question == "ranking":
        return tuple(position_of[answer.shown_order[p]] for p in payload["order"])
    return None


def gold_label(item: Item):
    """The label a gold item expects, in canonical terms; None when it sets none."""
    gold = item.gold or {}
    if "better" in gold:
        return gold["better"]
    if "reaction" in gold:
        return "desirable" if REACTIONS[gold["reaction"]] > 0 else "undesirable"
    return None


@dataclass
class ProjectAnswers:
    """A project's counted answers with what reading them takes, loaded once."""

    items: dict[int, Item]
    users: dict[int, User]
    answers: list[Answer]
    """The newest answer of each correction chain, oldest first."""
    labels: dict[int, object]
    """Canonical label by answer id (None where an answer has no single label)."""

    def human(self) -> list[Answer]:
        """The answers given by people, not by an AI judge's account."""
        return [a for a in self.answers if self.users[a.user_id].role != "judge"]


def project_answers(session: Session, project: Project) -> ProjectAnswers:
    items = {i.id: i for i in session.scalars(select(Item).where(Item.project_id == project.id))}
    position_of = dict(
        session.execute(select(Candidate.id, Candidate.position).join(Item).where(Item.project_id == project.id)).all()
    )
    users = {u.id: u for u in session.scalars(select(User))}
    answers = latest_answers(session, project)
    labels = {a.id: canonical_label(a, position_of) for a in answers}
    return ProjectAnswers(items=items, users=users, answers=answers, labels=labels)


def gold_scores(answers: ProjectAnswers) -> dict[str, dict[str, int]]:
    """Per person who answered (in order of first answer): how many gold items with a set label
    they answered (``gold``) and how many of those they got right (``gold_correct``)."""
    scores: dict[str, dict[str, int]] = {}
    for answer in answers.human():
        score = scores.setdefault(answers.users[answer.user_id].name, {"gold": 0, "gold_correct": 0})
        item = answers.items[answer.item_id]
        if item.kind == "gold" and gold_label(item) is not None:
            score["gold"] += 1
            score["gold_correct"] += answers.labels[answer.id] == gold_label(item)
    return scores


def gold_accuracy(score: dict[str, int]) -> float | None:
    """The share of gold items answered right; None for someone who answered none."""
    return score["gold_correct"] / score["gold"] if score["gold"] else None
