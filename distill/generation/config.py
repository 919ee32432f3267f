"""`distill generate`'s configuration."""

from __future__ import annotations

from dataclasses import dataclass

from distill.common.config import DEFAULT_PROMPT_TEMPLATE, ServeConfig, build, option


@dataclass
class GenerateConfig:
    """Sample reasoning traces from a teacher behind an OpenAI-compatible server."""

    output: str = option("runs/traces.jsonl", "JSONL file the trace rows are appended to")
    teacher: str = option("embedded:teacher", "model spec served when no --server-url is given")
    server_url: list[str] = option(
        [],
        "running OpenAI-compatible server(s) (…/v1) to use instead of starting vLLM; with several, each "
        "request goes to the one with the fewest requests in flight",
    )
    served_model_name: str = option("", "model name to request from --server-url (default: the server's first model)")
    dataset: str = option("builtin", "prompts: 'builtin', a local .jsonl/.parquet file, or a Hugging Face dataset id")
    split: str = option("train", "split of the dataset (builtin: train|test)")
    problem_column: str = option("problem", "column holding the problem text")
    answer_column: str = option("answer", "column holding the gold answer ('' if none)")
    id_column: str = option("", "column holding a stable prompt id ('' to use the row index)")
    answer_regex: str = option(
        "",
        "regex whose group is the gold inside a longer answer text ('' = the column as it is); GSM8K's worked "
        "solutions: '####\\s*(.+?)\\s*$'",
    )
    num_prompts: int = option(64, "how many prompts to use (0: all; builtin: how many to generate)")
    levels: list[int] = option([1, 2, 3, 4, 5], "builtin only: difficulty levels to draw from")
    seed: int = option(0, "seed for built-in problems and per-sample sampling seeds")
    num_samples: int = option(4, "samples per prompt")
    temperature: float = option(0.6, "sampling temperature (R1 uses 0.6)")
    top_p: float = option(
        1.0,
        "nucleus sampling; 1.0 by default because on CPU vLLM sorts the whole vocabulary per token "
        "for top_p < 1 (≈3x slower for a 152k vocabulary); R1 uses 0.95 on GPUs",
    )
    max_tokens: int = option(1024, "max new tokens per sample")
    logprobs: int = option(
        0,
        "store the teacher's top-K log-probabilities of every generated token in each row, for "
        "`distill train --method logit-kd` (0: none; vLLM serves at most 20 unless started with --max-logprobs)",
    )
    prompt_template: str = option(DEFAULT_PROMPT_TEMPLATE, "user message; {problem} is replaced by the problem")
    system_prompt: str = option("", "system message ('' for none)")
    per_request_seed: bool = option(
        False,
        "send a stable per-sample seed with each request (reproducible sampling on GPU vLLM); off by "
        "default because vLLM's CPU build crashes its engine on seeded requests whose prefill is chunked",
    )
    concurrency: int = option(0, "requests in flight at once, over all servers (0: 64 per server)")
    request_timeout: float = option(600.0, "seconds before one attempt of a request is abandoned (then retried)")
    max_retries: int = option(4, "retries per sample after a 5xx, 429, timeout or dropped connection (with backoff)")
    retry_backoff: float = option(
        1.0, "seconds of the first retry's backoff; doubles per retry (up to 30 s), with jitter"
    )
    overwrite: bool = option(
        False, "start a new run in --output, deleting its earlier traces (needed when a sampling setting changed)"
    )
    push_to_hub: str = option("", "after the run, upload the output folder as a Hub dataset with this repo id")
    serve: ServeConfig = option(None, "server settings when generate starts vLLM itself")  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.serve is None or isinstance(self.serve, dict):
            self.serve = build(ServeConfig, self.serve or {}, source="serve")
        if isinstance(self.server_url, str):  # one URL given as text in Python code
            self.server_url = [self.server_url] if self.server_url else []
