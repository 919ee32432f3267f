"""`distill grpo`: reinforcement learning with verifiable rewards (GRPO) on problems with known answers.

    distill grpo --config recipes/grpo/tiny-cpu.yaml [--set key=value ...]

For each prompt the policy samples a group of `num_generations` completions; rule-based rewards
(distill.training.rewards: accuracy by math-verify, format, overlong length, repetition) score them; each
completion's advantage is its reward relative to its group's mean, so no value model is needed. TRL's
GRPOTrainer does the sampling and the update; this module builds its inputs from a distill recipe:

* prompts from `distill.problems.prompts.load_prompts` (built-in problems by level, a JSONL/Parquet file or a Hub
  dataset), turned into chat messages with the same template `distill generate` uses, with the gold
  answer as the `answer` column the accuracy reward reads;
* the rewards named in `reward_funcs`, weighted by `reward_weights`;
* any trl.GRPOConfig field from the recipe or `--set` (unknown keys are errors naming the key and file).

On CUDA GPUs, sampling can run in vLLM (`use_vllm: true`): `vllm_mode: colocate` puts a vLLM engine in
every training process; `vllm_mode: server` talks to a separately started vLLM server
(`vllm_server_base_url`). TRL pushes the new weights into that server after each step, which needs vLLM's
dev endpoints and its NCCL weight-transfer engine (see docs/GRPO.md for the command). Without a GPU,
sampling is transformers' generate in this process and `use_vllm` is switched off.

On CPU with bf16 the weights stay in float32 and the arithmetic runs under bf16 autocast, in the update
and in sampling: bf16 weights would drop updates of a GRPO-sized learning rate (near 0.03 the bf16 grid
spacing is 1.2e-4, far above one Adam step of lr 1e-5), while bf16 arithmetic is about twice as fast as
float32 on CPUs with bf16 instructions.

Outputs in `output`: the model and tokenizer, `distill_config.yaml` (the resolved config),
`log_history.json` (TRL's per-step logs) and `rewards.json` (mean reward per step, in total and per
reward function, plus first/last-10-step means).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from distill.common import config as config_mod
from distill.common.client import build_messages
from distill.common.errors import DistillError
from distill.common.models import resolve_model
from distill.common.records import write_json
from distill.common.resources import RECIPES
from distill.common.server import has_cuda
from distill.problems.prompts import load_prompts
from distill.training.base import (
    apply_length_policy,
    check_positions,
    configure_tokenizer,
    prompt_length,
    resolve_bf16,
)
from distill.training.config import GrpoConfig
from distill.training.rewards import REWARDS, make_reward_funcs

GRPO_RECIPES = RECIPES / "grpo"

# GRPOConfig values distill sets unless the recipe does: quiet, one log entry per step, saves once at the end.
GRPO_DEFAULTS: dict[str, Any] = {
    "report_to": "none",
    "save_strategy": "no",
    "logging_steps": 1,
    "bf16": "auto",  # as SFT's: bf16 where native (GPUs, CPUs with avx512_bf16/AMX), else float32
    "learning_rate": 1e-6,
    "lr_scheduler_type": "constant",
    "num_generations": 8,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "max_completion_length": 512,
    "temperature": 1.0,
    "beta": 0.0,
}
GPU_ONLY_KEYS = ("use_liger_kernel",)  # dropped on CPU rather than crash
SUMMARY_STEPS = 10  # rewards.json compares the mean of the first and of the last this many steps


def grpo_fields() -> set[str]:
    """Names of trl.GRPOConfig fields a recipe may set (all but output_dir, which distill owns)."""

    return {f.name for f in dataclasses.fields(GRPOConfig)} - {"output_dir"}


def load_recipe(path: str | Path) -> GrpoConfig:
    """A recipe file as a GrpoConfig, its keys checked (distill fields or trl.GRPOConfig fields)."""
    return config_mod.build(GrpoConfig, config_mod.load_yaml(path), source=str(path), extra=grpo_fields())


def load_rows(cfg: GrpoConfig) -> list[dict]:
    """Training rows: a conversational `prompt` (chat messages), the gold `answer`, `id` and `level`."""

    prompts = load_prompts(
        cfg.dataset,
        cfg.split,
        cfg.num_prompts,
        cfg.problem_column,
        cfg.answer_column,
        cfg.id_column,
        levels=cfg.levels,
        answer_regex=cfg.answer_regex,
        seed=cfg.seed,
    )
    if "accuracy" in cfg.reward_funcs:
        missing = [p["id"] for p in prompts if not p["answer"].strip()]
        if missing:
            raise DistillError(
                f"{cfg.dataset}: {len(missing)} prompts have no gold answer (first: {missing[0]}), and the "
                f"accuracy reward needs one; check answer_column ({cfg.answer_column!r})"
            )
    return [
        {
            "prompt": build_messages(p["problem"], cfg.prompt_template, cfg.system_prompt),
            "answer": p["answer"],
            "id": p["id"],
            "level": p["level"],
        }
        for p in prompts
    ]


def _numbers(values: dict[str, Any]) -> dict[str, Any]:
    """Numbers written as text ('1e-6': YAML 1.1 reads an exponent without a dot as a string) become
    numbers where the GRPOConfig field's default is a number; anything else is left to GRPOConfig."""

    defaults = {f.name: f.default for f in dataclasses.fields(GRPOConfig)}
    out = dict(values)
    for key, value in values.items():
        default = defaults.get(key)
        if isinstance(value, str) and isinstance(default, (int, float)) and not isinstance(default, bool):
            try:
                out[key] = float(value) if isinstance(default, float) or not value.strip().isdigit() else int(value)
            except ValueError:
                raise DistillError(f"grpo: key '{key}' expects a number, got {value!r}") from None
    return out


def grpo_kwargs(cfg: GrpoConfig, cpu: bool) -> dict[str, Any]:
    """The keyword arguments for trl.GRPOConfig: distill's defaults < the recipe's pass-through keys,
    plus `seed` and `reward_weights` (fields of both configs), and on CPU use_cpu with vLLM and GPU-only
    kernels off."""
    kwargs = {**GRPO_DEFAULTS, "seed": cfg.seed, **_numbers(cfg.grpo)}  # grpo.seed may still differ
    if cfg.reward_weights:
        kwargs["reward_weights"] = list(cfg.reward_weights)
    if kwargs.get("bf16") == "auto":
        kwargs["bf16"] = resolve_bf16(cpu)
    if cpu:
        kwargs["use_cpu"] = True
        if kwargs.get("use_vllm"):
            print("[distill] grpo: no CUDA GPU, so sampling uses transformers' generate (use_vllm off)", flush=True)
        kwargs["use_vllm"] = False
        for key in GPU_ONLY_KEYS:
            kwargs.pop(key, None)
    return kwargs


def add_vllm_stop(args: Any, eos_id: int) -> None:
    """With use_vllm, the end-of-turn token as a stop of vLLM's sampling: TRL's vLLM path (server or colocate)
    builds SamplingParams from generation_kwargs and never reads the model's generation_config, so without this
    the completions run on to max_completion_length and the rewards score the run-off."""
    if not args.use_vllm:
        return
    kwargs = dict(args.generation_kwargs or {})
    stops = list(kwargs.get("stop_token_ids") or [])
    kwargs["stop_token_ids"] = stops if eos_id in stops else [*stops, eos_id]
    args.generation_kwargs = kwargs


def make_args(cfg: GrpoConfig, output_dir: str | Path, cpu: bool) -> Any:
    """trl.GRPOConfig for this run; TRL's own checks (batch sizes divisible by the group size, ...)
    surface as a DistillError."""

    try:
        return GRPOConfig(output_dir=str(output_dir), **grpo_kwargs(cfg, cpu))
    except (TypeError, ValueError) as e:
        raise DistillError(f"invalid GRPO settings: {' '.join(str(e).split())}") from None


def reward_curve(log_history: list[dict], names: list[str], n: int = SUMMARY_STEPS) -> dict:
    """Per-step rewards from TRL's log history (a `reward` entry per logged step) and the mean of the
    first and of the last `n` logged steps, per reward function and in total."""
    steps = []
    for h in log_history:
        if "reward" not in h:
            continue
        row = {"step": h.get("step"), "reward": h["reward"], "reward_std": h.get("reward_std")}
        for name in names:
            row[name] = h.get(f"rewards/{REWARDS[name].__name__}/mean")
        row["completion_length"] = h.get("completions/mean_length")
        row["clipped_ratio"] = h.get("completions/clipped_ratio")
        steps.append(row)

    def mean(rows: list[dict], key: str) -> float | None:
        vals = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
        return round(sum(vals) / len(vals), 4) if vals else None

    keys = ["reward", *names, "completion_length"]
    head, tail = steps[:n], steps[-n:]
    return {
        "steps": steps,
        f"first_{n}_mean": {k: mean(head, k) for k in keys},
        f"last_{n}_mean": {k: mean(tail, k) for k in keys},
    }


def _trainer_class(cpu_bf16: bool) -> type:
    """TRL's GRPOTrainer; on CPU with bf16, one whose sampling runs under bf16 autocast (training
    steps already do, through accelerate's mixed precision)."""

    if not cpu_bf16:
        return GRPOTrainer

    class CpuBf16GRPOTrainer(GRPOTrainer):
        def _generate_single_turn(self, *args: Any, **kwargs: Any) -> Any:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return super()._generate_single_turn(*args, **kwargs)

    return CpuBf16GRPOTrainer


def _progress(out: Path, names: list[str], max_minutes: float) -> Any:
    """A callback that prints one short line per logged step (rewards, completion length, seconds),
    keeps `rewards.json` current while training runs (a stopped run still shows its curve), and ends
    training cleanly after `max_minutes` (0: no limit), so the model learned so far is still saved."""

    class Progress(TrainerCallback):
        def __init__(self) -> None:
            self.start = self.last = time.monotonic()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if max_minutes and time.monotonic() - self.start > max_minutes * 60:
                if state.is_world_process_zero:
                    print(f"[distill] grpo: {max_minutes:g} minutes are up: stopping after this step", flush=True)
                control.should_training_stop = True

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            if not logs or "reward" not in logs or not state.is_world_process_zero:
                return
            now = time.monotonic()
            parts = [f"step {state.global_step}/{state.max_steps}", f"reward {logs['reward']:.3f}"]
            for key, value in logs.items():
                if key.startswith("rewards/") and key.endswith("/mean"):
                    parts.append(f"{key.split('/')[1].removesuffix('_reward')} {value:.3f}")
            if "completions/mean_length" in logs:
                parts.append(f"len {logs['completions/mean_length']:.0f}")
            parts.append(f"{now - self.last:.0f} s")
            self.last = now
            print("[distill] grpo " + ", ".join(parts), flush=True)
            write_json(out / "rewards.json", {"running": True, **reward_curve(state.log_history, names)})

    return Progress()


def run(cfg: GrpoConfig) -> dict:
    """Train `cfg.model` with GRPO and save it with its logs; returns the reward summary."""

    if cfg.requires_gpu and not has_cuda():
        raise DistillError(
            f"this GRPO recipe trains {cfg.model} and needs CUDA GPUs, and this machine has none; "
            "run it on a GPU machine, or use recipes/grpo/tiny-cpu.yaml here"
        )
    rows = load_rows(cfg)

    cpu = not torch.cuda.is_available()
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    args = make_args(cfg, out / "checkpoints", cpu)
    reward_funcs = make_reward_funcs(
        cfg.reward_funcs,
        timeout=cfg.verify_timeout,
        workers=cfg.verify_workers,
        format_tags=cfg.format_tags,
        max_completion_length=args.max_completion_length,
        overlong_buffer=cfg.overlong_buffer,
    )

    path = resolve_model(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    configure_tokenizer(tokenizer, cfg, cfg.model)  # chat_template / eos_token / pad token, as `distill train`
    # A prompt plus its longest completion must fit the model (and vLLM's max model length when it samples):
    # prompts that do not are dropped by default, never cut (a cut prompt loses its question).
    limit = args.vllm_max_model_length if args.use_vllm and args.vllm_max_model_length else None
    limit = limit or check_positions(cfg, path, None)
    lengths = [prompt_length(tokenizer, r["prompt"]) + args.max_completion_length for r in rows]
    rows, _ = apply_length_policy(rows, lengths, limit, cfg.truncation, what="prompts (+ max_completion_length)")
    cpu_bf16 = cpu and args.bf16
    # On CPU the weights stay float32 (see the module docstring); on GPU bf16 weights as usual.
    dtype = torch.bfloat16 if args.bf16 and not cpu else torch.float32
    model_kwargs: dict[str, Any] = {"dtype": dtype}
    if cfg.attn_implementation and not cpu:
        model_kwargs["attn_implementation"] = cfg.attn_implementation
    model = AutoModelForCausalLM.from_pretrained(path, **model_kwargs)
    if cfg.eos_token:  # stop sampling at the end-of-turn token too (TRL stops at any generation-config EOS)
        eos_id = tokenizer.convert_tokens_to_ids(cfg.eos_token)
        ids = model.generation_config.eos_token_id
        ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
        if eos_id not in ids:
            model.generation_config.eos_token_id = [eos_id, *ids]
        add_vllm_stop(args, eos_id)

    group = args.num_generations
    print(
        f"[distill] grpo: {cfg.model} on {len(rows)} prompts from {cfg.dataset} ({'CPU' if cpu else 'GPU'}), "
        f"groups of {group}, rewards {', '.join(cfg.reward_funcs)}"
        + (f" weighted {cfg.reward_weights}" if cfg.reward_weights else "")
        + (f", sampling with vLLM ({args.vllm_mode})" if args.use_vllm else ""),
        flush=True,
    )
    try:
        trainer = _trainer_class(cpu_bf16)(
            model=model,
            reward_funcs=reward_funcs,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            callbacks=[_progress(out, list(cfg.reward_funcs), cfg.max_minutes)],
        )
    except ValueError as e:
        raise DistillError(f"GRPOTrainer refused the settings: {' '.join(str(e).split())}") from None

    start = time.monotonic()
    trainer.train(resume_from_checkpoint=cfg.grpo.get("resume_from_checkpoint"))
    seconds = time.monotonic() - start

    # Save into a temp folder, then move the files in: a crash never leaves a half-written model.
    # Every process calls save_model (ZeRO-3 gathers the shards); the main one writes the rest.
    tmp = out / ".saving"
    if trainer.accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(tmp))
    trainer.accelerator.wait_for_everyone()
    curve = reward_curve(trainer.state.log_history, list(cfg.reward_funcs))
    summary = {
        "reward_funcs": list(cfg.reward_funcs),
        "reward_weights": list(cfg.reward_weights) or [1.0] * len(cfg.reward_funcs),
        "num_generations": group,
        "steps_done": trainer.state.global_step,
        "seconds": round(seconds, 1),
        **curve,
    }
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(str(tmp))
        for f in tmp.iterdir():
            f.replace(out / f.name)
        tmp.rmdir()
        (out / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1))
        write_json(out / "rewards.json", summary)
        config_mod.save(cfg, out, extra={"resolved_model": path})
        first, last = summary[f"first_{SUMMARY_STEPS}_mean"], summary[f"last_{SUMMARY_STEPS}_mean"]
        print(
            f"[distill] grpo: {summary['steps_done']} steps in {seconds:.0f} s; mean reward {first['reward']} "
            f"(first {SUMMARY_STEPS} steps) -> {last['reward']} (last {SUMMARY_STEPS}); model saved to {out}",
            flush=True,
        )
    return summary
