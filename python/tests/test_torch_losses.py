"""simlearn.torch.ContextualLoss / LogRatioLoss: the spec's worked examples (values and
gradients), finite differences, and the authors' PyTorch formulas (bench/contextual_torch.py)
on random batches. Skipped when torch is not installed (CI installs numpy and pytest only)."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import simlearn  # noqa: E402
from simlearn.torch import ContextualLoss, LogRatioLoss  # noqa: E402

from conftest import ROOT  # noqa: E402

torch.set_num_threads(2)


def _reference():
    """The authors' PyTorch form of the hybrid loss, written from the spec for the benchmark."""
    spec = importlib.util.spec_from_file_location("contextual_torch", ROOT / "bench" / "contextual_torch.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


REF = _reference()

# contextual-loss.md §8: six unit vectors at these angles, two classes of three.
ANGLES = [0.0, 14.0, 44.0, 60.0, 90.0, 130.0]
LABELS = [0, 0, 0, 1, 1, 1]
SPEC_G_Z = [
    [0.0, 0.07808], [-0.11806, 0.4735], [-0.38581, 0.39952],
    [2.15253, -1.24276], [0.02708, 0.0], [-1.06567, -0.8942],
]


def example(dtype=torch.float64) -> torch.Tensor:
    t = torch.deg2rad(torch.tensor(ANGLES, dtype=torch.float64))
    return torch.stack([torch.cos(t), torch.sin(t)], 1).to(dtype)


def value_grad(loss, z: torch.Tensor, target) -> tuple[float, torch.Tensor]:
    z = z.detach().clone().requires_grad_(True)
    out = loss(z, target)
    out.backward()
    return out.item(), z.grad


# ---------------------------------------------------------------------------------------------
# contextual


def test_contextual_worked_example_f64():
    loss = ContextualLoss()
    v, g = value_grad(loss, example(), torch.tensor(LABELS))
    assert abs(v - 0.26978714) < 1e-8
    assert abs(loss.last_terms["contextual"] - 0.15075521) < 6e-9
    assert abs(loss.last_terms["contrastive"] - 0.40284617) < 6e-9
    assert abs(loss.last_terms["regulariser"] - 0.08061968) < 6e-9
    # The spec prints the gradient to 5 decimals.
    assert (g - torch.tensor(SPEC_G_Z, dtype=torch.float64)).abs().max().item() < 6e-6
    assert g.dtype == torch.float64


def test_contextual_worked_example_f32_and_kernels():
    for kernel in ("fused", "graph"):
        loss = ContextualLoss(kernel=kernel)
        v, g = value_grad(loss, example(torch.float32), torch.tensor(LABELS))
        assert abs(v - 0.26978714) < 1e-6, kernel
        assert g.dtype == torch.float32
        assert (g.double() - torch.tensor(SPEC_G_Z, dtype=torch.float64)).abs().max().item() < 1e-4, kernel


def test_contextual_worked_example_other_settings():
    z, y = example(), torch.tensor(LABELS)
    # eps 0.04 changes the contextual term only (spec §8).
    loss = ContextualLoss(eps=0.04)
    loss(z, y)
    assert abs(loss.last_terms["contextual"] - 0.13411458) < 6e-9
    p224 = ContextualLoss(eps=0.04, lam=0.05, sim_target=0.3, convention="p224")
    assert abs(p224(z, y).item() - 0.15302377) < 1e-8


@pytest.mark.parametrize("n", [16, 48, 96])
def test_contextual_equals_the_authors_formula_on_random_batches(n):
    g = torch.Generator().manual_seed(n)
    for trial in range(3):
        z = torch.randn(n, 8, generator=g, dtype=torch.float64)
        # Tight classes, so that neighbourhoods, contrastive terms and masks are all active.
        y = torch.arange(n // 4).repeat_interleave(4)
        z = z * 0.3 + torch.randn(n // 4, 8, generator=g, dtype=torch.float64).repeat_interleave(4, 0)
        v, grad = value_grad(ContextualLoss(), z, y)
        zr = z.clone().requires_grad_(True)
        ref = REF.hybrid_loss(zr, y)
        ref.backward()
        assert abs(v - ref.item()) < 1e-12, (n, trial)
        scale = zr.grad.abs().max().item()
        assert scale > 1e-6
        assert (grad - zr.grad).abs().max().item() < 1e-10 * max(1.0, scale), (n, trial)


def test_contextual_smooth_part_matches_finite_differences():
    # lam = 0: L = 0.9 L_con + 0.1 L_reg, smooth away from the margins, so the autograd
    # gradient is the true derivative (the contextual term's straight-through gradient is not).
    g = torch.Generator().manual_seed(5)
    z = torch.randn(12, 3, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    loss = ContextualLoss(lam=0.0)
    _, grad = value_grad(loss, z, y)
    h = 1e-6
    fd = torch.zeros_like(z)
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            zp, zm = z.clone(), z.clone()
            zp[i, j] += h
            zm[i, j] -= h
            fd[i, j] = (loss(zp, y).item() - loss(zm, y).item()) / (2 * h)
    assert grad.abs().max().item() > 1e-3
    assert (grad - fd).abs().max().item() < 1e-7


def test_contextual_trains_a_linear_head():
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 8).double()
    x = torch.randn(32, 16, dtype=torch.float64)
    y = torch.arange(8).repeat_interleave(4)
    loss = ContextualLoss()
    out = loss(head(x), y)
    out.backward()
    ref_head = torch.nn.Linear(16, 8).double()
    ref_head.load_state_dict(head.state_dict())
    REF.hybrid_loss(ref_head(x), y).backward()
    assert (head.weight.grad - ref_head.weight.grad).abs().max().item() < 1e-10
    # Upstream gradients scale the kernel's gradient.
    z = head(x).detach().requires_grad_(True)
    (3.0 * loss(z, y)).backward()
    z2 = head(x).detach().requires_grad_(True)
    loss(z2, y).backward()
    assert torch.allclose(z.grad, 3.0 * z2.grad)


def test_contextual_errors():
    loss = ContextualLoss()
    z = example()
    with pytest.raises(ValueError, match="k = 4 must be smaller than the batch size n = 4"):
        loss(z[:4], torch.tensor(LABELS[:4]))
    with pytest.raises(ValueError, match="labels has 5 entries"):
        loss(z, torch.tensor(LABELS[:5]))
    bad = z.clone()
    bad[2, 0] = float("nan")
    with pytest.raises(ValueError, match="row 2"):
        loss(bad, torch.tensor(LABELS))
    with pytest.raises(ValueError, match="CPU tensors"):
        loss(torch.empty(6, 2, device="meta"), torch.tensor(LABELS))
    with pytest.raises(ValueError, match="k = 1 must be at least 2"):
        ContextualLoss(k=1)
    with pytest.raises(ValueError, match="lambda \\+ gamma"):
        ContextualLoss(lam=0.95, gamma=0.1)
    with pytest.raises(ValueError, match="convention"):
        ContextualLoss(convention="p999")


# ---------------------------------------------------------------------------------------------
# log-ratio: log-ratio-loss.md §6

LR_F = [[0.5, 0.25], [1.0, 0.0], [0.0, 2.0], [-1.5, -0.5], [2.0, 2.0]]
LR_Y = [0.0, 1.0, 1.5, 3.0, 4.0]


def lr_dist() -> np.ndarray:
    return simlearn.label_distances(np.array(LR_Y))


def test_log_ratio_worked_example_modes():
    f = torch.tensor(LR_F, dtype=torch.float64)
    v, g = value_grad(LogRatioLoss(), f, lr_dist())
    assert abs(v - 0.25721322310803246) < 1e-12
    want = [[0.7370696055, -0.5432874712], [-0.5582820846, 0.2791410423],
            [-0.1032741527, 0.3614595343], [0.0116389589, 0.0043646096],
            [-0.0871523271, -0.1016777150]]
    assert (g - torch.tensor(want, dtype=torch.float64)).abs().max().item() < 1e-9
    assert g.sum(0).abs().max().item() < 1e-12  # translation invariance
    paper = LogRatioLoss(distance="squared", eps_in_per_dim=0.0, log_eps=0.0)
    assert abs(paper(f, lr_dist()).item() - 1.0289519694615443) < 1e-12
    batch_all = LogRatioLoss(distance="squared", eps_in_per_dim=0.0, log_eps=0.0, anchors="all")
    assert abs(batch_all(f, lr_dist()).item() - 4.829572608143745) < 1e-11
    # Scale: differs from L(F) only through the epsilons.
    assert abs(LogRatioLoss()(3 * f, lr_dist()).item() - 0.2572351332) < 1e-10
    f32 = LogRatioLoss()(f.float(), torch.from_numpy(lr_dist())).item()
    assert abs(f32 - 0.25721322310803246) / 0.25721322310803246 < 1e-5


def test_log_ratio_zero_label_policies():
    f = torch.tensor(LR_F, dtype=torch.float64)
    d = lr_dist()
    d[0, 1] = d[1, 0] = 0.0
    assert abs(LogRatioLoss()(f, d).item() - 90.87) < 0.005
    assert abs(LogRatioLoss(zero_label=1e-3)(f, d).item() - 21.70) < 0.005
    keep = [0, 2, 3, 4]
    small = LogRatioLoss()(f[keep], simlearn.label_distances(np.array(LR_Y)[keep])).item()
    assert abs(LogRatioLoss(zero_label="skip")(f, d).item() - small) < 1e-12


@pytest.mark.parametrize("anchors", ["first", "all"])
def test_log_ratio_matches_finite_differences(anchors):
    g = torch.Generator().manual_seed(11)
    z = torch.randn(9, 4, generator=g, dtype=torch.float64)
    y = torch.rand(9, 2, generator=g, dtype=torch.float64).numpy()
    d = simlearn.label_distances(y)
    loss = LogRatioLoss(anchors=anchors)
    _, grad = value_grad(loss, z, d)
    h = 1e-6
    fd = torch.zeros_like(z)
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            zp, zm = z.clone(), z.clone()
            zp[i, j] += h
            zm[i, j] -= h
            fd[i, j] = (loss(zp, d).item() - loss(zm, d).item()) / (2 * h)
    assert grad.abs().max().item() > 1e-3
    assert (grad - fd).abs().max().item() < 1e-6 * max(1.0, grad.abs().max().item())


def test_log_ratio_errors():
    f = torch.tensor(LR_F, dtype=torch.float64)
    with pytest.raises(ValueError, match="label_dist is 4 × 4 but the batch has 5 rows"):
        LogRatioLoss()(f, lr_dist()[:4, :4])
    with pytest.raises(ValueError, match="square"):
        LogRatioLoss()(f, lr_dist()[:4])
    with pytest.raises(ValueError, match="eps_in_per_dim"):
        LogRatioLoss(eps_in_per_dim=-1.0)
    with pytest.raises(ValueError, match="distance"):
        LogRatioLoss(distance="cubed")
    bad = lr_dist()
    bad[2, 3] = math.nan
    with pytest.raises(ValueError, match="row 2"):
        LogRatioLoss()(f, bad)
