"""Loss values against arithmetic written out by hand."""

import math

import pytest
import torch

from rlxf.losses import PREFERENCE_LOSSES, bradley_terry, kto
from rlxf.losses.preference import cdpo, dpo, hinge, ipo, kto_kl_estimate, robust, simpo


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


# One pair: policy chosen/rejected -1, -2; reference -1.5, -1.5.
# h = (-1 - -1.5) - (-2 - -1.5) = 0.5 + 0.5 = 1.0
PAIR = (t(-1.0), t(-2.0), t(-1.5), t(-1.5))
NEG_LOG_SIG_HALF = math.log(1 + math.exp(-0.5))  # -log σ(0.5)  = 0.47407698
NEG_LOG_SIG_MHALF = math.log(1 + math.exp(0.5))  # -log σ(-0.5) = 0.97407698


def test_dpo_value_metrics_and_gradient():
    pc = t(-1.0).requires_grad_()
    loss, metrics = dpo(pc, *PAIR[1:], beta=0.5)
    assert loss.item() == pytest.approx(NEG_LOG_SIG_HALF, abs=1e-10)
    assert loss.item() == pytest.approx(0.47407698, abs=1e-8)
    assert metrics["rewards/chosen"].item() == pytest.approx(0.25)  # 0.5 * (-1 + 1.5)
    assert metrics["rewards/rejected"].item() == pytest.approx(-0.25)  # 0.5 * (-2 + 1.5)
    assert metrics["rewards/margin"].item() == pytest.approx(0.5)
    assert metrics["rewards/accuracy"].item() == 1.0
    loss.backward()
    # d/dpc [-log σ(β h)] = -β σ(-β h) = -0.5 * σ(-0.5) = -0.5 * 0.37754067
    assert pc.grad.item() == pytest.approx(-0.5 * 0.37754067, abs=1e-8)


def test_cdpo_mixes_both_directions():
    loss, _ = cdpo(*PAIR, beta=0.5, label_smoothing=0.1)
    # 0.9 * 0.47407698 + 0.1 * 0.97407698 = 0.42666928 + 0.09740770
    assert loss.item() == pytest.approx(0.52407698, abs=1e-8)
    assert loss.item() == pytest.approx(0.9 * NEG_LOG_SIG_HALF + 0.1 * NEG_LOG_SIG_MHALF, abs=1e-12)


def test_robust_dpo_is_unbiased_combination():
    loss, _ = robust(*PAIR, beta=0.5, label_smoothing=0.1)
    # (0.9 * 0.47407698 - 0.1 * 0.97407698) / (1 - 0.2) = 0.32926158 / 0.8
    assert loss.item() == pytest.approx(0.41157698, abs=1e-8)


def test_robust_and_cdpo_reduce_to_dpo_without_noise():
    base, _ = dpo(*PAIR, beta=0.3)
    for fn in (cdpo, robust):
        value, _ = fn(*PAIR, beta=0.3, label_smoothing=0.0)
        assert value.item() == pytest.approx(base.item(), abs=1e-12)


def test_label_smoothing_out_of_range_is_refused():
    with pytest.raises(ValueError, match="label_smoothing"):
        cdpo(*PAIR, beta=0.1, label_smoothing=0.5)


def test_ipo_squared_distance_to_target():
    # beta 0.25: target 1/(2*0.25) = 2; h = 1 -> (1 - 2)^2 = 1
    loss, _ = ipo(*PAIR, beta=0.25)
    assert loss.item() == pytest.approx(1.0)
    # beta 0.5: target 1 = h -> 0
    loss, _ = ipo(*PAIR, beta=0.5)
    assert loss.item() == pytest.approx(0.0)


def test_hinge_is_zero_beyond_the_margin():
    # h = 1 and h = 3 (second pair: policy chosen -0 vs ref -1.5 => 1.5; rejected -3 vs -1.5 => -1.5)
    loss, _ = hinge(t(-1.0, 0.0), t(-2.0, -3.0), t(-1.5, -1.5), t(-1.5, -1.5), beta=0.5)
    assert loss.tolist() == pytest.approx([0.5, 0.0])  # max(0, 1 - 0.5*1), max(0, 1 - 0.5*3)


def test_simpo_is_reference_free_with_margin():
    # β(avg_w - avg_l) - γ = 2 * (-1 - -2) - 0.5 = 1.5 -> log(1 + e^-1.5) = 0.20141328
    loss, metrics = simpo(t(-1.0), t(-2.0), beta=2.0, gamma=0.5)
    assert loss.item() == pytest.approx(0.20141328, abs=1e-8)
    same, _ = simpo(t(-1.0), t(-2.0), t(100.0), t(-100.0), beta=2.0, gamma=0.5)
    assert same.item() == loss.item()
    assert simpo.needs_reference is False and simpo.length_normalized is True
    assert metrics["rewards/chosen"].item() == pytest.approx(-2.0)


def test_kto_desirable_and_undesirable():
    # r = -1 - -1.5 = 0.5, z0 = 0.2, β = 1
    loss, metrics = kto(
        t(-1.0, -1.0), t(-1.5, -1.5), torch.tensor([True, False]), beta=1.0, kl=t(0.2), undesirable_weight=2.0
    )
    # desirable: 1 - σ(0.3) = 1 - 0.57444252; undesirable: 2 * (1 - σ(-0.3)) = 2 * 0.57444252
    assert loss.tolist() == pytest.approx([0.42555748, 1.14888504], abs=1e-8)
    assert metrics["rewards/accuracy"].tolist() == [1.0, 0.0]


def test_kto_clamps_negative_kl_and_blocks_its_gradient():
    kl = t(-1.0).requires_grad_()
    policy = t(-1.0).requires_grad_()
    loss, _ = kto(policy, t(-1.5), torch.tensor([True]), beta=1.0, kl=kl)
    assert loss.item() == pytest.approx(1 - 0.62245933, abs=1e-8)  # z0 = 0: 1 - σ(0.5)
    loss.backward()
    assert kl.grad is None and policy.grad is not None
    # mean log-ratio of mismatched pairs: ((-1 - -2) + (-3 - -2)) / 2 = 0 ; ((-1 - -3) + 0)/2 = 1
    assert kto_kl_estimate(t(-1.0, -3.0), t(-2.0, -2.0)).item() == 0.0
    assert kto_kl_estimate(t(-1.0, -3.0), t(-3.0, -3.0)).item() == pytest.approx(1.0)


def test_bradley_terry_with_margin_and_ties():
    loss, metrics = bradley_terry(
        t(2.0, 2.0, 2.0), t(1.0, 1.0, 1.0), margin=t(0.0, 0.5, 0.0), tie=torch.tensor([False, False, True])
    )
    # -log σ(1) = 0.31326169; -log σ(1 - 0.5) = 0.47407698; tie: ½(0.31326169 + 1.31326169)
    assert loss.tolist() == pytest.approx([0.31326169, 0.47407698, 0.81326169], abs=1e-8)
    assert metrics["rewards/accuracy"].tolist() == [1.0, 1.0]  # the tied pair has no right answer


def test_a_tied_pair_ignores_its_margin():
    """A tie has no preferred side, so a margin (which shifts toward one side) must not enter its
    loss: d = 2 - 1 = 1 with margin 0.7 still gives ½(-log σ(1) - log σ(-1)) = 0.81326169, and the
    gradient is ½(σ(1) - σ(-1)) = 0.23105858 toward equal rewards, not ½(σ(0.3) - σ(-0.3))."""
    chosen = t(2.0).requires_grad_(True)
    loss, _ = bradley_terry(chosen, t(1.0), margin=t(0.7), tie=torch.tensor([True]))
    assert loss.item() == pytest.approx(0.81326169, abs=1e-8)
    loss.sum().backward()
    assert chosen.grad.item() == pytest.approx(0.23105858, abs=1e-8)


def test_tie_loss_is_smallest_at_equal_rewards():
    tie = torch.tensor([True, True, True])
    loss, _ = bradley_terry(t(0.0, 1.0, -1.0), t(0.0, 0.0, 0.0), tie=tie)
    assert loss[0] < loss[1] and loss[1] == pytest.approx(loss[2].item())
    assert loss[0].item() == pytest.approx(math.log(2))


def test_registry_lists_every_paired_loss_and_all_agree_on_shapes():
    assert set(PREFERENCE_LOSSES) == {"dpo", "cdpo", "robust", "ipo", "hinge", "simpo", "cpl"}
    pc, pr, rc, rr = (torch.randn(5, requires_grad=True) for _ in range(4))
    for name, fn in PREFERENCE_LOSSES.items():
        loss, metrics = fn(pc, pr, rc, rr, beta=0.1)
        assert loss.shape == (5,) and loss.requires_grad, name
        assert all(v.shape == (5,) and not v.requires_grad for v in metrics.values()), name


def test_losses_import_without_transformers():
    import subprocess
    import sys

    code = "import sys, rlxf.losses; assert 'transformers' not in sys.modules, 'transformers imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
