"""`distill train`: train a student on verified traces, by the method the config names.

    distill train --size tiny --data runs/filtered --output runs/student
    distill train --size 7b --launcher zero3 --num-gpus 8 --data runs/filtered --output runs/student-7b
    distill train --size 7b --lora-r 16 --merge-lora true --push-to-hub alice/qwen-math-7b-distill
    distill train --method logit-kd --data runs/filtered-with-logprobs --output runs/student-kd
    distill train --method onpolicy --teacher-url http://127.0.0.1:8000/v1 --output runs/student-op

`--size` picks recipes/<method>/<family>-<size>.yaml (tiny: the embedded SmolLM2-135M student on CPU;
1.5b ... 70b: the R1 paper's students, which need CUDA GPUs). A recipe's keys are TrainConfig fields
or trl.SFTConfig fields.

The house of training: this module launches (distill.training.launch) or picks the method; each method
(sft, kd, onpolicy) builds a `transformers.Trainer` from distill.training.base's shared pieces, and
base.train_and_save trains, saves, writes the metrics and pushes to the Hub for all of them.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import shlex

from trl import SFTConfig

from distill.common.errors import DistillError
from distill.common.server import has_cuda
from distill.training import kd, onpolicy, rehearse, sft
from distill.training.base import train_and_save
from distill.training.config import TrainConfig
from distill.training.launch import child_argv, execute, inside_launch, launch_command, preflight

PREPARE = {"sft": sft.prepare, "logit-kd": kd.prepare, "onpolicy": onpolicy.prepare}


def sft_fields() -> set[str]:
    """trl.SFTConfig's fields: a train recipe may set any of them at its top level."""
    return {f.name for f in dataclasses.fields(SFTConfig)} - {"output_dir"}


def main(cfg: TrainConfig, args: argparse.Namespace) -> int:
    """The `distill train` command: launch under accelerate when --launcher asks for it, else train here."""
    launch = cfg.launch
    if launch.launcher and not inside_launch() and not cfg.rehearse:
        if launch.print_launch:
            print(shlex.join(launch_command(cfg, child_argv(args))), flush=True)
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
        return execute(launch_command(cfg, child_argv(args)))
    if cfg.rehearse:
        return rehearse.run(cfg, args, run)
    if launch.print_launch and not launch.launcher:
        raise DistillError("--print-launch shows the command of a launcher: add --launcher ddp|zero2|zero3|fsdp")
    run(cfg)
    return 0


def run(cfg: TrainConfig) -> dict:
    """Train a student as `cfg` says; returns the metrics (empty on all but the main process)."""
    return train_and_save(PREPARE[cfg.method](cfg), cfg)
