"""Compatibility names for the schedule maths, which lives in nfebench.schedules (no maths here).

VPSchedule is the discrete VP schedule, nfebench.schedules.Discrete.
"""

from .schedules import SPACINGS, TUNE_SPACINGS, Discrete, linear_betas

VPSchedule = Discrete

__all__ = ["SPACINGS", "TUNE_SPACINGS", "VPSchedule", "linear_betas"]
