"""Training throughput: `distill train` against a plain TRL SFTTrainer, same model, data and settings, same run.

    .venv/bin/python bench/train.py                               # 128 synthetic traces, the embedded student
    .venv/bin/python bench/train.py --data runs/demo/filtered     # the demo's kept traces

Both trainers see the same rows for one epoch (so they train on exactly the same tokens) with the same
batch size, sequence length, precision, learning rate and seed. The baseline is what a hand-rolled
script does: prompt/completion rows into `SFTTrainer(model, SFTConfig(...))`, TRL's defaults otherwise.
`distill train` is the tiny recipe through `distill.train.prepare` (its defaults, chat template and
stop-token checks, length-grouped batches). Printed: trained (non-padding) tokens/s of each, the ratio
distill / baseline, and the share of padding tokens in the batches each one trained on.
The two runs alternate (baseline, distill, baseline, distill, ...) when --repeats > 1; medians are reported.
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

from distill.config import TrainConfig, build, load_yaml  # noqa: E402
from distill.generate import build_messages  # noqa: E402
from distill.models import resolve_model  # noqa: E402
from distill.records import write_jsonl  # noqa: E402
from distill.tasks import builtin_problems  # noqa: E402
from distill.train import load_sft_rows, prepare, recipe_for, sft_fields  # noqa: E402

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
        from transformers import TrainerCallback

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
    """The SFTConfig values both trainers get (the tiny recipe's, one epoch, nothing saved)."""
    keep = ("learning_rate", "lr_scheduler_type", "per_device_train_batch_size", "max_length", "bf16", "seed")
    values = {k: recipe[k] for k in keep if k in recipe}
    values.update(num_train_epochs=1, save_strategy="no", report_to="none", logging_steps=1, use_cpu=True)
    if steps_cap:
        values["max_steps"] = steps_cap
    return values


def run_baseline(rows_file: Path, model: str, sft: dict, out: Path) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    path = resolve_model(model)
    rows = load_sft_rows(rows_file)
    tokenizer = AutoTokenizer.from_pretrained(path)
    dtype = torch.bfloat16 if sft.get("bf16") else torch.float32
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(path, dtype=dtype),
        args=SFTConfig(output_dir=str(out), **sft),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    meter = Meter(trainer)
    trainer.train()
    return meter.result("plain SFTTrainer")


def run_distill(rows_file: Path, recipe: dict, sft: dict, out: Path) -> dict:
    values = {**recipe, **sft, "data": str(rows_file), "output": str(out)}
    cfg = build(TrainConfig, values, source="bench", extra=sft_fields())
    prep = prepare(cfg)
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
        results: dict[str, list[dict]] = {"plain SFTTrainer": [], "distill train": []}
        for i in range(args.repeats):
            results["plain SFTTrainer"].append(run_baseline(rows_file, model, sft, Path(tmp) / f"base{i}"))
            print(json.dumps(results["plain SFTTrainer"][-1]), flush=True)
            results["distill train"].append(run_distill(rows_file, recipe, sft, Path(tmp) / f"distill{i}"))
            print(json.dumps(results["distill train"][-1]), flush=True)

    med = {name: statistics.median(r["tokens_per_s"] for r in rs) for name, rs in results.items()}
    pad = {name: statistics.median(r["padding_share"] for r in rs) for name, rs in results.items()}
    summary = {
        "rows": len(rows),
        "baseline_tokens_per_s": med["plain SFTTrainer"],
        "distill_tokens_per_s": med["distill train"],
        "ratio": round(med["distill train"] / med["plain SFTTrainer"], 3),
        "baseline_padding_share": pad["plain SFTTrainer"],
        "distill_padding_share": pad["distill train"],
    }
    print(json.dumps(summary, indent=1))
    print(
        f"distill train / plain SFTTrainer: {summary['ratio']:.2f}x trained tokens/s; padding "
        f"{summary['baseline_padding_share']:.0%} -> {summary['distill_padding_share']:.0%} of batch tokens"
    )


if __name__ == "__main__":
    main()
