"""Compatibility names for the schedule maths, which lives in nfebench.schedules (no maths here).

VPSchedule is the discrete VP schedule, nfebench.schedules.Discrete.
"""

from .schedules import SPACINGS, Discrete, linear_betas

VPSchedule = Discrete

__all__ = ["SPACINGS", "VPSchedule", "linear_betas"]
