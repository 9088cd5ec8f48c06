"""The one training loop, the method interface, and weighted forward-KL fitting."""

from cmtjax.train.fit import FIT_MODES, FitInfo, fit_weighted
from cmtjax.train.loop import TrainResult, plan_steps, train
from cmtjax.train.state import Method, TrainState

__all__ = ["FIT_MODES", "FitInfo", "Method", "TrainResult", "TrainState", "fit_weighted",
           "plan_steps", "train"]
