"""One training engine (loop, DDP, bf16 autocast, EMA, checkpoints, metrics) and its recipes."""

from nalaformer.train.checkpoint import (
    CheckpointError,
    checkpoint_step,
    latest_valid_checkpoint,
    list_checkpoints,
    load_state,
    load_weights,
    resolve_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from nalaformer.train.config import TrainConfig, add_config_arguments, apply_arguments, from_dict, to_dict
from nalaformer.train.distributed import DistributedContext, setup_distributed, teardown_distributed
from nalaformer.train.engine import (
    NonFiniteLossError,
    TrainingInterrupted,
    TrainResult,
    eval_fn_from_loss,
    evaluate,
    move_to_device,
    seed_everything,
    train,
)
from nalaformer.train.metrics import MetricsLog, WeightedMeans, read_metrics
from nalaformer.train.optim import WarmupCosine, build_ema, build_optimizer, build_scheduler, parameter_groups
from nalaformer.train.run_folder import RunFolderError, claim_run_dir
from nalaformer.train.runs import TrainedRun, find_run_dir, load_run
from nalaformer.train.sampling import DataPosition, GlobalBatchSampler, epoch_order, evaluation_batches

__all__ = [
    "CheckpointError",
    "DataPosition",
    "DistributedContext",
    "GlobalBatchSampler",
    "MetricsLog",
    "NonFiniteLossError",
    "RunFolderError",
    "TrainConfig",
    "TrainResult",
    "TrainedRun",
    "TrainingInterrupted",
    "WarmupCosine",
    "WeightedMeans",
    "add_config_arguments",
    "apply_arguments",
    "build_ema",
    "build_optimizer",
    "build_scheduler",
    "checkpoint_step",
    "claim_run_dir",
    "epoch_order",
    "eval_fn_from_loss",
    "evaluate",
    "evaluation_batches",
    "find_run_dir",
    "from_dict",
    "latest_valid_checkpoint",
    "list_checkpoints",
    "load_run",
    "load_state",
    "load_weights",
    "move_to_device",
    "parameter_groups",
    "read_metrics",
    "resolve_checkpoint",
    "save_checkpoint",
    "seed_everything",
    "setup_distributed",
    "teardown_distributed",
    "to_dict",
    "train",
    "verify_checkpoint",
]
