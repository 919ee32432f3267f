"""Rule-based rewards for GRPO, built on the project's verifiers.

Each reward is a plain function with TRL's reward signature, ``f(prompts, completions, **kwargs) ->
list[float]``: TRL calls it once per batch with every completion of the batch, passes each dataset
column (here ``answer``) as a keyword list aligned with ``completions``, and also ``completion_ids``
(the sampled token ids, EOS included when the model stopped). Completions of a conversational dataset
arrive as ``[{"role": "assistant", "content": text}]``; plain strings are accepted too.

    accuracy      1.0 when the last \\boxed{} after </think> equals the gold answer (math-verify), else 0.0
    format        1.0 for the R1-Zero shape: each required tag block once, in order, then a \\boxed{}
    boxed_format  1.0 when the final part (after </think>, if any) holds exactly one \\boxed{}, else 0.0
    length        DAPO's soft overlong punishment: 0 up to max_len - buffer tokens, then linearly to -1
    repetition    minus the share of repeated 8-grams in the most repetitive stretch, in (-1, 0]

A recipe names them (``reward_funcs: [accuracy, boxed_format]``) with one weight each
(``reward_weights: [1.0, 0.2]``); `make_reward_funcs` binds each name's settings and returns the
callables. Accuracy never runs sympy in the trainer process: a batch goes through
`distill.verification.answers.verify_many`, whose worker processes are killed past `timeout` seconds per sample, so
one pathological answer (``\\boxed{9^{9^{9^{9}}}}``) costs a zero reward, not a hung training run.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from typing import Any

from distill.common.errors import DistillError
from distill.verification.answers import final_part, last_boxed, verify_many
from distill.verification.quality import repetition_score

RewardFunc = Callable[..., list[float]]

_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")


def completion_text(completion: Any) -> str:
    """The text of one completion: a string, or the content of a conversational message list."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(m.get("content") or "" for m in completion if isinstance(m, dict))
    if isinstance(completion, dict):
        return str(completion.get("content") or "")
    return str(completion)


# --------------------------------------------------------------------------------------------------
# The reward functions (TRL signature)


def accuracy_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    answer: Sequence[str] | None = None,
    *,
    timeout: float = 5.0,
    workers: int = 0,
    **kwargs: Any,
) -> list[float]:
    """Range {0.0, 1.0}: 1.0 when `verify_math(answer, completion)` says correct, else 0.0.

    The answer is read by math-verify from the text after the last </think> and must stand in a \\boxed{}
    (require_boxed; an unclosed <think> scores 0). The whole batch is verified in worker processes with a hard `timeout` per sample
    (`verify_many`); a timeout or a crashed worker scores 0. `answer` is the dataset's answer column."""
    del prompts, kwargs
    if answer is None:
        raise DistillError("the accuracy reward needs an 'answer' column in the prompts (set answer_column)")
    texts = [completion_text(c) for c in completions]
    verdicts = verify_many(
        [(str(a), t, None) for a, t in zip(answer, texts, strict=True)],
        timeout=timeout,
        workers=workers or None,
        require_boxed=True,
    )
    return [1.0 if v.correct else 0.0 for v in verdicts]


def format_reward(
    prompts: Sequence[Any], completions: Sequence[Any], *, tags: Sequence[str] = ("think",), **kwargs: Any
) -> list[float]:
    """Range {0.0, 1.0}: 1.0 for the R1-Zero shape, else 0.0.

    With tags [think]: ``<think> reasoning </think> answer with \\boxed{...}``. The rule: each tag's
    block ``<t>...</t>`` occurs exactly once with non-empty content; the blocks come in the given order
    with only whitespace before the first and between them; and the text after the first block holds a
    non-empty \\boxed{} (with tags [think, answer] that is inside or after the answer block). Text
    after the box (a closing sentence, units) is allowed."""
    del prompts, kwargs
    return [1.0 if _has_format(completion_text(c), tags) else 0.0 for c in completions]


def _has_format(text: str, tags: Sequence[str]) -> bool:
    pos = 0
    after_first = None
    for tag in tags:
        open_, close = f"<{tag}>", f"</{tag}>"
        if text.count(open_) != 1 or text.count(close) != 1:
            return False
        start, end = text.index(open_), text.index(close)
        if start < pos or end < start or text[pos:start].strip():
            return False
        if not text[start + len(open_) : end].strip():
            return False
        pos = end + len(close)
        if after_first is None:
            after_first = text[pos:]
    rest = text if after_first is None else after_first
    box = last_boxed(rest)
    return box is not None and bool(box.strip())


def boxed_format_reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """Range {0.0, 1.0}: 1.0 when the final part holds exactly one non-empty \\boxed{}, else 0.0.

    For models that write no think block: the final part is the whole text, or the text after the last
    </think> when there is one (an unclosed <think> scores 0). Two boxes score 0, so hedging between
    answers is not rewarded."""
    del prompts, kwargs
    out = []
    for c in completions:
        final = final_part(completion_text(c))
        ok = final is not None and len(_BOX_OPEN.findall(final)) == 1 and bool((last_boxed(final) or "").strip())
        out.append(1.0 if ok else 0.0)
    return out


def overlong_penalty(length: int, max_len: int, buffer: int) -> float:
    """DAPO's soft overlong punishment for a completion of `length` tokens, in [-1, 0].

    0 while length <= max_len - buffer; then (max_len - buffer - length) / buffer, falling linearly to
    -1 at length == max_len; -1 beyond max_len."""
    if max_len <= 0:
        raise DistillError(f"overlong penalty: max_len must be positive, got {max_len}")
    if not 0 < buffer <= max_len:
        raise DistillError(f"overlong penalty: buffer must lie in (0, max_len={max_len}], got {buffer}")
    start = max_len - buffer
    if length <= start:
        return 0.0
    if length > max_len:
        return -1.0
    return (start - length) / buffer


def length_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    completion_ids: Sequence[Sequence[int]] | None = None,
    *,
    max_len: int = 512,
    buffer: int = 128,
    **kwargs: Any,
) -> list[float]:
    """Range [-1.0, 0.0]: DAPO-style soft overlong punishment on the completion's token count.

    0 up to `max_len - buffer` tokens, then linear down to -1 at `max_len` (a completion cut off at the
    generation limit gets -1). Tokens come from `completion_ids` (TRL passes them, EOS included); without
    them the length is the number of whitespace-separated words, a rough stand-in."""
    del prompts, kwargs
    if completion_ids is not None:
        lengths = [len(ids) for ids in completion_ids]
    else:
        lengths = [len(completion_text(c).split()) for c in completions]
    return [overlong_penalty(n, max_len, buffer) for n in lengths]


def repetition_penalty(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """Range (-1.0, 0.0]: minus `quality.repetition_score` of the text.

    A sentence said over and over scores below -0.9, a three-line cycle about -0.8; varied reasoning stays
    near 0, as do texts shorter than nine tokens (no repeated 8-gram possible)."""
    del prompts, kwargs
    return [-repetition_score(completion_text(c)) for c in completions]


# --------------------------------------------------------------------------------------------------
# Registry

REWARDS: dict[str, RewardFunc] = {
    "accuracy": accuracy_reward,
    "format": format_reward,
    "boxed_format": boxed_format_reward,
    "length": length_reward,
    "repetition": repetition_penalty,
}


def make_reward_funcs(
    names: Sequence[str],
    *,
    timeout: float = 5.0,
    workers: int = 0,
    format_tags: Sequence[str] = ("think",),
    max_completion_length: int = 512,
    overlong_buffer: int = 0,
) -> list[RewardFunc]:
    """The reward callables for registry `names`, with their settings bound (functools.partial, whose
    wrapped function's name TRL logs: ``rewards/accuracy_reward/mean``). A function added to `REWARDS`
    under a new name is used as it is.

    overlong_buffer 0 means a fifth of max_completion_length (DAPO: 4096 of 20480)."""
    if not names:
        raise DistillError(f"reward_funcs: name at least one reward ({', '.join(REWARDS)})")
    unknown = [n for n in names if n not in REWARDS]
    if unknown:
        raise DistillError(f"reward_funcs: unknown reward {unknown[0]!r} (known: {', '.join(REWARDS)})")
    if len(set(names)) != len(names):
        raise DistillError(f"reward_funcs: a reward is listed twice in {list(names)}")
    if timeout <= 0:
        raise DistillError(f"verify_timeout must be > 0 seconds, got {timeout}")
    tags = [t.strip().strip("<>/") for t in format_tags if t.strip().strip("<>/")]
    if "format" in names and not tags:
        raise DistillError("format_tags: the format reward needs at least one tag (e.g. [think])")
    buffer = overlong_buffer or max(1, max_completion_length // 5)
    if "length" in names and not 0 < buffer <= max_completion_length:
        raise DistillError(
            f"overlong_buffer must lie in (0, max_completion_length={max_completion_length}], got {overlong_buffer}"
        )
    bound: dict[str, RewardFunc] = {
        "accuracy": functools.partial(accuracy_reward, timeout=timeout, workers=workers),
        "format": functools.partial(format_reward, tags=tuple(tags)),
        "boxed_format": boxed_format_reward,
        "length": functools.partial(length_reward, max_len=max_completion_length, buffer=buffer),
        "repetition": repetition_penalty,
    }
    return [bound.get(n, REWARDS[n]) for n in names]  # a reward registered elsewhere: called as it is
