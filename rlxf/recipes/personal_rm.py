"""`rlxf vpl`: a personalized reward model — one reward per user, from a latent inferred from a few of
that user's own labels (Variational Preference Learning).

Poddar et al., "Personalizing Reinforcement Learning from Human Feedback with Variational Preference
Learning" (NeurIPS 2024). Users who disagree (one wants short answers, another long ones) leave a
single Bradley–Terry model at chance on their disagreements; VPL reads ``context_pairs`` of a user's
labels, infers z, and scores that user's other pairs by r(x, y, z).

Stages: pairs with their users (the file's ``annotator``, e.g. the feedback app's pairwise.jsonl, or
``synthetic_users`` who prefer the longer or the shorter response) -> fixed embeddings of each
(prompt, response) by a frozen ``embedder`` -> users split into training and held-out ones -> each
step, ``users_per_step`` users: z from their context pairs, the ELBO on their other pairs -> held-out
users: accuracy of VPL (z from their first context pairs) against one shared model trained the same way
without z.
"""

from __future__ import annotations

import dataclasses
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rlxf.config import Checked, ConfigError, DataSection, TrainSection
from rlxf.data import read_preferences
from rlxf.data.split import in_eval_split
from rlxf.eval.run_report import write_run_report
from rlxf.eval.stats import proportion
from rlxf.losses import bradley_terry
from rlxf.losses.personal import variational_preference
from rlxf.models.personal import VariationalPreferenceModel, embed_texts
from rlxf.recipes.common import report_bad_rows, resolve_path, say, write_json
from rlxf.recipes.run_folder import prepare_output_dir
from rlxf.train import Run


@dataclass
class PersonalRMConfig(Checked):
    output_dir: str = "runs/vpl"
    """Where metrics, eval.json, the model (model/vpl.pt and settings.json) and the report go."""
    data: DataSection = field(default_factory=DataSection)
    """Pairwise preferences; each pair's user is its annotator (unless synthetic_users > 0)."""
    synthetic_users: int = 0
    """0: the file's annotators are the users. N: N users built over the file's pairs, half preferring
    the longer response and half the shorter, each labeling pairs_per_user of them by that rule."""
    pairs_per_user: int = 24
    """Synthetic users: the pairs each labels."""
    embedder: str = "minilm-l6-v2"
    """The frozen model whose mean hidden state embeds each (prompt, response)."""
    context_pairs: int = 4
    """A user's labeled pairs the latent is inferred from (the rest are what it predicts)."""
    latent: int = 16
    """Size of the user latent z."""
    hidden: int = 128
    """Width of the encoder's and the reward's layers."""
    beta: float = 0.01
    """Weight of the KL of q(z | context) to N(0, I) in the loss."""
    users_per_step: int = 16
    """Users in a step (each with its context and target pairs)."""
    eval_fraction: float = 0.2
    """Share of the users held out (never trained on)."""
    train: TrainSection = field(default_factory=lambda: TrainSection(max_steps=600, lr=1e-3))
    """Optimization (a step's batch is users_per_step users, so batch_size is not read)."""

    def check(self):
        if self.synthetic_users < 0 or self.pairs_per_user < 2 or self.context_pairs < 1:
            raise ValueError("need synthetic_users >= 0, pairs_per_user >= 2 and context_pairs >= 1")
        if self.synthetic_users and self.pairs_per_user <= self.context_pairs:
            raise ValueError("pairs_per_user must exceed context_pairs: a user's other pairs are what is predicted")
        if min(self.latent, self.hidden, self.users_per_step) < 1 or self.beta < 0:
            raise ValueError("need latent, hidden and users_per_step >= 1 and beta >= 0")
        if not 0 < self.eval_fraction < 1:
            raise ValueError(f"eval_fraction must be in (0, 1), got {self.eval_fraction}")


@dataclass
class UserPairs:
    """Every user's pairs, as row indices of the embedding table (chosen, rejected)."""

    embeddings: torch.Tensor
    pairs: dict[str, list[tuple[int, int]]]
    kinds: dict[str, str] = field(default_factory=dict)  # synthetic users: "longer" or "shorter"


def train_personal_rm(config: PersonalRMConfig) -> dict:
    output_dir = prepare_output_dir(config)
    torch.manual_seed(config.train.seed)
    users = user_pairs(config)
    names = sorted(users.pairs)
    held = [u for u in names if in_eval_split(u, config.eval_fraction, config.data.split_seed)]
    trained = [u for u in names if u not in held]
    if len(trained) < 2 or not held:
        raise ConfigError(f"{len(names)} users with {config.context_pairs + 1}+ pairs: too few to train and hold out")
    say(
        f"{len(names)} users ({len(trained)} trained, {len(held)} held out), {sum(map(len, users.pairs.values()))} pairs"
    )
    dim = users.embeddings.shape[1]
    vpl = VariationalPreferenceModel(dim, config.latent, config.hidden)
    shared = VariationalPreferenceModel(dim, config.latent, config.hidden)
    both = torch.nn.ModuleDict({"vpl": vpl, "shared": shared})
    train = dataclasses.replace(config.train, batch_size=min(config.users_per_step, len(trained)))
    run = Run(output_dir, both, train, num_examples=len(trained), name="personal reward model")
    for batch in run.steps():  # a batch of users; their pairs drawn by the step's own seed (exact on resume)
        rng = random.Random(config.train.seed * 1_000_003 + run.step)
        loss, metrics = step_loss(vpl, shared, users, [trained[i] for i in batch], config, rng)
        loss.backward()
        run.end_step(loss.item(), metrics)
    results = {
        "held_out": evaluate(vpl, shared, users, held, config),
        "users": {"trained": len(trained), "held_out": len(held)},
    }
    run.log_eval({k: v for k, v in results["held_out"].items() if isinstance(v, float)})
    run.finish()
    save(output_dir, vpl, config, dim, results)
    numbers = results["held_out"]
    say(
        f"held-out users: VPL accuracy {numbers['vpl_accuracy']:.3f}, one shared model {numbers['shared_accuracy']:.3f}"
    )
    return results


def step_loss(vpl, shared, users: UserPairs, batch: list[str], config: PersonalRMConfig, rng: random.Random):
    """The ELBO of a batch of users (VPL) plus the shared model's Bradley–Terry loss on the same pairs."""
    contexts, targets = [], []
    for user in batch:
        pairs = rng.sample(users.pairs[user], len(users.pairs[user]))
        contexts.append(pairs[: config.context_pairs])
        targets.append(pairs[config.context_pairs :])
    mu, logvar = vpl.posterior(*context_tensors(users.embeddings, contexts))
    z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # one sample per user (reparameterized)
    owner = torch.tensor([u for u, pairs in enumerate(targets) for _ in pairs])
    chosen, rejected = (users.embeddings[[p[side] for pairs in targets for p in pairs]] for side in (0, 1))
    per_user, metrics = variational_preference(
        vpl.reward(chosen, z[owner]), vpl.reward(rejected, z[owner]), owner, mu, logvar, beta=config.beta
    )
    zero = torch.zeros(len(owner), config.latent)
    shared_loss, shared_metrics = bradley_terry(shared.reward(chosen, zero), shared.reward(rejected, zero))
    metrics = {k: float(v) for k, v in metrics.items()} | {
        "shared_accuracy": float(shared_metrics["rewards/accuracy"].mean())
    }
    return per_user.mean() + shared_loss.mean(), metrics


def context_tensors(embeddings: torch.Tensor, contexts: list[list[tuple[int, int]]]):
    """(U, K, dim) chosen and rejected embeddings of each user's context pairs, and their (U, K) mask."""
    width = max(len(c) for c in contexts)
    index = torch.zeros(len(contexts), width, 2, dtype=torch.long)
    mask = torch.zeros(len(contexts), width)
    for u, pairs in enumerate(contexts):
        if pairs:
            index[u, : len(pairs)] = torch.tensor(pairs)
            mask[u, : len(pairs)] = 1
    return embeddings[index[..., 0]], embeddings[index[..., 1]], mask


@torch.no_grad()
def evaluate(vpl, shared, users: UserPairs, held: list[str], config: PersonalRMConfig) -> dict:
    """Held-out users: each one's first ``context_pairs`` pairs give z (the posterior mean), the rest are
    predicted; the same pairs by the shared model, and by VPL without context (z = 0)."""
    hits = defaultdict(list)
    for user in held:
        context, targets = users.pairs[user][: config.context_pairs], users.pairs[user][config.context_pairs :]
        if not targets:
            continue
        mu, _ = vpl.posterior(*context_tensors(users.embeddings, [context]))
        chosen, rejected = (users.embeddings[[p[side] for p in targets]] for side in (0, 1))
        for name, model, z in (
            ("vpl", vpl, mu),
            ("shared", shared, torch.zeros_like(mu)),
            ("vpl_no_context", vpl, torch.zeros_like(mu)),
        ):
            correct = (
                model.reward(chosen, z.expand(len(targets), -1)) > model.reward(rejected, z.expand(len(targets), -1))
            ).tolist()
            hits[f"{name}_accuracy"] += correct
            if user in users.kinds:  # synthetic users: each kind apart
                hits[f"{name}_accuracy/{users.kinds[user]}"] += correct
    results = {}
    for key, correct in hits.items():
        estimate = proportion([float(c) for c in correct])
        results[key] = estimate.value
        results[f"{key}_interval"] = [estimate.low, estimate.high]
    results["pairs"] = len(hits["vpl_accuracy"])
    return results


def save(output_dir: Path, vpl, config: PersonalRMConfig, dim: int, results: dict) -> None:
    folder = output_dir / "model"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(vpl.state_dict(), folder / "vpl.pt")
    settings = {
        "kind": "personal_model",
        "embedder": config.embedder,
        "dim": dim,
        "latent": config.latent,
        "hidden": config.hidden,
    }
    write_json(folder / "settings.json", settings)
    write_json(output_dir / "eval.json", results)
    say(f"report: {write_run_report(output_dir)}")


def user_pairs(config: PersonalRMConfig) -> UserPairs:
    """Each user's pairs over one table of embedded (prompt, response) texts."""
    path = resolve_path(config.data.path)
    records, bad = read_preferences(path, format=config.data.format, on_bad_row=config.data.on_bad_row)
    report_bad_rows(bad, path)
    records = [r for r in records if not r.tie]  # a tie says nothing about which way a user leans
    texts: dict[str, int] = {}

    def row_of(prompt, response: str) -> int:
        return texts.setdefault(f"{prompt[-1]['content']}\n\n{response}", len(texts))

    pairs, kinds = defaultdict(list), {}
    if config.synthetic_users:
        rng = random.Random(config.data.split_seed)
        usable = [r for r in records if len(r.chosen) != len(r.rejected)]
        for number in range(config.synthetic_users):
            user, kind = f"user_{number:03d}", ("longer", "shorter")[number % 2]
            kinds[user] = kind
            for record in rng.sample(usable, min(config.pairs_per_user, len(usable))):
                long, short = sorted((record.chosen, record.rejected), key=len, reverse=True)
                chosen, rejected = (long, short) if kind == "longer" else (short, long)
                pairs[user].append((row_of(record.prompt, chosen), row_of(record.prompt, rejected)))
    else:
        if unnamed := sum(1 for r in records if not r.annotator):
            raise ConfigError(
                f"{path}: {unnamed} pairs have no annotator, so no user to learn them for; give an annotator column "
                "(the feedback app's pairwise.jsonl has one) or synthetic_users=N"
            )
        for record in records:
            pairs[record.annotator].append(
                (row_of(record.prompt, record.chosen), row_of(record.prompt, record.rejected))
            )
    few = [user for user, labeled in pairs.items() if len(labeled) <= config.context_pairs]
    if few:
        say(
            f"{len(few)} users with at most context_pairs={config.context_pairs} pairs have none left to predict: not used"
        )
    kept = {user: labeled for user, labeled in pairs.items() if user not in few}
    say(f"embedding {len(texts)} (prompt, response) texts with {config.embedder}")
    return UserPairs(embed_texts(config.embedder, list(texts)), kept, kinds)
