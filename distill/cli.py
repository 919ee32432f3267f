"""The `distill` command: a thin door that parses a stage's config and calls the stage's run()."""

from __future__ import annotations

import argparse
import os
import sys

from distill import __version__
from distill import config as C
from distill.errors import DistillError


def _parser() -> argparse.ArgumentParser:
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

    t = sub.add_parser("train", help="fine-tune a student on kept traces (TRL SFT)", description=C.TrainConfig.__doc__)
    C.add_arguments(t, C.TrainConfig)

    e = sub.add_parser(
        "eval", help="pass@1 of a model on the built-in held-out split", description=C.EvalConfig.__doc__
    )
    C.add_arguments(e, C.EvalConfig)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        if args.command == "serve":
            from distill.server import serve_forever

            serve_forever(C.from_args(C.ServeConfig, args))
        elif args.command == "generate":
            from distill import generate

            generate.run(C.from_args(C.GenerateConfig, args))
        elif args.command == "filter":
            from distill import filter as filter_

            filter_.run(C.from_args(C.FilterConfig, args), args.input)
        elif args.command == "train":
            from distill import train

            size = getattr(args, "size", None)
            if size is None and args.config:
                size = C.load_yaml(args.config).get("size")
            recipe = train.recipe_for(size or C.TrainConfig.size)
            base = {**C.load_yaml(recipe), "size": size or C.TrainConfig.size}
            train.run(C.from_args(C.TrainConfig, args, base=base, base_source=str(recipe), extra=train.sft_fields()))
        elif args.command == "eval":
            from distill import evaluate

            evaluate.run(C.from_args(C.EvalConfig, args))
    except DistillError as e:
        print(f"distill {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"distill {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
