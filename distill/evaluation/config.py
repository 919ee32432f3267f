"""`distill eval`'s configuration."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from distill.common.config import ServeConfig, build, option
from distill.common.errors import DistillError
from distill.common.resources import DATA_DIR

REFLECTION_WORDS_FILE = DATA_DIR / "reflection_words.txt"
# The same list as data/reflection_words.txt, for an installed package that does not ship data/.
FALLBACK_REFLECTION_WORDS = (
    "wait",
    "mistake",
    "however",
    "but",
    "retry",
    "error",
    "verify",
    "wrong",
    "evaluate",
    "check",
)


@dataclass
class EvalConfig:
    """pass@1 of a model on a benchmark (eval/<name>.yaml), served with vLLM."""

    model: list[str] = option(
        ["embedded:student"],
        "model spec(s) to evaluate; several are evaluated one after another into <output>/<name>/ and "
        "compared in <output>/comparison.md",
    )
    tasks: list[str] = option(
        ["builtin"],
        "benchmark(s): names under eval/ (builtin, sample, aime24, math500, gpqa-diamond, livecodebench, gsm8k) or "
        "paths of definition YAMLs; several are evaluated one after another into <output>/<benchmark>/",
    )
    output: str = option("runs/eval", "folder for results.json and samples.jsonl")
    server_url: list[str] = option([], "running OpenAI-compatible server(s) to use instead of starting vLLM")
    served_model_name: str = option("", "model name to request from --server-url")
    num_prompts: int = option(
        150, "problems to evaluate (0: all of a file or Hub benchmark; builtin: how many to generate)"
    )
    levels: list[int] = option([1, 2, 3, 4, 5], "builtin only: difficulty levels")
    seed: int = option(0, "seed of the built-in problems (must match the one used for generate)")
    # Unset (None / ''): the benchmark definition's protocol, else the value in brackets.
    num_samples: int | None = option(
        None,
        "samples per problem (k): pass@1 is averaged over them, pass@k reported up to k (unset: the benchmark's, else 1)",
    )
    temperature: float | None = option(
        None, "sampling temperature (unset: the benchmark's, else 0 = greedy; R1's protocol: 0.6 with several samples)"
    )
    top_p: float | None = option(
        None, "nucleus sampling (unset: the benchmark's, else 1.0; R1 uses 0.95, on CPU keep 1.0, see generate)"
    )
    max_tokens: int | None = option(None, "max new tokens per answer (unset: the benchmark's, else 1024)")
    prompt_template: str = option(
        "",
        "user message; {problem} is replaced by the problem ('': the benchmark's, else step-by-step with a "
        "\\boxed{} answer, or a python code block for code benchmarks)",
    )
    system_prompt: str | None = option(
        None,
        "system message (unset: the one the model was trained with, read from a distill train/grpo output "
        "folder's distill_config.yaml, else none; '' for none)",
    )
    chat_template: str = option(
        "",
        "chat template the server applies ('': the model's own, which distill train saves with the student; else "
        "a .jinja file or a name under recipes/chat_templates/; only when eval starts the server)",
    )
    check_protocol: bool = option(
        False,
        "only check that the server accepts the protocol: one request per problem with the run's sampling and "
        "length, streamed and cut after its first token; nothing is scored",
    )
    concurrency: int = option(0, "requests in flight at once (0: 64 per server)")
    request_timeout: float = option(
        0.0,
        "seconds one request may take (0: the longer of 600 s and max_tokens / 20 tokens per second, so a 32k-token "
        "reasoning sample at full concurrency is not cut and retried from the start)",
    )
    timeout: float = option(5.0, "verification time bound per sample, seconds")
    require_boxed: bool = option(
        False,
        "math: count only answers in a \\boxed{} (default off: answers are read as math-verify and lighteval "
        "read them, boxed or not, so scores compare with published ones)",
    )
    serve: ServeConfig = option(None, "server settings when eval starts vLLM itself")  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.serve is None or isinstance(self.serve, dict):
            self.serve = build(ServeConfig, self.serve or {}, source="serve")
        if isinstance(self.server_url, str):  # one URL given as text in Python code
            self.server_url = [self.server_url] if self.server_url else []
        if isinstance(self.model, str):  # one model given as text in Python code
            self.model = [self.model]
        if isinstance(self.tasks, str):  # one benchmark given as text (Python code, a YAML string)
            self.tasks = [self.tasks]
        if not self.tasks:
            raise DistillError("eval: give at least one benchmark in --tasks")
        if not self.request_timeout >= 0 or self.request_timeout == float("inf"):
            raise DistillError(
                f"eval: key 'request_timeout' must be a finite number of seconds >= 0, got {self.request_timeout}"
            )
        if not self.model:
            raise DistillError("eval: give at least one --model")
        if self.chat_template and self.server_url:
            raise DistillError("eval: --chat-template is applied by the server eval starts; drop --server-url or it")


def load_reflection_words(path: str | Path | None = None) -> list[str]:
    """Reflection words, one per line (`#` starts a comment); data/reflection_words.txt by default."""
    p = Path(path) if path is not None else REFLECTION_WORDS_FILE
    if path is None and not p.is_file():
        return list(FALLBACK_REFLECTION_WORDS)
    if not p.is_file():
        raise DistillError(f"reflection word file {p} does not exist")
    words = []
    for raw in p.read_text(encoding="utf-8").splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if line:
            words.append(line)
    return words


@dataclass
class StatsConfig:
    """Length, reflection-word, accuracy and truncation statistics of traces or eval outputs, with plots."""

    output: str = option("runs/stats", "folder for stats.json, report.md and the PNG plots")
    tokenizer: str = option(
        "",
        "'' counts whitespace-separated words; a model folder or spec (embedded:student, a Hub id) counts its "
        "tokens (a row's completion_tokens is used as the exact total; only the answer part is tokenized)",
    )
    reflection_words: list[str] = option(
        load_reflection_words(),
        "words counted per 1k tokens (whole words, case-insensitive); default from "
        "data/reflection_words.txt, the DeepSeek-R1 paper's list",
    )
    steps: list[int] = option(
        [],
        "training step of each input, in order, for plots over training (default: a 'step' key in results.json "
        "or a checkpoint-N folder name)",
    )
    pass_k: list[int] = option(
        [1, 2, 4, 8],
        "k values of pass@k over each prompt's verified samples (a k above the fewest samples of any prompt "
        "is skipped)",
    )

    def __post_init__(self) -> None:
        for word in self.reflection_words:
            if not re.search(r"\w", word):
                raise DistillError(f"stats: reflection word {word!r} has no letters or digits")
        for k in self.pass_k:
            if k < 1:
                raise DistillError(f"stats: key 'pass_k' values must be at least 1, got {k}")
