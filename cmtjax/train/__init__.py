"""The one training loop, the method interface, weighted forward-KL fitting, checkpoints,
sharding over devices and multi-process runs."""

from cmtjax.train.checkpoint import (CheckpointError, CheckpointOptions, Checkpointer,
                                     IncompatibleCheckpointError, Restored, fingerprint)
from cmtjax.train.distributed import ProcessInfo, initialize, is_primary
from cmtjax.train.fit import FIT_MODES, FitInfo, fit_weighted
from cmtjax.train.loop import (TargetNotFinite, TrainResult, TrainingStalled, check_time_plan,
                               plan_steps, stall_reason, train)
from cmtjax.train.sharding import (BATCH_AXIS, batch_sharding, make_mesh, replicate,
                                   replicated, resolve_devices, shard_batch)
from cmtjax.train.state import Method, TrainState

__all__ = ["BATCH_AXIS", "CheckpointError", "CheckpointOptions", "Checkpointer", "FIT_MODES",
           "FitInfo", "IncompatibleCheckpointError", "Method", "ProcessInfo", "Restored",
           "TargetNotFinite", "TrainResult", "TrainState", "TrainingStalled", "batch_sharding",
           "check_time_plan",
           "fingerprint", "fit_weighted", "initialize", "is_primary", "make_mesh", "plan_steps",
           "replicate", "replicated", "resolve_devices", "shard_batch", "stall_reason", "train"]
