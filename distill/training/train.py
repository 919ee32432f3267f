"""`distill train`: train a student on verified traces, by the method the config names.

    distill train --size tiny --data runs/filtered --output runs/student
    distill train --size 7b --launcher zero3 --num-gpus 8 --data runs/filtered --output runs/student-7b
    distill train --size 7b --lora-r 16 --merge-lora true --push-to-hub alice/qwen-math-7b-distill
    distill train --method logit-kd --data runs/filtered-with-logprobs --output runs/student-kd
    distill train --method onpolicy --teacher-url http://127.0.0.1:8000/v1 --output runs/student-op

`--size` picks recipes/<method>/<family>-<size>.yaml (tiny: the embedded SmolLM2-135M student on CPU;
1.5b ... 70b: the R1 paper's students, which need CUDA GPUs); `recipe_layer` resolves it, below the CLI.
A recipe's keys are TrainConfig fields or trl.SFTConfig fields.

The house of training: this module launches (distill.training.launch: every rank reads the resolved config
from one file), rehearses (distill.training.rehearse) or trains with the method's row of
distill.training.config.METHODS; each method's `prepare` builds a `transformers.Trainer` from
distill.training.base's shared pieces, and base.train_and_save trains, saves, writes the metrics and pushes.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import shlex

from trl import SFTConfig

from distill.common.errors import DistillError
from distill.common.server import has_cuda
from distill.training import rehearse
from distill.training.base import train_and_save
from distill.training.config import METHODS, TrainConfig
from distill.training.launch import child_argv, execute, inside_launch, launch_command, preflight


def sft_fields() -> set[str]:
    """trl.SFTConfig's fields: a train recipe may set any of them at its top level."""
    return {f.name for f in dataclasses.fields(SFTConfig)} - {"output_dir"}


def run(cfg: TrainConfig) -> int:
    """The `distill train` command: launch under accelerate when --launcher asks for it, rehearse, or train here."""
    launch = cfg.launch
    if cfg.rehearse:
        return rehearse.run(cfg)
    if launch.launcher and not inside_launch():
        if launch.print_launch:
            print(shlex.join(launch_command(cfg, child_argv(cfg))), flush=True)
            return 0
        if not has_cuda():
            raise DistillError(
                f"--launcher {launch.launcher} needs CUDA GPUs, and this machine has none; run it on a GPU node, "
                "or add --print-launch true --num-gpus N to see the command it would run"
            )
        if launch.launcher in ("zero2", "zero3") and importlib.util.find_spec("deepspeed") is None:
            raise DistillError(
                f"--launcher {launch.launcher} uses DeepSpeed, which is not installed: pip install deepspeed, "
                "or use --launcher fsdp (same sharding as zero3, no DeepSpeed)"
            )
        preflight(cfg)
        return execute(launch_command(cfg, child_argv(cfg)))
    if launch.print_launch and not launch.launcher:
        raise DistillError("--print-launch shows the command of a launcher: add --launcher ddp|zero2|zero3|fsdp")
    train(cfg)
    return 0


def train(cfg: TrainConfig) -> dict:
    """Train a student as `cfg` says; returns the metrics (empty on all but the main process)."""
    return train_and_save(METHODS[cfg.method].prepare_fn()(cfg), cfg)
