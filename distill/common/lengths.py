"""Token lengths a request needs against what a model or a running server holds: the longest chat prompt plus
max_tokens, checked before the first request (eval and generate share it), so a run never sends thousands of
requests that the server refuses (HTTP 400) or cuts (finish_reason length) for want of context."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoTokenizer

from distill.common.errors import DistillError
from distill.common.resources import resolve_chat_template
from distill.common.server import Server


def model_positions(path: str) -> int | None:
    """The positions a local model holds (config.json's max_position_embeddings, times a RoPE scaling factor);
    None when unknown (a Hub id, a config without it)."""
    conf = Path(path) / "config.json"
    if not conf.is_file():
        return None
    try:
        values = json.loads(conf.read_text())
    except ValueError:
        return None
    values = values.get("text_config") or values
    positions = values.get("max_position_embeddings")
    scaling = values.get("rope_scaling") or {}
    factor = scaling.get("factor") if isinstance(scaling, dict) and scaling.get("rope_type", scaling.get("type")) in (
        "yarn", "dynamic", "linear", "longrope") else None  # fmt: skip
    return int(positions * (factor or 1)) if isinstance(positions, int) else None


def prompt_lengths(path: str, prompts: list[list[dict]], chat_template: str) -> tuple[list[int], str]:
    """Tokens of each chat prompt with the generation prompt, by the model's tokenizer and chat template, and
    how they were counted; where no tokenizer can be loaded (a Hub id offline), its UTF-8 bytes plus 64 for the
    template, an upper bound."""
    try:
        tok = AutoTokenizer.from_pretrained(path)
        if chat_template:
            tok.chat_template = resolve_chat_template(chat_template).read_text(encoding="utf-8")
        lengths = []
        for messages in prompts:
            ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            lengths.append(len(ids["input_ids"] if hasattr(ids, "keys") else ids))
        return lengths, "tokenizer"
    except DistillError:
        raise
    except Exception:  # noqa: BLE001 - no tokenizer here: bound the length instead
        return [sum(len(m["content"].encode()) for m in msgs) + 64 for msgs in prompts], "bytes (upper bound)"


def check_length(spec: str, path: str, needed: int, prompt_max: int, max_tokens: int, server: Server | None) -> None:
    """Refuse before any request when the model (or, with `server`, the running server) cannot hold the
    longest prompt plus max_tokens."""
    limit = server.max_model_len if server is not None else model_positions(path)
    if not limit or needed <= limit:  # unknown (a server that does not report it, a Hub id): vLLM will say
        return
    if server is not None:
        what = f"the server at {server.url} holds {limit:,} (max_model_len)"
    else:
        what = f"{spec} holds {limit:,} positions (max_position_embeddings)"
    fix = f"pass --max-tokens {limit - prompt_max} or less" if limit > prompt_max else "the prompts alone are too long"
    if server is not None:
        fix = f"restart it with --max-model-len {needed} or more, or {fix}"
    raise DistillError(
        f"the protocol needs {needed:,} tokens (longest prompt {prompt_max:,} + max_tokens {max_tokens:,}), but {what}: {fix}"
    )
