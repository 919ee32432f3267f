"""The `distill` command: a registry of subcommands, each a config class and the stage function it calls.

    distill generate --output runs/gen        # -> distill.generation.generate.run(GenerateConfig)
    distill filter runs/gen --output runs/f   # -> distill.curation.filter.run(FilterConfig, input)

Parsers are built from the config dataclasses (light modules); a stage's module, with its heavy imports
(torch, transformers, trl), is imported only when its command runs, by name through `importlib`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from distill import __version__
from distill.common import config as config_mod
from distill.common.config import ServeConfig, load_yaml
from distill.common.errors import DistillError
from distill.curation.config import FilterConfig
from distill.evaluation.config import EvalConfig, StatsConfig
from distill.generation.config import GenerateConfig
from distill.training.config import GrpoConfig, PlanConfig, TrainConfig


def stage(target: str) -> Callable[..., Any]:
    """The function `module:name`, its module imported now (not before the command runs)."""
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


# --------------------------------------------------------------------------------------------------
# What each command does with its parsed arguments


def configured(cmd: Command, args: argparse.Namespace) -> Any:
    """The command's config: defaults < its base layer (train: the size's recipe) < --config < --set < flags."""
    base, source = {}, "recipe"
    if cmd.base:
        given = {**(load_yaml(args.config) if getattr(args, "config", None) else {})}
        given.update(config_mod.parse_overrides(getattr(args, "overrides", None) or []))
        given.update({k: v for k, v in vars(args).items() if k in ("size", "method")})
        base, source = stage(cmd.base)(given)
    extra = stage(cmd.extra)() if cmd.extra else None
    return config_mod.from_args(cmd.config, args, base=base, base_source=source, extra=extra)


def run_command(cmd: Command, args: argparse.Namespace, passthrough: list[str]) -> int:
    """Build the config and call the stage: `target(cfg[, args.<positional>])`; its int result is the exit status."""
    cfg = configured(cmd, args)
    if passthrough:  # only `distill serve` takes them (main checks): vLLM's own flags after `--`
        cfg.extra_args = [*cfg.extra_args, *passthrough]
    fn = stage(cmd.target)
    result = fn(cfg, *[getattr(args, p) for p, _ in cmd.positional])
    return result if isinstance(result, int) else 0


def run_push(args: argparse.Namespace) -> int:
    push = stage("distill.common.hub:push_dataset")
    url = push(args.folder, args.repo_id, private=args.private, revision=args.revision)
    print(f"[distill] pushed {args.folder} to {url}", flush=True)
    return 0


def push_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="a `distill generate` or `distill filter` output folder")
    p.add_argument("--repo-id", required=True, help="dataset repo on the Hub: NAME or OWNER/NAME")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--revision", default=None, help="branch to push to (default: main)")


def plan_arguments(p: argparse.ArgumentParser) -> None:
    """PlanConfig's flags, with `--json` as a plain switch."""
    config_mod.add_arguments(p, PlanConfig, skip=("json",))
    p.add_argument("--json", dest="json", action="store_true", default=argparse.SUPPRESS, help="print JSON")


# --------------------------------------------------------------------------------------------------
# The registry


@dataclass(frozen=True)
class Command:
    help: str
    config: type | None  # its flags come from this dataclass
    target: str = ""  # "module:function" called with the config (and the positionals)
    positional: tuple[tuple[str, dict], ...] = ()  # (name, add_argument kwargs) before the flags
    arguments: Callable[[argparse.ArgumentParser], None] | None = None  # instead of the config's flags
    description: str = ""
    base: str = ""  # "module:function" giving the layer under --config (train: the size's recipe)
    extra: str = ""  # "module:function" giving the pass-through keys (TRL's config fields)
    run: Callable[[argparse.Namespace], int] | None = None  # a command without a config (push)


COMMANDS: dict[str, Command] = {
    "serve": Command(
        "start vLLM's OpenAI-compatible server for a model", ServeConfig, "distill.common.server:serve_forever"
    ),
    "generate": Command("sample reasoning traces from a teacher", GenerateConfig, "distill.generation.generate:run"),
    "filter": Command(
        "keep only verified-correct traces",
        FilterConfig,
        "distill.curation.filter:run",
        positional=(
            (
                "input",
                {
                    "nargs": "+",
                    "help": "traces.jsonl or a `distill generate` output folder (with --merge true: "
                    "the output folders of the --shard runs)",
                },
            ),
        ),  # fmt: skip
    ),
    "train": Command(
        "train a student on kept traces (SFT, logit KD or on-policy)",
        TrainConfig,
        "distill.training.train:run",
        base="distill.training.config:recipe_layer",
        extra="distill.training.train:sft_fields",
    ),
    "eval": Command(
        "pass@1 of a model on a benchmark (eval/<name>.yaml)", EvalConfig, "distill.evaluation.evaluate:run"
    ),
    "grpo": Command(
        "reinforcement learning with verifiable rewards (TRL GRPO) on problems with known answers",
        GrpoConfig,
        "distill.training.grpo:run",
        extra="distill.training.grpo:grpo_fields",
    ),
    "stats": Command(
        "lengths, reflection words, accuracy by level, plots of traces or eval outputs",
        StatsConfig,
        "distill.evaluation.stats:run",
        positional=(
            (
                "inputs",
                {"nargs": "+", "help": "generate/filter/eval output folders or trace files (several: over steps)"},
            ),
        ),
    ),
    "plan": Command(
        "will a student size fit your GPUs? per-GPU memory, tokens/s, launcher, batch and accumulation",
        PlanConfig,
        "distill.training.plan:run",
        arguments=plan_arguments,
    ),
    "push": Command(
        "upload a generate or filter output folder to the Hugging Face Hub as a dataset, with a card",
        None,
        arguments=push_arguments,
        run=run_push,
        description="Upload a `distill generate` or `distill filter` output folder as a Hub dataset with a card "
        "(teacher, sampling, prompt template, counts, pass rates). Authenticate with `hf auth login` or HF_TOKEN.",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="distill",
        description="Distill reasoning from a teacher LLM into smaller students: serve, generate, filter, train, eval.",
    )
    p.add_argument("--version", action="version", version=f"distill {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        description = cmd.description or (cmd.config.__doc__ if cmd.config else cmd.help)
        s = sub.add_parser(name, help=cmd.help, description=description)
        for pos, kwargs in cmd.positional:
            s.add_argument(pos, **kwargs)
        if cmd.arguments:
            cmd.arguments(s)
        elif cmd.config:
            config_mod.add_arguments(s, cmd.config)
    return p


def split_passthrough(argv: list[str]) -> tuple[list[str], list[str]]:
    """`distill serve ... -- --vllm-flag value`: everything after `--` goes to vLLM unchanged."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def sigterm_as_interrupt(signum: int, frame: Any) -> None:  # noqa: ARG001
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv, passthrough = split_passthrough(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    if passthrough and args.command != "serve":
        print(f"distill {args.command}: error: only `distill serve` passes flags after `--` on", file=sys.stderr)
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # SIGTERM (kill, Slurm's time limit) unwinds like Ctrl-C: servers stopped, outputs closed cleanly.
    previous = signal.signal(signal.SIGTERM, sigterm_as_interrupt) if args.command != "serve" else None
    try:
        cmd = COMMANDS[args.command]
        return cmd.run(args) if cmd.run else run_command(cmd, args, passthrough)
    except DistillError as e:
        print(f"distill {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"distill {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
