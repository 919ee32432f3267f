"""`distill train`: supervised fine-tuning of a student on verified traces with TRL's SFTTrainer.

    distill train --size tiny --data runs/filtered --output runs/student

`--size` picks recipes/sft/<family>-<size>.yaml (tiny: the embedded SmolLM2-135M student on CPU;
1.5b ... 70b: the R1 paper's students, which need CUDA GPUs). A recipe's keys are TrainConfig fields
or trl.SFTConfig fields. Each kept row's `messages` becomes a prompt/completion pair, so the loss
covers only the assistant turn, which the chat template ends with the EOS token.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

from distill import config as config_mod
from distill.config import TrainConfig
from distill.errors import DistillError
from distill.models import resolve_model
from distill.records import read_jsonl, write_json

RECIPES = Path(__file__).resolve().parent.parent / "recipes"

# SFTConfig values distill sets unless the recipe does: quiet, CPU-aware, saves once at the end.
SFT_DEFAULTS = {
    "report_to": "none",
    "save_strategy": "no",
    "logging_steps": 1,
    "bf16": True,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "num_train_epochs": 2,
    "learning_rate": 1e-4,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.05,
    "max_length": 2048,
    "seed": 0,
}


def sft_fields() -> set[str]:
    from trl import SFTConfig

    return {f.name for f in dataclasses.fields(SFTConfig)} - {"output_dir"}


def recipe_for(size: str) -> Path:
    """recipes/sft/*-<size>.yaml; exactly one must match."""
    matches = sorted((RECIPES / "sft").glob(f"*-{size.lower()}.yaml"))
    if not matches:
        sizes = sorted({p.stem.rsplit("-", 1)[1] for p in (RECIPES / "sft").glob("*-*.yaml")})
        raise DistillError(f"no SFT recipe for size {size!r} in {RECIPES / 'sft'} (sizes: {', '.join(sizes)})")
    if len(matches) > 1:
        raise DistillError(f"several recipes for size {size!r}: {', '.join(p.name for p in matches)}; pass --config")
    return matches[0]


def load_sft_rows(path: str | Path, max_examples: int = 0) -> list[dict]:
    """Kept rows -> [{prompt: [...], completion: [assistant turn]}], checking each row's messages."""
    p = Path(path)
    if p.is_dir():
        p = p / "kept.jsonl"
    rows = []
    for n, row in enumerate(read_jsonl(p), start=1):
        msgs = row.get("messages")
        if not isinstance(msgs, list) or len(msgs) < 2:
            raise DistillError(f"{p}, row {n}: 'messages' must be a list of at least a prompt and an answer turn")
        for m in msgs:
            if not isinstance(m, dict) or not isinstance(m.get("content"), str) or "role" not in m:
                raise DistillError(f"{p}, row {n}: each message needs a 'role' and a text 'content'")
        if msgs[-1]["role"] != "assistant":
            raise DistillError(f"{p}, row {n}: the last message must be the assistant's answer")
        rows.append({"prompt": msgs[:-1], "completion": msgs[-1:]})
        if max_examples and len(rows) >= max_examples:
            break
    if not rows:
        raise DistillError(f"{p}: no training rows (did `distill filter` keep any trace?)")
    return rows


def run(cfg: TrainConfig) -> dict:
    from distill.server import has_cuda

    if cfg.requires_gpu and not has_cuda():
        raise DistillError(
            f"the {cfg.size} recipe trains {cfg.model} and needs CUDA GPUs, and this machine has none; "
            "run it on a GPU machine, or use --size tiny here"
        )
    rows = load_sft_rows(cfg.data, cfg.max_examples)

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    sft_kwargs = {**SFT_DEFAULTS, **cfg.sft}
    cpu = not torch.cuda.is_available()
    if cpu:
        sft_kwargs["use_cpu"] = True
        # FlashAttention, Liger and padding-free packing are GPU-only; drop them rather than crash.
        for key in ("use_liger_kernel", "padding_free"):
            sft_kwargs.pop(key, None)
    attn = cfg.attn_implementation
    try:
        args = SFTConfig(output_dir=str(out / "checkpoints"), **sft_kwargs)
    except (TypeError, ValueError) as e:
        raise DistillError(f"invalid SFT settings: {e}") from None

    path = resolve_model(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    model_kwargs = {"dtype": dtype}
    if attn and not cpu:
        model_kwargs["attn_implementation"] = attn
    model = AutoModelForCausalLM.from_pretrained(path, **model_kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    print(f"[distill] training {cfg.model} on {len(rows)} rows from {cfg.data} ({'CPU' if cpu else 'GPU'})", flush=True)

    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    start = time.monotonic()
    result = trainer.train(resume_from_checkpoint=cfg.sft.get("resume_from_checkpoint"))
    seconds = time.monotonic() - start
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]

    # Save into a temp folder, then move the files in: a crash never leaves a half-written model.
    tmp = out / ".saving"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    for f in tmp.iterdir():
        f.replace(out / f.name)
    tmp.rmdir()
    metrics = {
        "train_rows": len(rows),
        "steps": trainer.state.global_step,
        "seconds": round(seconds, 1),
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "train_loss": result.training_loss,
    }
    write_json(out / "train_metrics.json", metrics)
    (out / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1))
    config_mod.save(cfg, out, extra={"resolved_model": path})
    print(
        f"[distill] train: {metrics['steps']} steps in {seconds:.0f} s, loss {metrics['first_loss']} -> "
        f"{metrics['last_loss']}; model saved to {out}",
        flush=True,
    )
    return metrics
