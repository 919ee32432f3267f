"""Student quality: does training on VERIFIED traces beat training on the same number of UNFILTERED ones?

    .venv/bin/python bench/quality.py                        # everything, from the teacher's server on (~1.5 h on 2 cores)
    .venv/bin/python bench/quality.py --from runs/demo       # reuse the demo's traces, filter, teacher eval (~45 min)

On the built-in problems with the embedded pair (teacher Qwen2.5-Coder-0.5B-Instruct, student
SmolLM2-135M-Instruct), the script
  1. generates traces with the teacher (or takes them from --from's gen/) and evaluates the teacher,
  2. filters them (`distill filter`): the K verified traces,
  3. draws K traces at random from ALL the teacher's traces, right or wrong (the unfiltered set),
  4. trains the tiny student on each set with the same recipe, epochs and seed,
  5. evaluates the teacher, the untrained student and both trained students on two held-out splits:
     `builtin` (new numbers in the train split's stories) and `builtin-unseen` (stories train never uses),
and prints pass@1 +- standard error of each, then each question pairwise on the same problems (verified vs
untrained, verified vs unfiltered, unfiltered vs untrained): the difference with its 95% paired bootstrap
interval, the problems each side wins and the sign test's p (McNemar's exact test for one greedy sample).
Every stage is a `distill` command writing into --run and is skipped when its output is there, so a killed
run continues where it stopped. The teacher's builtin pass@1 is taken from --from when given (it does not
depend on training); the three students are evaluated by one `distill eval --model ...` call per split,
which also writes eval-students-<split>/comparison.md.
Run it alone: training the student takes 8-11 GB and both cores.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._stages import decontam_skip  # noqa: E402
from bench._stages import distill as run_distill  # noqa: E402
from distill.common.records import read_jsonl, write_jsonl  # noqa: E402
from distill.evaluation.metrics import paired_difference  # noqa: E402

distill = functools.partial(run_distill, "quality")


def copy_stage(src: Path, dest: Path, marker: str) -> bool:
    """Take a finished stage from an earlier run (e.g. the demo's); False when it is not there."""
    if not (src / marker).is_file():
        return False
    shutil.copytree(src, dest, dirs_exist_ok=True)
    print(f"[quality] {dest.name}: taken from {src}", flush=True)
    return True


def unfiltered_sample(traces: Path, k: int, seed: int, dest: Path) -> int:
    """K rows drawn at random from every generated trace (verified or not, finished or cut off)."""
    rows = [r for r in read_jsonl(traces) if isinstance(r.get("messages"), list) and r.get("completion")]
    if len(rows) < k:
        raise SystemExit(f"{traces}: {len(rows)} traces, fewer than the {k} verified ones to match")
    picked = random.Random(seed).sample(rows, k)
    dest.mkdir(parents=True, exist_ok=True)
    write_jsonl(dest / "kept.jsonl", picked)
    return len(picked)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/quality", help="output folder (stages found there are skipped)")
    ap.add_argument("--from", dest="from_", default="", help="a demo run whose gen/filtered/eval-* to reuse")
    ap.add_argument("--prompts", type=int, default=160)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=1024)
    ap.add_argument("--eval-prompts", type=int, default=150)
    ap.add_argument("--epochs", type=float, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--port", type=int, default=8321)
    args = ap.parse_args()

    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    src = Path(args.from_) if args.from_ else None
    start = time.monotonic()
    common = ["--num-prompts", str(args.eval_prompts), "--max-tokens", str(args.max_tokens)]

    # 1. teacher traces and the teacher's pass@1
    have_gen = (run / "gen/summary.json").is_file() or (src and copy_stage(src / "gen", run / "gen", "summary.json"))
    have_teacher = (run / "eval-teacher/results.json").is_file() or (
        src and copy_stage(src / "eval-teacher", run / "eval-teacher", "results.json")
    )
    if not have_gen:
        distill(
            "generate", "--output", str(run / "gen"), "--num-prompts", str(args.prompts),
            "--num-samples", str(args.samples), "--max-tokens", str(args.max_tokens), "--seed", str(args.seed),
        )  # fmt: skip
    if not have_teacher:
        distill("eval", "--model", "embedded:teacher", "--output", str(run / "eval-teacher"), *common)

    # 2. verified traces
    if not (run / "filtered/report.json").is_file() and not (
        src and copy_stage(src / "filtered", run / "filtered", "report.json")
    ):
        distill("filter", str(run / "gen"), "--output", str(run / "filtered"), *decontam_skip())
    verified = sum(1 for _ in read_jsonl(run / "filtered/kept.jsonl"))

    # 3. the same number of unfiltered traces
    if not (run / "unfiltered/kept.jsonl").is_file():
        unfiltered_sample(run / "gen/traces.jsonl", verified, args.seed, run / "unfiltered")
    # How many of the unfiltered rows are right: the filter's verdicts, matched by (id, sample).
    kept_keys = {(r["id"], r["sample"]) for r in read_jsonl(run / "filtered/kept.jsonl")}
    unfiltered_rows = list(read_jsonl(run / "unfiltered/kept.jsonl"))
    unfiltered_verified = sum((r["id"], r["sample"]) in kept_keys for r in unfiltered_rows)

    # 4. train the student on each set, same recipe and seed
    for name, data in (("student-verified", "filtered"), ("student-unfiltered", "unfiltered")):
        if not (run / name / "train_metrics.json").is_file():
            distill(
                "train", "--size", "tiny", "--data", str(run / data), "--output", str(run / name),
                "--set", f"num_train_epochs={args.epochs}", "--set", f"seed={args.seed}",
            )  # fmt: skip

    # 5. pass@1 of the teacher and the three students on both held-out splits: `builtin` (new numbers in the
    # train stories) and `builtin-unseen` (stories train never used); the students by one `distill eval` each
    splits = ("builtin", "builtin-unseen")
    for task in splits:
        teacher_dir = run / ("eval-teacher" if task == "builtin" else f"eval-teacher-{task}")  # = folder() below
        if not (teacher_dir / "results.json").is_file():
            distill("eval", "--model", "embedded:teacher", "--tasks", task, "--output", str(teacher_dir), *common)
        students = run / f"eval-students-{task}"
        if not (students / "comparison.json").is_file():
            distill(
                "eval", "--tasks", task, "--model", "embedded:student", str(run / "student-verified"),
                str(run / "student-unfiltered"), "--output", str(students), *common,
            )  # fmt: skip

    load = lambda p: json.loads((run / p).read_text())  # noqa: E731

    def folder(name: str, task: str) -> str:
        if name == "teacher":
            return "eval-teacher" if task == "builtin" else f"eval-teacher-{task}"
        return f"eval-students-{task}/{name}"

    models = (
        ("teacher (Qwen2.5-Coder-0.5B-Instruct)", "teacher", ""),
        ("student untrained (SmolLM2-135M-Instruct)", "embedded-student", ""),
        ("student on verified traces", "student-verified", f"{verified} rows, all verified"),
        ("student on unfiltered traces", "student-unfiltered", f"{verified} rows, {unfiltered_verified} verified"),
    )
    results = {
        (label, task): load(f"{folder(name, task)}/results.json") for label, name, _ in models for task in splits
    }
    table = []
    for label, _, data in models:
        row = {"model": label, "training data": data}
        for task in splits:
            r = results[(label, task)]
            row[task] = {"pass@1": round(r["pass@1"], 3), "stderr": round(r["pass@1_stderr"], 3),
                         "correct": f"{r['correct']}/{r['samples']}"}  # fmt: skip
        table.append(row)
    # Pairwise on the same problems (metrics.paired_difference): the question is "is B better than A".
    pairs = (("student on verified traces", models[1][0]), ("student on verified traces", models[3][0]),
             ("student on unfiltered traces", models[1][0]))  # fmt: skip
    paired = []
    for b, a in pairs:
        for task in splits:
            pa, pb = results[(a, task)]["per_problem"], results[(b, task)]["per_problem"]
            ids = sorted(pa)
            d = paired_difference([pa[i] for i in ids], [pb[i] for i in ids])
            paired.append({"b": b, "a": a, "tasks": task, **{k: round(v, 4) for k, v in d.items()}})
    summary = {"table": table, "paired": paired, "minutes": round((time.monotonic() - start) / 60, 1)}
    for name in ("student-verified", "student-unfiltered"):
        m = load(f"{name}/train_metrics.json")
        summary[name] = {k: m[k] for k in ("train_rows", "steps", "seconds", "first_loss", "last_loss")}
    (run / "quality.json").write_text(json.dumps(summary, indent=1))
    print()
    print("| model | training data | builtin pass@1 | builtin-unseen pass@1 |")
    print("|---|---|---|---|")
    for row in table:
        cells = [f"{row[t]['pass@1']:.3f} ± {row[t]['stderr']:.3f} ({row[t]['correct']})" for t in splits]
        print(f"| {row['model']} | {row['training data']} | {' | '.join(cells)} |")
    print("\npaired on the same problems (B - A, 95% bootstrap interval, problems B/A wins, sign-test p):")
    for r in paired:
        print(
            f"  {r['tasks']:<15} {r['b']} - {r['a']}: {r['diff']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}], "
            f"{r['b_better']}/{r['a_better']}, p = {r['p_value']:.3g}"
        )


if __name__ == "__main__":
    main()
