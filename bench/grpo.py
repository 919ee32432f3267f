"""GRPO judged on held-out problems: the model's pass@1 before and after `distill grpo`, same prompt and cap.

    .venv/bin/python bench/grpo.py                   # recipes/grpo/tiny-cpu.yaml, ~25 min on 2 cores
    .venv/bin/python bench/grpo.py --config recipes/grpo/tiny-cpu.yaml --run runs/bench-grpo

The mean reward GRPO logs is measured on its own training batches (prompts it is being trained on, with the
length and format terms mixed in). This bench asks the question a user has instead: does the trained model
solve more problems it never saw? It
  1. runs `distill grpo --config CONFIG` (skipped when <run>/grpo holds a finished run),
  2. evaluates the recipe's starting model and the GRPO output with one `distill eval --model A B` on the
     held-out split of the same problems (builtin `test`, the recipe's levels), with the recipe's prompt
     template and system prompt, its max_completion_length as the token cap, greedy,
and prints both pass@1 +- standard error and the paired difference on the same problems (95% bootstrap
interval, the problems each side wins, the exact sign test's p).
Run it alone: GRPO uses both cores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._stages import distill  # noqa: E402
from distill.common.config import load_yaml  # noqa: E402
from distill.common.errors import DistillError  # noqa: E402


def completion_cap(recipe: dict) -> int:
    """The recipe's max_completion_length (top level or under grpo:), TRL's default 256 when unset."""
    return int(recipe.get("max_completion_length") or (recipe.get("grpo") or {}).get("max_completion_length") or 256)


def held_out_eval_args(recipe: dict, trained: Path, out: Path, prompts: int) -> list[str]:
    """`distill eval` arguments that score the recipe's starting model and the GRPO output on the built-in
    test split at the recipe's levels, with its prompt template, system prompt and completion cap, greedy."""
    template = recipe.get("prompt_template") or ""
    return [
        "eval", "--model", str(recipe.get("model") or "embedded:teacher"), str(trained), "--tasks", "builtin",
        "--levels", *[str(x) for x in recipe.get("levels") or [1, 2]], "--num-prompts", str(prompts),
        "--max-tokens", str(completion_cap(recipe)), "--temperature", "0",
        "--system-prompt", str(recipe.get("system_prompt") or ""), "--output", str(out),
        *(["--prompt-template", template] if template else []),
    ]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="recipes/grpo/tiny-cpu.yaml", help="the GRPO recipe")
    ap.add_argument("--run", default="runs/bench-grpo", help="output folder (finished stages are skipped)")
    ap.add_argument("--eval-prompts", type=int, default=150, help="held-out problems")
    args = ap.parse_args()

    try:
        recipe = load_yaml(Path(args.config))
    except DistillError as e:
        raise SystemExit(f"[grpo] {e}") from None
    if recipe.get("dataset", "builtin") != "builtin":
        raise SystemExit(f"{args.config}: this bench evaluates on the built-in test split; the recipe trains on "
                         f"{recipe.get('dataset')!r}")  # fmt: skip
    run = Path(args.run)
    grpo_out = run / "grpo"
    rewards_file = grpo_out / "rewards.json"  # written while training with "running": true, then final
    if not rewards_file.is_file() or json.loads(rewards_file.read_text()).get("running"):
        distill("grpo", "grpo", "--config", args.config, "--output", str(grpo_out))
    evals = run / "eval"
    if not (evals / "comparison.json").is_file():
        distill("grpo", *held_out_eval_args(recipe, grpo_out, evals, args.eval_prompts))
    comparison = json.loads((evals / "comparison.json").read_text())
    before, after = comparison["models"]
    paired = comparison["paired"][0]
    rewards = json.loads(rewards_file.read_text())
    print()
    print(
        f"held-out (builtin test, levels {recipe.get('levels') or [1, 2]}, {before['n']} problems, "
        f"greedy, {completion_cap(recipe)} tokens):"
    )
    for name, s in (("before GRPO", before), ("after GRPO", after)):
        print(f"  {name:<12} pass@1 {s['pass@1']:.3f} ± {s['pass@1_stderr']:.3f} ({s['correct']}/{s['n']})")
    print(
        f"  paired: {paired['diff']:+.3f} [{paired['ci_low']:+.3f}, {paired['ci_high']:+.3f}], better on "
        f"{paired['b_better']}, worse on {paired['a_better']}, sign-test p = {paired['p_value']:.3g}"
    )
    first, last = rewards["first_10_mean"], rewards["last_10_mean"]
    print(
        f"  (training batches, for comparison: mean reward {first['reward']} over the first 10 steps -> "
        f"{last['reward']} over the last 10; accuracy reward {first.get('accuracy')} -> {last.get('accuracy')})"
    )


if __name__ == "__main__":
    main()
