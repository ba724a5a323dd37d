"""Learning-rate schedules of the reference (spec §3.4), quantised per epoch or per step.

``lr(t) = base * rho(P * floor(t / P))`` with P = steps per epoch (``sched_freq=epoch``) or 1
(``sched_freq=step``) and T = total steps. No warm-up, as in the reference.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

SCHEDULES = ("const", "linear", "step", "cos", "halfcos")
_ALIASES = {"constant": "const", "cosine": "cos", "halfcosine": "halfcos"}


def canonical_schedule(name: str) -> str:
    name = _ALIASES.get(name.lower(), name.lower())
    if name not in SCHEDULES:
        raise ValueError(
            f"unknown --sched_type '{name}'; valid: {', '.join(SCHEDULES)} "
            f"(aliases {', '.join(_ALIASES)})"
        )
    return name


@keras.saving.register_keras_serializable(package="droc")
class ReferenceSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """The reference's CustomLearningRateSchedule, as a Keras schedule keyed on the step."""

    def __init__(
        self,
        base_lr: float,
        kind: str,
        total_steps: int,
        period: int = 1,
        min_rate: float = 0.0,
        step_size: int = 1,
        gamma: float = 0.995,
        level: int = 7,
    ):
        self.base_lr = float(base_lr)
        self.kind = canonical_schedule(kind)
        self.total_steps = max(1, int(total_steps))
        self.period = max(1, int(period))
        self.min_rate = float(min_rate)
        self.step_size = max(1, int(step_size))
        self.gamma = float(gamma)
        self.level = int(level)

    def factor(self, step):
        """rho(t) for a (possibly symbolic) step."""
        t = tf.cast(step, tf.float32)
        p = float(self.period)
        t = p * tf.floor(t / p)
        total = float(self.total_steps)
        m = self.min_rate
        if self.kind == "const":
            return tf.ones_like(t)
        if self.kind == "linear":
            return m + (1.0 - m) * tf.clip_by_value(1.0 - t / total, 0.0, 1.0)
        if self.kind == "step":
            k = tf.floor(t / (self.step_size * p))
            return tf.clip_by_value(tf.pow(self.gamma, k), 0.0, 1.0)
        if self.kind == "cos":
            return tf.clip_by_value(
                m + 0.5 * (1.0 - m) * (1.0 + tf.cos(math.pi * t / total)), 0.0, 1.0
            )
        # halfcos (FixMatch-style)
        return tf.clip_by_value(tf.cos(math.pi * t / total * self.level / 16.0), 0.0, 1.0)

    def __call__(self, step):
        return self.base_lr * self.factor(step)

    def get_config(self):
        return {
            "base_lr": self.base_lr,
            "kind": self.kind,
            "total_steps": self.total_steps,
            "period": self.period,
            "min_rate": self.min_rate,
            "step_size": self.step_size,
            "gamma": self.gamma,
            "level": self.level,
        }
