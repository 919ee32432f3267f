"""Distillation on a real benchmark: GSM8K, teacher traces on train problems -> verified -> the student, judged on
all 1,319 test problems beside the teacher and the untrained student.

    .venv/bin/python bench/gsm8k.py                          # ~1 h on 2 cores
    .venv/bin/python bench/gsm8k.py --prompts 800 --samples 4 --run runs/gsm8k-big

GSM8K ships in data/gsm8k (MIT, see its README), so this runs offline. The script
  1. has the embedded teacher write --samples traces for each of the first --prompts GSM8K train problems
     (`distill generate`, the default step-by-step \\boxed{} prompt, temperature 0.6, 1,024 tokens),
  2. keeps the verified ones (`distill filter`; --max-per-prompt 1 keeps each problem's shortest, so the
     training budget goes to more distinct problems),
  3. trains the tiny student on them (`distill train --size tiny`, --epochs),
  4. evaluates the untrained and the trained student with one `distill eval --model A B`, then the teacher, on
     every test problem with eval/gsm8k.yaml's protocol (greedy, 1,024 tokens),
and prints pass@1 +- standard error of each and the paired difference of the two students on the same
problems (95% bootstrap interval, problems each side wins, exact sign test). Every stage is skipped when its
output is there, so a killed run continues where it stopped. Run it alone: it uses both cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._stages import Stages, decontam_skip  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GSM8K = ("--dataset", str(ROOT / "data/gsm8k/train.jsonl"), "--problem-column", "question",
         "--answer-column", "answer", "--answer-regex", r"####\s*(.+?)\s*$")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/gsm8k", help="output folder (stages found there are skipped)")
    ap.add_argument("--prompts", type=int, default=400, help="GSM8K train problems the teacher answers")
    ap.add_argument("--samples", type=int, default=2, help="teacher traces per problem")
    ap.add_argument("--max-per-prompt", type=int, default=1, help="verified traces kept per problem (0: all)")
    ap.add_argument("--epochs", type=float, default=1)
    ap.add_argument("--eval-prompts", type=int, default=0, help="test problems (0: all 1,319)")
    args = ap.parse_args()

    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    stage = Stages(run, "gsm8k")
    start = time.monotonic()
    stage(
        "generate", run / "gen/summary.json", "generate", *GSM8K, "--output", str(run / "gen"),
        "--num-prompts", str(args.prompts), "--num-samples", str(args.samples), "--max-tokens", "1024",
    )  # fmt: skip
    stage(
        "filter", run / "filtered/report.json", "filter", str(run / "gen"), "--output", str(run / "filtered"),
        "--max-per-prompt", str(args.max_per_prompt), *decontam_skip(),
    )  # fmt: skip
    stage(
        "train", run / "student/train_metrics.json", "train", "--size", "tiny", "--data", str(run / "filtered"),
        "--output", str(run / "student"), "--set", f"num_train_epochs={args.epochs}",
    )  # fmt: skip
    common = ("--tasks", "gsm8k", "--num-prompts", str(args.eval_prompts))
    stage(
        "eval-students", run / "eval-students/comparison.json", "eval", "--model", "embedded:student",
        str(run / "student"), *common, "--output", str(run / "eval-students"),
    )  # fmt: skip

    stage(
        "eval-teacher", run / "eval-teacher/results.json", "eval", "--model", "embedded:teacher", *common,
        "--output", str(run / "eval-teacher"),
    )  # fmt: skip
    teacher = json.loads((run / "eval-teacher/results.json").read_text())
    comparison = json.loads((run / "eval-students/comparison.json").read_text())
    before, after = comparison["models"]
    paired = comparison["paired"][0]
    report = json.loads((run / "filtered/report.json").read_text())
    metrics = json.loads((run / "student/train_metrics.json").read_text())
    summary = {
        "traces": report["total"], "kept": report["kept"], "train_steps": metrics.get("steps"),
        "pass@1": {name: {"value": round(s["pass@1"], 4), "stderr": round(s["pass@1_stderr"], 4),
                          "correct": s["correct"], "n": s["n"]}
                   for name, s in (("teacher", teacher), ("student untrained", before), ("student trained", after))},
        "paired_trained_minus_untrained": paired, "stage_seconds": stage.times,
        "minutes_this_call": round((time.monotonic() - start) / 60, 1),
    }  # fmt: skip
    (run / "gsm8k.json").write_text(json.dumps(summary, indent=1))
    print()
    print(f"GSM8K test ({teacher['n']} problems, greedy, 1,024 tokens); student trained on {report['kept']} "
          f"verified traces of {report['total']} ({args.prompts} train problems x {args.samples})")  # fmt: skip
    for name, s in (("teacher", teacher), ("student untrained", before), ("student trained", after)):
        print(f"  {name:<18} pass@1 {s['pass@1']:.4f} ± {s['pass@1_stderr']:.4f} ({s['correct']}/{s['n']})")
    print(
        f"  trained - untrained, paired: {paired['diff']:+.4f} [{paired['ci_low']:+.4f}, {paired['ci_high']:+.4f}], "
        f"better on {paired['b_better']}, worse on {paired['a_better']}, sign-test p = {paired['p_value']:.3g}"
    )


if __name__ == "__main__":
    main()
