"""VPL (Poddar et al. 2024): the loss by hand, and on users who disagree, a latent that tells them apart."""

import math
import random

import pytest
import torch

from rlxf.losses.personal import gaussian_kl, variational_preference
from rlxf.models.personal import VariationalPreferenceModel
from rlxf.recipes.personal_rm import PersonalRMConfig, UserPairs, context_tensors, evaluate, step_loss


def test_the_kl_and_the_elbo_by_hand():
    mu, logvar = torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    # ½[(1 + 1 - 1 - 0) + (2 + 0 - 1 - ln 2)] = ½(2 - ln 2); the prior itself: 0
    assert gaussian_kl(mu, logvar).tolist() == pytest.approx([0.5 * (2 - math.log(2)), 0.0])
    chosen, rejected = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 0.0, 0.0])
    owner = torch.tensor([0, 0, 1])
    loss, metrics = variational_preference(chosen, rejected, owner, mu, logvar, beta=0.5)
    user0 = (-math.log(1 / (1 + math.exp(-1))) + math.log(2)) / 2  # mean of its two pairs' -log σ
    user1 = -math.log(1 / (1 + math.exp(-2)))
    assert loss.tolist() == pytest.approx([user0 + 0.25 * (2 - math.log(2)), user1])
    assert metrics["accuracy"] == pytest.approx(2 / 3)


def test_context_tensors_pad_each_users_pairs():
    embeddings = torch.arange(8.0).view(4, 2)
    chosen, rejected, mask = context_tensors(embeddings, [[(0, 1)], [(2, 3), (1, 0)]])
    assert mask.tolist() == [[1, 0], [1, 1]]
    assert chosen[1].tolist() == [[4.0, 5.0], [2.0, 3.0]] and rejected[0, 0].tolist() == [2.0, 3.0]


def disagreeing_users(count=60, pairs=12, seed=0):
    """Responses whose first feature is their length; half the users want it long, half short."""
    rng = random.Random(seed)
    embeddings = torch.randn(200, 8, generator=torch.Generator().manual_seed(seed))
    embeddings[:, 0] = torch.linspace(-2, 2, 200)
    table, kinds = {}, {}
    for number in range(count):
        user, kind = f"u{number}", ("longer", "shorter")[number % 2]
        kinds[user] = kind
        table[user] = []
        for _ in range(pairs):
            a, b = rng.sample(range(200), 2)
            long, short = (a, b) if a > b else (b, a)
            table[user].append((long, short) if kind == "longer" else (short, long))
    return UserPairs(embeddings, table, kinds)


def test_a_latent_from_four_labels_tells_disagreeing_users_apart():
    torch.manual_seed(0)
    users, config = disagreeing_users(), PersonalRMConfig(context_pairs=4, latent=4, hidden=32, beta=0.01)
    vpl, shared = VariationalPreferenceModel(8, 4, 32), VariationalPreferenceModel(8, 4, 32)
    optimizer = torch.optim.Adam([*vpl.parameters(), *shared.parameters()], lr=3e-3)
    trained, held = sorted(users.pairs)[:48], sorted(users.pairs)[48:]
    rng = random.Random(0)
    for _ in range(300):
        loss, _ = step_loss(vpl, shared, users, rng.sample(trained, 16), config, rng)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    results = evaluate(vpl, shared, users, held, config)
    # one model cannot serve both kinds of user; the latent of four labels can
    assert results["vpl_accuracy"] > 0.9 and abs(results["shared_accuracy"] - 0.5) < 0.15
    assert results["vpl_accuracy/longer"] > 0.85 and results["vpl_accuracy/shorter"] > 0.85
    assert results["pairs"] == 12 * 8
