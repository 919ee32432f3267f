"""`distill train --launcher ddp|zero2|zero3|fsdp`: re-run the same command under `accelerate launch`
with recipes/accelerate/<launcher>.yaml on every GPU of every node; `--print-launch true` shows the
command. The launched processes see DISTILL_LAUNCHED (and accelerate's own variables) and train.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from distill.common import config as config_mod
from distill.common.errors import DistillError
from distill.common.hub import check_repo_id
from distill.common.records import KEPT
from distill.common.resources import ACCELERATE_CONFIGS
from distill.common.server import cuda_device_count
from distill.training.base import resume_checkpoint
from distill.training.config import LaunchOptions, TrainConfig, data_sources

# TrainConfig fields that say how to start the processes, not what to train: the launched command drops them
# (and a rehearsal's, which prints the command the GPU run would launch).
LAUNCH_KEYS = (*(f.name for f in dataclasses.fields(LaunchOptions)), "rehearse")
# Set in the environment of a launched run (as are accelerate's and torchrun's own variables), so the
# processes it starts train instead of launching again.
LAUNCHED_ENV = "DISTILL_LAUNCHED"


def inside_launch(env: dict[str, str] | None = None) -> bool:
    """True in a process started by `accelerate launch`/torchrun (or by distill's own launch): such a
    process trains; launching again from it would start processes recursively."""
    env = os.environ if env is None else env
    return any(key in env for key in (LAUNCHED_ENV, "LOCAL_RANK", "WORLD_SIZE", "ACCELERATE_MIXED_PRECISION"))


LAUNCH_FILE = "distill_launch.yaml"  # <output>/distill_launch.yaml: the resolved config every launched process reads


def child_argv(cfg: TrainConfig, write: bool = True) -> list[str]:
    """The `train ...` arguments each launched process gets: `--config` of the resolved config, written to
    <output>/distill_launch.yaml without the launch keys (unless `write` is False: the rehearsal shows the
    command), so every rank trains exactly what this process resolved (recipe, --config, --set and flags
    already layered) and none of them launches again."""
    path = Path(cfg.output) / LAUNCH_FILE
    if not write:
        return ["train", "--config", shown(path.absolute())]
    values = {k: v for k, v in config_mod.to_dict(cfg).items() if k not in LAUNCH_KEYS}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump({"stage": "train", **values}, sort_keys=False, allow_unicode=True))
    tmp.replace(path)
    return ["train", "--config", shown(path.absolute())]


def shown(path: Path) -> str:
    """A path as the user would type it: relative to the working directory when under it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def launch_command(cfg: TrainConfig, child: list[str], gpus_here: int | None = None) -> list[str]:
    """`accelerate launch --config_file recipes/accelerate/<launcher>.yaml ... -m distill.cli <child>`.

    `gpus_here` is this node's GPU count (None: ask torch); it is used when --num-gpus is 0. Processes:
    num_nodes x GPUs per node; every node runs the same command with its own --machine-rank."""
    launch = cfg.launch
    if not launch.launcher:
        raise DistillError("no launcher: set --launcher ddp|zero2|zero3|fsdp")
    conf = ACCELERATE_CONFIGS / f"{launch.launcher}.yaml"
    if not conf.is_file():
        raise DistillError(f"accelerate config {conf} for --launcher {launch.launcher} does not exist")
    gpus = launch.num_gpus or (cuda_device_count() if gpus_here is None else gpus_here)
    if not gpus:
        raise DistillError("--num-gpus is 0 and this machine has no CUDA GPU to count: pass --num-gpus N (per node)")
    if launch.num_nodes > 1 and not launch.main_process_ip:
        raise DistillError(
            f"--num-nodes {launch.num_nodes} needs --main-process-ip: the address of the machine with --machine-rank 0"
        )
    cmd = ["accelerate", "launch", "--config_file", shown(conf)]
    cmd += ["--num_processes", str(launch.num_nodes * gpus), "--num_machines", str(launch.num_nodes)]
    if launch.num_nodes > 1:
        cmd += ["--machine_rank", str(launch.machine_rank), "--main_process_ip", launch.main_process_ip]
    cmd += ["--main_process_port", str(launch.main_process_port), "-m", "distill.cli", *child]
    return cmd


def execute(cmd: list[str]) -> int:
    """Run a launch command to the end and return its exit status (128 + N when killed by signal N).

    Its output streams straight to ours. The child runs in its own session, so a Ctrl-C on the terminal
    reaches it once, through us: SIGINT and SIGTERM (Slurm's time limit, `kill`) are forwarded, and we
    wait for the launched processes to finish their cleanup."""
    exe = cmd[0]
    if exe == "accelerate":
        local = Path(sys.executable).parent / "accelerate"  # the one of this environment first
        exe = str(local) if local.is_file() else shutil.which("accelerate") or ""
        if not exe:
            raise DistillError("`accelerate` is not installed in this environment: pip install accelerate")
    env = {**os.environ, LAUNCHED_ENV: "1"}
    print(f"[distill] launching: {shlex.join(cmd)}", flush=True)
    try:
        proc = subprocess.Popen([exe, *cmd[1:]], env=env, start_new_session=True)
    except OSError as e:
        raise DistillError(f"cannot start {exe}: {e}") from None

    def forward(signum: int, frame: Any) -> None:  # noqa: ARG001
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if proc.poll() is None:  # we are leaving on an exception: do not orphan the training
            proc.terminate()
            proc.wait()
    return code if code >= 0 else 128 - code


def preflight(cfg: TrainConfig) -> None:
    """The cheap checks of `prepare`, run once before launching: a bad repo id, missing data or a resume
    problem is then one message, not one traceback per process after minutes of start-up."""
    if cfg.push_to_hub:
        check_repo_id(cfg.push_to_hub)
    for source in data_sources(cfg.data):
        data = Path(source.path)
        if not (data / KEPT if data.is_dir() else data).is_file():
            raise DistillError(f"{data} does not exist: pass the kept.jsonl of `distill filter` (or its folder)")
    resume_checkpoint(cfg)
