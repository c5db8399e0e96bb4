"""Series checks against hand-made series with known answers (and the healthy counterpart of each)."""
import math

import numpy as np
import torch

from lazydet.diagnostics import checks_loss as L


def series(values, start=0):
    return [(start + i, float(v)) for i, v in enumerate(values)]


def healthy_loss(n=400, seed=0, noise=0.05):
    rng = np.random.default_rng(seed)
    x = np.arange(n)
    return 10 * np.exp(-x / 150) + 2 + noise * rng.standard_normal(n) * (2 + 10 * np.exp(-x / 150))


def test_non_finite_terms_names_exactly_the_bad_ones():
    d = {"loss_class": torch.tensor(1.0), "loss_bbox": torch.tensor(float("nan")), "loss_giou": torch.tensor(math.inf)}
    assert L.non_finite_terms(d) == ["loss_bbox", "loss_giou"]
    f = L.check_non_finite_loss(d, iteration=7, image_ids=[3, 9])
    assert f.name == "non_finite_loss" and f.iteration == 7 and f.data["image_ids"] == [3, 9]
    assert "loss_bbox" in f.evidence and "loss_class" not in f.evidence
    assert L.check_non_finite_loss({"a": torch.tensor(2.0)}) is None


def test_rolling_median_matches_brute_force():
    v = np.random.default_rng(1).standard_normal(30)
    got = L.rolling_median(v, 5)
    assert np.allclose(got, [np.median(v[i:i + 5]) for i in range(26)])


def test_divergence_detects_climb_and_ignores_healthy_and_spikes():
    healthy = healthy_loss()
    assert L.check_divergence(series(healthy)) is None
    spiky = healthy.copy()
    spiky[::37] *= 20  # isolated spikes are not a divergence
    assert L.check_divergence(series(spiky)) is None
    climb = np.concatenate([healthy[:200], healthy[199] * np.exp(np.linspace(0, 2, 100))])
    f = L.check_divergence(series(climb))
    assert f is not None and f.name == "divergence" and f.data["now"] > 2 * f.data["min"]


def test_grad_explosion():
    g = np.full(100, 1.0) + 0.1 * np.random.default_rng(0).standard_normal(100)
    assert L.check_grad_explosion(series(g)) is None
    g2 = np.concatenate([g, np.full(5, 50.0)])
    f = L.check_grad_explosion(series(g2))
    assert f is not None and f.name == "grad_explosion"
    g3 = np.concatenate([g, [50.0], g[:4]])  # a single spike is not an explosion
    assert L.check_grad_explosion(series(g3)) is None


def test_no_learning_slope_test():
    assert L.check_no_learning(series(healthy_loss())) is None
    rng = np.random.default_rng(0)
    flat = 5 + 0.5 * rng.standard_normal(400)
    f = L.check_no_learning(series(flat))
    assert f is not None and f.name == "no_learning" and f.data["drop"] < 0.05
    # too early to judge: before warm-up + window
    assert L.check_no_learning(series(flat[:120]), warmup=100, window=50) is None
    # a converged run (flat now, but far below its start) is not "no learning"
    converged = np.concatenate([np.linspace(20, 3, 200), 3 + 0.1 * rng.standard_normal(300)])
    assert L.check_no_learning(series(converged)) is None


def test_coefficient_of_variation_detrended_against_numpy():
    x = np.arange(100.0)
    v = 10 - 0.05 * x  # pure trend: no noise
    assert L.coefficient_of_variation(v) < 1e-9
    rng = np.random.default_rng(0)
    noise = 5 + rng.standard_normal(100)
    assert abs(L.coefficient_of_variation(noise, detrend=False) - noise.std() / noise.mean()) < 1e-12


def test_noisy_flat_needs_both_noise_and_flat_validation():
    rng = np.random.default_rng(0)
    noisy = 5 * np.exp(0.6 * rng.standard_normal(200))
    flat_ap = series([0.1, 0.12, 0.11], start=0)
    rising_ap = series([1.0, 5.0, 12.0])
    f = L.check_noisy_flat(series(noisy), flat_ap)
    assert f is not None and f.name == "noisy_flat" and f.data["cv"] > 0.25
    assert L.check_noisy_flat(series(noisy), rising_ap) is None
    converged = series([1.0, 20.0, 30.0, 30.1, 30.2])  # improved, then converged: not "flat"
    assert L.check_noisy_flat(series(noisy), converged) is None
    assert L.check_noisy_flat(series(healthy_loss()), flat_ap) is None
    assert L.check_noisy_flat(series(noisy), flat_ap[:2]) is None  # not enough evaluations


def test_metric_at_chance():
    assert L.check_metric_at_chance(series([0.01, 0.02])) is None  # too few
    f = L.check_metric_at_chance(series([0.01, 0.02, 0.0]))
    assert f is not None and f.name == "metric_at_chance"
    assert L.check_metric_at_chance(series([0.01, 0.02, 3.0])) is None
