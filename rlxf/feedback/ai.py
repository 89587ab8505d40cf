"""AI feedback beside human feedback: an LLM judge answering a project's pairwise items (both
orders, to catch position bias), and reward models ranking items by how unsure they are
(the active ordering asks people about those first)."""

from __future__ import annotations

import math
import statistics

from sqlalchemy import select
from sqlalchemy.orm import Session

from rlxf import __version__
from rlxf.feedback.store import Answer, Item, Project, User


def judge_account(session: Session, name: str) -> User:
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        user = User(name=name, role="judge")
        session.add(user)
        session.flush()
    elif user.role != "judge":
        raise ValueError(f"account {name!r} is a {user.role}, not a judge")
    return user


def judge_pairs(session: Session, project: Project, judge, name: str) -> dict:
    """Ask ``judge`` (an :class:`rlxf.rewards.judge.LLMJudge`) about every pairwise task item it
    has not answered, in both orders; each reply is stored as an answer of the judge's account
    with the order it saw. Unparsed replies are counted, not stored."""
    if project.question != "pairwise":
        raise ValueError(f"the judge answers pairwise questions; {project.name} asks {project.question}")
    account = judge_account(session, name)
    answered = select(Answer.item_id).where(Answer.user_id == account.id)
    items = list(
        session.scalars(
            select(Item).where(Item.project_id == project.id, Item.kind == "task", Item.id.not_in(answered))
        )
    )
    prompts, firsts, seconds = [], [], []
    for item in items:
        prompts.append(item.prompt)
        firsts.append(item.candidates[0].text)
        seconds.append(item.candidates[1].text)
    verdicts = judge.compare(prompts, firsts, seconds) if items else []
    stored = unparsed = 0
    for item, (winner_ab, winner_ba, replies) in zip(items, verdicts):
        ids = [c.id for c in item.candidates]
        for order, winner, reply in ((ids, winner_ab, replies[0]), (ids[::-1], winner_ba, replies[1])):
            if winner is None:
                unparsed += 1
                continue
            key = f"judge-{account.id}-{item.id}-{'ab' if order == ids else 'ba'}"
            session.add(
                Answer(
                    project_id=project.id,
                    item_id=item.id,
                    user_id=account.id,
                    question="pairwise",
                    payload={"choice": winner, "reason": reply[:4000]},
                    shown_order=order,
                    idempotency_key=key,
                    app_version=__version__,
                )
            )
            stored += 1
    session.flush()
    return {"items": len(items), "answers": stored, "unparsed": unparsed}


def prioritize(session: Session, project: Project, reward_models: list) -> int:
    """Set each pairwise task item's ``model_preference`` (mean P(response 0 better) over the
    reward models, Bradley-Terry: sigmoid(r0 - r1)) and ``priority`` (how unsure they are: the
    closeness of that mean to 1/2 plus the models' disagreement, their standard deviation) —
    uncertainty sampling (Lewis & Gale, "A Sequential Algorithm for Training Text Classifiers",
    SIGIR 1994) plus query by committee (Seung et al., "Query by Committee", COLT 1992).
    ``reward_models`` score like :class:`rlxf.rewards.learned.LearnedReward`. Returns the
    number of items scored."""
    if project.question != "pairwise":
        raise ValueError(f"priorities come from pairwise reward-model scores; {project.name} asks {project.question}")
    items = list(session.scalars(select(Item).where(Item.project_id == project.id, Item.kind == "task")))
    if not items:
        return 0
    prompts = [item.prompt for item in items for _ in range(2)]
    texts = [candidate.text for item in items for candidate in item.candidates[:2]]
    per_model = []
    for model in reward_models:
        scores = model.score(prompts, texts).rewards.tolist()
        per_model.append([1 / (1 + math.exp(b - a)) for a, b in zip(scores[0::2], scores[1::2])])
    for index, item in enumerate(items):
        probabilities = [p[index] for p in per_model]
        mean = statistics.fmean(probabilities)
        spread = statistics.pstdev(probabilities) if len(probabilities) > 1 else 0.0
        item.model_preference = mean
        item.priority = 1 - abs(2 * mean - 1) + spread
    return len(items)


def generate_items(
    session: Session, project: Project, prompts: list, engine, sampling, *, model_name: str, seed: int = 0
) -> int:
    """A new round of candidates: ``sampling.n`` samples per prompt from ``engine`` (the rollout
    protocol, e.g. an HF engine on a retrained checkpoint) become an item each, every response
    linked to ``model_name``. Returns the number of items added."""
    from rlxf.feedback.questions import candidates_needed
    from rlxf.feedback.store import Candidate

    low, high = candidates_needed(project.question)
    if not low <= sampling.n <= high:
        raise ValueError(f"a {project.question} question takes {low}-{high} responses per item, not n={sampling.n}")
    rollout = engine.generate([p.messages for p in prompts], sampling, seeds=[seed + i for i in range(len(prompts))])
    for index, prompt in enumerate(prompts):
        item = Item(
            project_id=project.id, prompt=prompt.messages, source=f"{prompt.source} (generated by {model_name})"
        )
        session.add(item)
        session.flush()
        texts = rollout.texts[index * sampling.n : (index + 1) * sampling.n]
        session.add_all(
            Candidate(item_id=item.id, position=position, text=text, model=model_name)
            for position, text in enumerate(texts)
        )
    return len(prompts)
