"""Training throughput: `distill train` against a plain TRL SFTTrainer, same model, data and settings, same run.

    .venv/bin/python bench/train.py                               # 128 synthetic traces, the embedded student
    .venv/bin/python bench/train.py --data runs/demo/filtered     # the demo's kept traces

Like with like: every run trains the same rows for one epoch (exactly the same tokens) with the SAME
SFTConfig keys: distill's defaults and the recipe's (batch, length, precision, learning rate, schedule,
seed, gradient_checkpointing ...), everything a user could also pass to a plain SFTTrainer. Three runs:

  1. plain SFTTrainer, those keys, random batches          (the baseline)
  2. distill train (the recipe through distill.training.sft.prepare: the same keys, length-grouped batches)
  3. plain SFTTrainer, those keys but gradient_checkpointing=True (TRL's default, which a hand-rolled
     script gets unless it turns it off)

Printed: trained (non-padding) tokens/s and the padding share of each; `ratio` = 2 / 1 is the effect of
length-grouped batches alone; `checkpointing_ratio` = 1 / 3 is what switching off TRL's default gradient
checkpointing buys (any user can do it: it is reported apart, not credited to distill). With --repeats > 1
the runs alternate and medians are reported.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

from distill.common.client import build_messages  # noqa: E402
from distill.common.config import build, load_yaml  # noqa: E402
from distill.common.models import resolve_model  # noqa: E402
from distill.common.records import write_jsonl  # noqa: E402
from distill.common.resources import recipe_for  # noqa: E402
from distill.problems.tasks import builtin_problems  # noqa: E402
from distill.training.base import load_sft_rows, resolve_bf16  # noqa: E402
from distill.training.config import SFT_DEFAULTS, TrainConfig  # noqa: E402
from distill.training.sft import prepare  # noqa: E402
from distill.training.train import sft_fields  # noqa: E402

SENTENCES = [
    "First, we identify the quantities given in the problem.",
    "Next, we multiply the price of one item by the number of items.",
    "Wait, let me check that step again to make sure it is right.",
    "Then we subtract what was spent from the amount at the start.",
    "So far the running total is consistent with the problem statement.",
    "Let me verify the arithmetic by adding the parts back together.",
]


def synthetic_rows(n: int, seed: int = 0) -> list[dict]:
    """Kept-trace rows whose completion lengths follow the demo's verified traces (median ~200 tokens,
    70 to 500 and a long tail): the spread of lengths is what decides how much a batch pads."""
    rng = random.Random(seed)
    problems = builtin_problems("train", n, seed=seed)
    rows = []
    for i in range(n):
        p = problems[i % len(problems)]
        sentences = max(5, min(60, round(rng.lognormvariate(math.log(16), 0.45))))
        text = " ".join(rng.choice(SENTENCES) for _ in range(sentences))
        text += f"\n\nThe answer is \\boxed{{{p['answer']}}}."
        rows.append({"messages": build_messages(p["problem"], "{problem}") + [{"role": "assistant", "content": text}]})
    return rows


class Meter:
    """Counts the tokens of every batch a trainer's collator builds and times every optimizer step."""

    def __init__(self, trainer: Any) -> None:
        self.batches: list[tuple[int, int]] = []  # (non-padding tokens, batch tokens incl. padding)
        self.steps: list[float] = []
        collate = trainer.data_collator
        meter = self

        def counting(features: list) -> dict:
            batch = collate(features)
            ids = batch["input_ids"]
            mask = batch.get("attention_mask")
            real = int(mask.sum()) if mask is not None else ids.numel()
            meter.batches.append((real, ids.numel()))
            return batch

        class Timer(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):  # noqa: ANN001, ARG002
                self.t0 = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):  # noqa: ANN001, ARG002
                meter.steps.append(time.perf_counter() - self.t0)

        trainer.data_collator = counting
        trainer.add_callback(Timer())

    def result(self, name: str) -> dict:
        batches = self.batches[: len(self.steps)]  # accelerate fetches one batch ahead; drop what was not trained
        real = sum(r for r, _ in batches)
        total = sum(t for _, t in batches)
        seconds = sum(self.steps)
        return {
            "trainer": name,
            "steps": len(self.steps),
            "trained_tokens": real,
            "seconds": round(seconds, 1),
            "tokens_per_s": round(real / seconds, 1),
            "padding_share": round(1 - real / total, 3),
        }


def settings(recipe: dict, steps_cap: int) -> dict:
    """The SFTConfig keys every run gets: distill's defaults and the recipe's, one epoch, nothing saved.
    The batch order (train_sampling_strategy) is left out: it is what runs 1 and 2 differ in."""
    fields = sft_fields()
    values = {k: v for k, v in {**SFT_DEFAULTS, **recipe}.items() if k in fields and k != "train_sampling_strategy"}
    values.update(num_train_epochs=1, save_strategy="no", report_to="none", logging_steps=1, use_cpu=True)
    if steps_cap:
        values["max_steps"] = steps_cap
    return values


def run_baseline(rows_file: Path, model: str, sft: dict, out: Path, name: str) -> dict:
    """A hand-rolled script: rows into SFTTrainer(model, SFTConfig(**sft)), random batches."""
    path = resolve_model(model)
    rows = load_sft_rows(rows_file)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if sft.get("bf16") == "auto":  # distill's `bf16: auto`, resolved the same way for the baseline
        sft = {**sft, "bf16": resolve_bf16(cpu=not torch.cuda.is_available())}
    dtype = torch.bfloat16 if sft.get("bf16") else torch.float32
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(path, dtype=dtype),
        args=SFTConfig(output_dir=str(out), **sft, train_sampling_strategy="random"),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    meter = Meter(trainer)
    trainer.train()
    return meter.result(name)


def run_distill(rows_file: Path, recipe: dict, sft: dict, out: Path) -> dict:
    values = {**recipe, **sft, "data": str(rows_file), "output": str(out)}
    cfg = build(TrainConfig, values, source="bench", extra=sft_fields())
    prep = prepare(cfg)
    assert prep.trainer.args.gradient_checkpointing == sft.get("gradient_checkpointing", False)  # like with like
    meter = Meter(prep.trainer)
    prep.trainer.train()
    return meter.result("distill train")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="", help="kept.jsonl or a filter folder (default: synthetic traces)")
    ap.add_argument("--rows", type=int, default=128, help="rows trained on (one epoch)")
    ap.add_argument("--size", default="tiny", help="the recipe both trainers take their settings from")
    ap.add_argument("--max-steps", type=int, default=0, help="stop each run after this many steps (0: one epoch)")
    ap.add_argument("--repeats", type=int, default=1, help="alternating runs of each trainer")
    args = ap.parse_args()

    recipe_path = recipe_for(args.size)
    recipe = load_yaml(recipe_path)
    model = recipe.get("model", "embedded:student")
    sft = settings(recipe, args.max_steps)
    with tempfile.TemporaryDirectory() as tmp:
        rows_file = Path(tmp) / "kept.jsonl"
        if args.data:
            rows = [{"messages": r["prompt"] + r["completion"]} for r in load_sft_rows(args.data, args.rows)]
        else:
            rows = synthetic_rows(args.rows)
        write_jsonl(rows_file, rows)
        print(f"{len(rows)} rows, {recipe_path.name}: {json.dumps(sft)}", flush=True)
        base, ckpt = "plain SFTTrainer", "plain SFTTrainer, gradient checkpointing"
        results: dict[str, list[dict]] = {base: [], "distill train": [], ckpt: []}
        for i in range(args.repeats):
            results[base].append(run_baseline(rows_file, model, sft, Path(tmp) / f"base{i}", base))
            print(json.dumps(results[base][-1]), flush=True)
            results["distill train"].append(run_distill(rows_file, recipe, sft, Path(tmp) / f"distill{i}"))
            print(json.dumps(results["distill train"][-1]), flush=True)
            on = {**sft, "gradient_checkpointing": True}
            results[ckpt].append(run_baseline(rows_file, model, on, Path(tmp) / f"ckpt{i}", ckpt))
            print(json.dumps(results[ckpt][-1]), flush=True)

    med = {name: statistics.median(r["tokens_per_s"] for r in rs) for name, rs in results.items()}
    pad = {name: statistics.median(r["padding_share"] for r in rs) for name, rs in results.items()}
    summary = {
        "rows": len(rows),
        "gradient_checkpointing": bool(sft.get("gradient_checkpointing", False)),
        "baseline_tokens_per_s": med[base],
        "distill_tokens_per_s": med["distill train"],
        "ratio": round(med["distill train"] / med[base], 3),
        "baseline_padding_share": pad[base],
        "distill_padding_share": pad["distill train"],
        "checkpointing_tokens_per_s": med[ckpt],
        "checkpointing_ratio": round(med[base] / med[ckpt], 3),
    }
    print(json.dumps(summary, indent=1))
    print(
        f"length-grouped batches (distill train / plain SFTTrainer, same keys): {summary['ratio']:.2f}x trained "
        f"tokens/s; padding {summary['baseline_padding_share']:.0%} -> {summary['distill_padding_share']:.0%}\n"
        f"gradient checkpointing off / on (TRL's default), plain SFTTrainer: {summary['checkpointing_ratio']:.2f}x"
    )


if __name__ == "__main__":
    main()
