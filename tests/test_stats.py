"""nfebench.stats: the paired bootstrap is calibrated on Gaussian features whose Frechet distances are closed-form.

The two "samplers" share their noise as nfebench's do (row i of both from the same z_i), the reference is held
fixed, so the true difference is the difference of closed-form Frechet distances from each population to the
reference's own Gaussian (mean and covariance of its rows), which is what nfebench.stats conditions on.
"""

import numpy as np
import pytest
import torch

from nfebench.metrics.from_features import GaussianRef, sqrt_psd
from nfebench.stats import StatsError, paired_fid, paired_is, paired_kid, paired_nll

D, N, REPS, BOOT = 4, 300, 100, 200
A = torch.diag(torch.tensor([1.3, 1.0, 0.8, 1.1], dtype=torch.float64))
MEAN_A = torch.full((D,), 0.1, dtype=torch.float64)
B = A.clone()
B[0, 1] = 0.2
SIG = 0.3  # b's own noise on top of the shared z


@pytest.fixture(scope="module")
def ref():
    return torch.randn(20000, D, generator=torch.Generator().manual_seed(123), dtype=torch.float64)


def frechet(mu, cov, ref):
    """Closed-form Frechet distance of N(mu, cov) to the Gaussian of the reference rows."""
    g = GaussianRef.of(ref)
    tr_sqrt = torch.trace(sqrt_psd(g.cov_sqrt @ cov @ g.cov_sqrt))
    return float(((mu - g.mu) ** 2).sum() + torch.trace(cov) + g.trace - 2 * tr_sqrt)


def pair(rep, shift):
    """Rows of a ~ N(MEAN_A, A A^T) and b ~ N(MEAN_A + shift, B B^T + SIG^2 I) from the same z."""
    gen = torch.Generator().manual_seed(1000 + rep)
    z, e = (torch.randn(N, D, generator=gen, dtype=torch.float64) for _ in range(2))
    return z @ A.T + MEAN_A, z @ B.T + SIG * e + MEAN_A + shift


def true_delta(shift, ref):
    return (frechet(MEAN_A, A @ A.T, ref)
            - frechet(MEAN_A + shift, B @ B.T + SIG ** 2 * torch.eye(D, dtype=torch.float64), ref))


def replicate(ref, shift):
    return [paired_fid(*pair(r, shift), ref, n_boot=BOOT, seed=r, device="cpu") for r in range(REPS)]


def test_ci_covers_the_true_difference_and_is_as_narrow_as_the_spread_needs(ref):
    truth = true_delta(0.0, ref)
    res = replicate(ref, 0.0)
    coverage = np.mean([r["ci_low"] <= truth <= r["ci_high"] for r in res])
    assert 0.85 <= coverage <= 0.995, coverage
    width = np.mean([r["ci_high"] - r["ci_low"] for r in res])
    spread = np.std([r["delta"] for r in res])  # the estimator's own spread over replications
    assert width <= 1.25 * 2 * 1.96 * spread, (width, spread)
    # the pairing is used: resampling the runs independently gives a much wider interval on the same rows
    unpaired = paired_fid(*pair(0, 0.0), ref, n_boot=BOOT, device="cpu", paired=False)
    assert unpaired["ci_high"] - unpaired["ci_low"] > 2 * width


def test_null_pair_is_rarely_significant(ref):
    """b from the same population as a (correlated with it through z): delta = 0 in truth."""
    rej = 0
    for r in range(REPS):
        gen = torch.Generator().manual_seed(5000 + r)
        z, e = (torch.randn(N, D, generator=gen, dtype=torch.float64) for _ in range(2))
        a, b = z @ A.T + MEAN_A, (0.8 * z + 0.6 * e) @ A.T + MEAN_A
        rej += paired_fid(a, b, ref, n_boot=BOOT, seed=r, device="cpu")["p_value"] < 0.05
    assert rej / REPS <= 0.10


def test_a_difference_of_one_ci_width_is_found(ref):
    width = np.mean([r["ci_high"] - r["ci_low"] for r in replicate(ref, 0.0)[:20]])
    shift = 0.0
    while abs(true_delta(shift, ref) - true_delta(0.0, ref)) < width:  # move b's mean until the gap is one width
        shift += 0.005
    found = np.mean([r["p_value"] < 0.05 for r in replicate(ref, shift)])
    assert found >= 0.90, (found, shift)


def test_kid_is_and_nll_null_pairs_are_rarely_significant():
    """Same population, shared noise: each metric's paired test rejects at about its level, not more."""
    ref = torch.randn(500, D, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    rej = {"kid": 0, "is": 0, "nll": 0}
    reps = 60
    for r in range(reps):
        gen = torch.Generator().manual_seed(9000 + r)
        z, e = (torch.randn(N, D, generator=gen, dtype=torch.float64) for _ in range(2))
        a, b = z @ A.T, (0.8 * z + 0.6 * e) @ A.T
        rej["kid"] += paired_kid(a, b, ref, n_boot=BOOT, seed=r, device="cpu")["p_value"] < 0.05
        rej["is"] += paired_is(2 * a, 2 * b, n_boot=BOOT, seed=r, device="cpu")["p_value"] < 0.05
        rej["nll"] += paired_nll(a[:, 0] ** 2, b[:, 0] ** 2, n_boot=BOOT, seed=r, device="cpu")["p_value"] < 0.05
    assert all(v / reps <= 0.15 for v in rej.values()), rej


def test_kid_is_and_nll_find_a_clear_difference_and_report_the_values():
    ref = torch.randn(500, D, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    a, b = pair(0, 0.0)
    far = b + 0.5
    kid = paired_kid(a, far, ref, n_boot=BOOT, device="cpu")
    assert kid["delta"] == pytest.approx(kid["a"] - kid["b"]) and kid["ci_high"] < 0 and kid["p_value"] < 0.05
    sharp = paired_is(4 * a, a, n_boot=BOOT, device="cpu")
    assert sharp["delta"] > 0 and sharp["ci_low"] > 0
    nll = paired_nll(a[:, 0] ** 2 + 0.2, a[:, 0] ** 2, n_boot=BOOT, device="cpu")
    assert nll["delta"] == pytest.approx(0.2) and nll["ci_low"] == pytest.approx(0.2) and nll["p_value"] < 0.01


def test_bad_input_is_a_one_line_error(ref):
    a, b = pair(0, 0.0)
    with pytest.raises(StatsError, match="n_boot must be an integer >= 100, got 50"):
        paired_fid(a, b, ref, n_boot=50)
    with pytest.raises(StatsError, match="different seeds .row 1: 2 vs 5"):
        paired_fid(a[:3], b[:3], ref, seeds_a=[1, 2, 3], seeds_b=[1, 5, 3])
    with pytest.raises(StatsError, match="same rows in both runs, got 300 and 200 rows"):
        paired_fid(a, b[:200], ref)
    with pytest.raises(StatsError, match="feature dimensions differ"):
        paired_fid(a, b, ref[:, :3])
    assert paired_fid(a, b[:200], ref, n_boot=100, paired=False, device="cpu")["n"] == (300, 200)


def test_the_compared_values_are_the_metrics_on_all_rows(ref):
    from nfebench.metrics import from_features as F

    a, b = pair(0, 0.0)
    small_ref = ref[:N]  # KID on all rows = torch-fidelity's KID with one subset of all N rows of both sets
    assert paired_fid(a, b, ref, n_boot=100, device="cpu")["a"] == pytest.approx(F.fid(a, ref), rel=1e-10)
    kid = paired_kid(a, b, small_ref, n_boot=100, device="cpu")
    assert kid["b"] == pytest.approx(F.kid(b, small_ref, subsets=1, subset_size=N)[0], rel=1e-10)
    assert paired_is(a, b, n_boot=100, device="cpu")["a"] == pytest.approx(F.inception_score(a, splits=1)[0],
                                                                           rel=1e-10)


def test_linearized_bootstrap_agrees_with_the_exact_one(ref):
    """The first-order (delta-method) replicates used for large N x d give nearly the exact bootstrap's interval."""
    a, b = pair(1, 0.0)
    exact = paired_fid(a, b, ref, n_boot=500, device="cpu", method="exact")
    linear = paired_fid(a, b, ref, n_boot=500, device="cpu", method="linear")
    assert exact["method"] == "exact" and linear["method"] == "linear"
    assert linear["delta"] == pytest.approx(exact["delta"], rel=1e-9)
    width = exact["ci_high"] - exact["ci_low"]
    assert linear["ci_high"] - linear["ci_low"] == pytest.approx(width, rel=0.15)
    assert abs(linear["ci_low"] - exact["ci_low"]) < 0.15 * width
    assert paired_fid(a, b, ref, n_boot=100, device="cpu")["method"] == "exact"  # small: auto is exact
    with pytest.raises(StatsError, match="unknown method 'fast'; allowed: auto, exact, linear"):
        paired_fid(a, b, ref, method="fast")
