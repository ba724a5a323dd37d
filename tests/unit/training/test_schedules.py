"""LR schedules against the formulas of the reference (spec §3.4)."""

from __future__ import annotations

import math

import pytest

from deep_representation_one_class.utils.schedules import ReferenceSchedule, canonical_schedule


def lr(s, t):
    return float(s(t))


def test_cos_epoch_quantised():
    s = ReferenceSchedule(0.1, "cos", total_steps=100, period=10)
    assert lr(s, 0) == pytest.approx(0.1)
    assert lr(s, 9) == pytest.approx(0.1)  # same epoch -> same LR
    assert lr(s, 10) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 0.1)))
    assert lr(s, 50) == pytest.approx(0.05, rel=1e-5)


def test_cos_step_and_min_rate():
    s = ReferenceSchedule(1.0, "cosine", total_steps=10, period=1, min_rate=0.2)
    assert lr(s, 5) == pytest.approx(0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr(s, 10) == pytest.approx(0.2)


def test_linear_step_const_halfcos():
    assert lr(ReferenceSchedule(1.0, "linear", 10), 5) == pytest.approx(0.5)
    assert lr(ReferenceSchedule(1.0, "const", 10), 7) == pytest.approx(1.0)
    st = ReferenceSchedule(1.0, "step", 100, period=10, step_size=2, gamma=0.5)
    assert lr(st, 19) == pytest.approx(1.0)
    assert lr(st, 20) == pytest.approx(0.5)
    hc = ReferenceSchedule(1.0, "halfcos", 16, level=8)
    assert lr(hc, 8) == pytest.approx(math.cos(math.pi * 0.5 * 0.5))


def test_unknown_schedule():
    with pytest.raises(ValueError, match="valid: const"):
        canonical_schedule("exp")
