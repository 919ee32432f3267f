"""`distill filter`'s configuration."""

from __future__ import annotations

from dataclasses import dataclass

from distill.common.config import option


@dataclass
class FilterConfig:
    """Keep only verified-correct traces."""

    output: str = option("runs/filtered", "folder for kept.jsonl, rejected.jsonl and report.json")
    # verification
    timeout: float = option(5.0, "hard wall-clock bound per sample for math verification, seconds")
    require_boxed: bool = option(
        True,
        "math: the answer must stand in a \\boxed{} in the final part (R1-style traces box their answer; off: "
        "math-verify's own extraction, e.g. $$f(y) = y$$ or a last number)",
    )
    workers: int = option(0, "verification worker processes (0: one per core)")
    code_timeout: float = option(5.0, "code rows: CPU seconds per test run in the sandbox (wall bound: twice this)")
    code_memory_mb: int = option(1024, "code rows: memory limit of the sandboxed process, MiB")
    judge_url: list[str] = option([], "OpenAI-compatible server(s) of an LLM judge for answers no rule can check")
    judge_model: str = option("", "model name to request from --judge-url ('' = the server's first)")
    # format and quality
    require_think: bool = option(False, "reject traces without a <think> block (for R1-style teachers)")
    min_tokens: int = option(0, "reject traces with fewer completion tokens (0: no bound)")
    max_tokens: int = option(0, "reject traces with more completion tokens (0: no bound)")
    check_language: bool = option(True, "reject traces whose language (script) differs from the prompt's or mixes")
    max_foreign_share: float = option(0.1, "share of letters in another script that makes a trace 'mixed'")
    max_repetition: float = option(0.5, "reject looping text: share of repeated 8-grams in the worst window (1: off)")
    # safety
    safety: bool = option(True, "screen prompt and trace against the safety keyword list")
    safety_keywords: str = option("", "keyword list file ('' = data/safety_keywords.txt)")
    review_url: list[str] = option([], "OpenAI-compatible server(s) of an LLM that reviews keyword-flagged rows")
    review_model: str = option("", "model name to request from --review-url")
    # dedup and decontamination
    dedup: str = option("near", "duplicate prompts across ids: none | exact | near (MinHash)")
    dedup_threshold: float = option(0.8, "near-duplicate Jaccard similarity threshold")
    decontaminate: list[str] = option(
        ["all"],
        "benchmarks under eval/ whose problems must not appear in the data ('all': every one but builtin; 'none' "
        "or an empty list turns it off); one that cannot be loaded is an error unless named in --decontam-skip",
    )
    decontam_ngram: int = option(8, "n-gram length (words) for decontamination")
    decontam_skip: list[str] = option(
        [],
        "benchmarks left out of decontamination on purpose, e.g. Hub ones a machine without Hub access cannot load "
        "(any benchmark that cannot be loaded must be named here, or the filter stops before it starts); recorded "
        "in report.json and the dataset card",
    )
    # selection
    max_per_prompt: int = option(0, "keep at most this many verified samples per prompt (0: all)")
    selection: str = option("shortest", "which samples --max-per-prompt keeps: shortest | random")
    min_pass_rate: float = option(0.0, "keep only prompts whose pass rate is at least this (e.g. 0.1 for GRPO data)")
    max_pass_rate: float = option(1.0, "keep only prompts whose pass rate is at most this (e.g. 0.9 for GRPO data)")
    seed: int = option(0, "seed for random selection")
    max_row_mb: float = option(
        16.0, "rows with more text than this (MiB) are rejected as row_too_large, their text left out of rejected.jsonl"
    )
    shard: str = option(
        "",
        "I/N: filter only the prompts whose id hashes to I of N (every sample of a prompt in one shard), leaving "
        "dedup, the one step across prompts, to `distill filter --merge true SHARD_DIRS...` ('': all rows)",
    )
    merge: bool = option(
        False, "merge the output folders of `--shard` runs (given as the inputs): dedup across them, final outputs"
    )
    push_to_hub: str = option("", "after filtering, upload the output folder as a Hub dataset with this repo id")
