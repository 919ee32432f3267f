"""The `distill` command: a thin door that parses a stage's config and calls the stage's run()."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from distill import __version__
from distill import config as C
from distill.errors import DistillError


def _parser() -> argparse.ArgumentParser:
    from distill.plan import PlanConfig
    from distill.plan import add_arguments as plan_arguments
    from distill.stats import StatsConfig  # a stage config with its own module (matplotlib loads only in run)

    p = argparse.ArgumentParser(
        prog="distill",
        description="Distill reasoning from a teacher LLM into smaller students: serve, generate, filter, train, eval.",
    )
    p.add_argument("--version", action="version", version=f"distill {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser(
        "serve", help="start vLLM's OpenAI-compatible server for a model", description=C.ServeConfig.__doc__
    )
    C.add_arguments(s, C.ServeConfig)

    g = sub.add_parser("generate", help="sample reasoning traces from a teacher", description=C.GenerateConfig.__doc__)
    C.add_arguments(g, C.GenerateConfig)

    f = sub.add_parser("filter", help="keep only verified-correct traces", description=C.FilterConfig.__doc__)
    f.add_argument("input", help="traces.jsonl or a `distill generate` output folder")
    C.add_arguments(f, C.FilterConfig)

    t = sub.add_parser(
        "train", help="train a student on kept traces (SFT, logit KD or on-policy)", description=C.TrainConfig.__doc__
    )
    C.add_arguments(t, C.TrainConfig)

    e = sub.add_parser(
        "eval", help="pass@1 of a model on a benchmark (eval/<name>.yaml)", description=C.EvalConfig.__doc__
    )
    C.add_arguments(e, C.EvalConfig)

    gr = sub.add_parser(
        "grpo",
        help="reinforcement learning with verifiable rewards (TRL GRPO) on problems with known answers",
        description=C.GrpoConfig.__doc__,
    )
    C.add_arguments(gr, C.GrpoConfig)

    st = sub.add_parser(
        "stats",
        help="lengths, reflection words, accuracy by level, plots of traces or eval outputs",
        description=StatsConfig.__doc__,
    )
    st.add_argument(
        "inputs", nargs="+", help="generate/filter/eval output folders or trace files (several: over steps)"
    )
    C.add_arguments(st, StatsConfig)

    pl = sub.add_parser(
        "plan",
        help="will a student size fit your GPUs? per-GPU memory, tokens/s, launcher, batch and accumulation",
        description=PlanConfig.__doc__,
    )
    plan_arguments(pl)

    h = sub.add_parser(
        "push",
        help="upload a generate or filter output folder to the Hugging Face Hub as a dataset, with a card",
        description="Upload a `distill generate` or `distill filter` output folder as a Hub dataset with a card "
        "(teacher, sampling, prompt template, counts, pass rates). Authenticate with `hf auth login` or HF_TOKEN.",
    )
    h.add_argument("folder", help="a `distill generate` or `distill filter` output folder")
    h.add_argument("--repo-id", required=True, help="dataset repo on the Hub: NAME or OWNER/NAME")
    h.add_argument("--private", action="store_true", help="create the repo as private")
    h.add_argument("--revision", default=None, help="branch to push to (default: main)")
    return p


def _split_passthrough(argv: list[str]) -> tuple[list[str], list[str]]:
    """`distill serve ... -- --vllm-flag value`: everything after `--` goes to vLLM unchanged."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def _sigterm_as_interrupt(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv, passthrough = _split_passthrough(list(sys.argv[1:] if argv is None else argv))
    args = _parser().parse_args(argv)
    if passthrough and args.command != "serve":
        print(f"distill {args.command}: error: only `distill serve` passes flags after `--` on", file=sys.stderr)
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # SIGTERM (kill, Slurm's time limit) unwinds like Ctrl-C: servers stopped, outputs closed cleanly.
    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt) if args.command != "serve" else None
    try:
        if args.command == "serve":
            from distill.server import serve_forever

            cfg = C.from_args(C.ServeConfig, args)
            cfg.extra_args = [*cfg.extra_args, *passthrough]
            serve_forever(cfg)
        elif args.command == "generate":
            from distill import generate

            generate.run(C.from_args(C.GenerateConfig, args))
        elif args.command == "filter":
            from distill import filter as filter_

            filter_.run(C.from_args(C.FilterConfig, args), args.input)
        elif args.command == "train":
            from distill import train

            size = getattr(args, "size", None)
            method = getattr(args, "method", None)
            if args.config:
                given = C.load_yaml(args.config)
                size, method = size or given.get("size"), method or given.get("method")
            recipe = train.recipe_for(size or C.TrainConfig.size, str(method or C.TrainConfig.method).lower())
            base = {**C.load_yaml(recipe), "size": size or C.TrainConfig.size}
            cfg = C.from_args(C.TrainConfig, args, base=base, base_source=str(recipe), extra=train.sft_fields())
            code = train.main(cfg, args)  # trains here, or under `accelerate launch` with --launcher
            if code:
                return code
        elif args.command == "grpo":
            from distill import grpo

            grpo.run(C.from_args(C.GrpoConfig, args, extra=grpo.grpo_fields()))
        elif args.command == "eval":
            from distill import evaluate

            evaluate.run(C.from_args(C.EvalConfig, args))
        elif args.command == "stats":
            from distill import stats

            stats.run(C.from_args(stats.StatsConfig, args), args.inputs)
        elif args.command == "plan":
            from distill import plan

            plan.run(C.from_args(plan.PlanConfig, args))
        elif args.command == "push":
            from distill.hub import push_dataset

            url = push_dataset(args.folder, args.repo_id, private=args.private, revision=args.revision)
            print(f"[distill] pushed {args.folder} to {url}", flush=True)
    except DistillError as e:
        print(f"distill {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"distill {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
