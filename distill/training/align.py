"""Token alignment between a teacher's and a student's tokenizers, by the bytes of the text.

Logit distillation compares the teacher's and the student's next-token distributions position by
position. With one tokenizer (a Qwen teacher and a Qwen student) the positions and the vocabularies are
the same. With two, the same text is cut into different tokens, and this module finds what the two have
in common (the approach of cross-tokenizer distillation such as ULD and TRL's GOLD, done here on bytes):

* Positions: a student token and a teacher token that START AT THE SAME BYTE of the text (with the text
  before them equal) predict "the next token from here" in both models; those student positions get
  the teacher's distribution as a target. Elsewhere only cross-entropy applies.
* Vocabularies: a teacher token is mapped to the student token with exactly the same bytes, when the
  student's vocabulary has one (special tokens never map). The mass of unmapped teacher alternatives
  falls into the "rest" bucket of the top-K loss (distill.training.kd_losses).

Byte-level BPE tokenizers (GPT-2 style: Qwen, Llama 3, SmolLM, DeepSeek, Mistral's newer ones) spell every
token as bytes through a fixed byte->character table; other tokenizers fall back to decoding each token
on its own, which is exact for whole-character tokens.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np


@functools.lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte -> printable character table, inverted (character -> byte)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def control_ids(tokenizer: Any) -> set[int]:
    """Ids of the tokenizer's control tokens: its special tokens (BOS, EOS, padding, chat-turn markers such as
    <|im_end|>), which stand for no text. Added tokens that are text, such as the `<think>` and `</think>` of
    R1-family tokenizers (added with special=False), are not among them: they are spelled by their bytes."""
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    for i, token in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).items():
        if getattr(token, "special", True):
            ids.add(i)
    return ids


class TokenBytes:
    """Every token id of a tokenizer as bytes (None for control tokens), and the reverse map."""

    def __init__(self, tokenizer: Any) -> None:
        vocab = tokenizer.get_vocab()
        size = max(vocab.values()) + 1
        special = control_ids(tokenizer)
        added = {i: str(t) for i, t in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).items()}
        dec = _byte_decoder()
        byte_level = sum(1 for t in vocab if t.startswith("Ġ")) > 0.05 * len(vocab)
        self.pieces: list[bytes | None] = [None] * size
        for token, i in vocab.items():
            if i in special:
                continue
            if i in added:  # a text token added whole (<think>): its content is its text
                self.pieces[i] = added[i].encode("utf-8")
            elif byte_level and all(c in dec for c in token):
                self.pieces[i] = bytes(dec[c] for c in token)
            else:
                self.pieces[i] = tokenizer.decode([i]).encode("utf-8")
        self.ids: dict[bytes, int] = {}
        for i, piece in enumerate(self.pieces):
            if piece:
                self.ids.setdefault(piece, i)
        self.byte_level = byte_level

    def __len__(self) -> int:
        return len(self.pieces)


def vocab_map(teacher: TokenBytes, student: TokenBytes) -> np.ndarray:
    """int64 [teacher vocab]: the student id with the same bytes as each teacher id, else -1."""
    out = np.full(len(teacher), -1, dtype=np.int64)
    for i, piece in enumerate(teacher.pieces):
        if piece:
            out[i] = student.ids.get(piece, -1)
    return out


@dataclass
class Aligned:
    """Teacher targets placed on student positions. kd_ids/kd_logprobs: [S, K] (student ids, -1: none);
    valid: [S] bool, True where the student token starts where a teacher token does."""

    kd_ids: np.ndarray
    kd_logprobs: np.ndarray
    valid: np.ndarray

    @property
    def coverage(self) -> float:
        return float(self.valid.mean()) if len(self.valid) else 0.0


def _starts(pieces: list[bytes | None]) -> tuple[list[int], bytes]:
    """Byte offset where each token starts (-1 for special tokens, which have no bytes), and the text."""
    starts, pos = [], 0
    for p in pieces:
        starts.append(pos if p else -1)
        pos += len(p) if p else 0
    return starts, b"".join(p for p in pieces if p)


LEAD_IN = 64  # the longest text before the teacher's own (in bytes) that lead_in looks for


def lead_in(teacher_text: bytes, student_text: bytes) -> int:
    """Bytes of the student's text before the teacher's begins: 0 when both start alike, else the offset of the
    teacher's first bytes within the student's first LEAD_IN (a think opener such as `<think>\n` that the
    teacher's chat template had already put in its prompt)."""
    if not teacher_text or student_text[:8] == teacher_text[:8]:
        return 0
    at = student_text.find(teacher_text[:32], 1, LEAD_IN + 32)
    return at if 0 < at <= LEAD_IN else 0


def align(
    teacher_ids: np.ndarray,
    teacher_top_ids: np.ndarray,
    teacher_top_logprobs: np.ndarray,
    student_ids: list[int],
    teacher_bytes: TokenBytes,
    student_bytes: TokenBytes,
    mapping: np.ndarray | None,
) -> Aligned:
    """Place the teacher's top-K at each generated token onto the student's tokens of the same text.

    teacher_ids [T], teacher_top_ids / teacher_top_logprobs [T, K]: what `generate --logprobs K` stored.
    student_ids [S]: the student's tokens of the same completion (from its chat template; tokens after the
    text, such as the end-of-turn token, get no target). `mapping`: vocab_map(teacher, student), or None
    when both use one tokenizer (ids are kept as they are)."""
    k = teacher_top_ids.shape[1]
    s = len(student_ids)
    kd_ids = np.full((s, k), -1, dtype=np.int64)
    kd_lps = np.zeros((s, k), dtype=np.float32)
    valid = np.zeros(s, dtype=bool)
    t_starts, t_text = _starts([teacher_bytes.pieces[i] if 0 <= i < len(teacher_bytes) else None for i in teacher_ids])
    s_starts, s_text = _starts([student_bytes.pieces[i] if 0 <= i < len(student_bytes) else None for i in student_ids])
    # The teacher's text may start later than the student's: an R1-family chat template puts `<think>\n` in the
    # generation prompt, so the teacher generated what follows it while the trained completion holds it too.
    offset = lead_in(t_text, s_text)
    t_starts = [b + offset if b >= 0 else b for b in t_starts]
    t_text = s_text[:offset] + t_text
    common = 0  # the texts agree on their first `common` bytes; offsets beyond that mean different things
    limit = min(len(t_text), len(s_text))
    while common < limit and t_text[common] == s_text[common]:
        common += 1
    at = {b: i for i, b in enumerate(t_starts) if b >= 0}
    for j, b in enumerate(s_starts):
        if b < 0 or b >= common or b not in at:
            continue
        i = at[b]
        ids = teacher_top_ids[i].astype(np.int64)
        if mapping is not None:
            ok = ids >= 0
            ids = np.where(ok, mapping[np.clip(ids, 0, len(mapping) - 1)], -1)
        # keep the first occurrence of each student id (two teacher tokens cannot map to one student token
        # with equal bytes, but be safe): duplicates would double-count mass
        seen: set[int] = set()
        for c, tid in enumerate(ids.tolist()):
            if tid >= 0 and tid not in seen:
                seen.add(tid)
                kd_ids[j, c] = tid
                kd_lps[j, c] = teacher_top_logprobs[i, c]
        valid[j] = True
    return Aligned(kd_ids, kd_lps, valid)


def same_vocabulary(a: Any, b: Any) -> bool:
    """True when two tokenizers map every token to the same id (one tokenizer, possibly two copies)."""
    return a.get_vocab() == b.get_vocab()


def spans(teacher_pieces: list[bytes | None], student_pieces: list[bytes | None]) -> tuple[np.ndarray, np.ndarray, int]:
    """Group both token sequences of one text into the shortest spans that both cut at the same bytes.

    Returns (teacher_span [T], student_span [S], n): each token's span index (-1 for tokens outside any
    span: special tokens, and everything after the first byte where the two texts differ). Summing
    log-probabilities per span gives both models' log-probability of the same piece of text, which is
    what on-policy distillation compares when the tokenizers differ (one tokenizer: a span per token)."""
    t_starts, t_text = _starts(teacher_pieces)
    s_starts, s_text = _starts(student_pieces)
    common = 0
    limit = min(len(t_text), len(s_text))
    while common < limit and t_text[common] == s_text[common]:
        common += 1

    def ends(pieces: list[bytes | None], starts: list[int]) -> set[int]:
        return {b + len(p) for b, p in zip(starts, pieces, strict=True) if p and b + len(p) <= common}

    cuts = sorted({0} | (ends(teacher_pieces, t_starts) & ends(student_pieces, s_starts)))
    index = {b: i for i, b in enumerate(cuts)}  # a span starts at each cut but the last

    def assign(pieces: list[bytes | None], starts: list[int]) -> np.ndarray:
        out = np.full(len(pieces), -1, dtype=np.int64)
        span = -1
        for j, (b, p) in enumerate(zip(starts, pieces, strict=True)):
            if not p or b + len(p) > cuts[-1]:
                continue  # special token, or past the last common cut
            if b in index:
                span = index[b]
            out[j] = span
        return out

    n = len(cuts) - 1
    return assign(teacher_pieces, t_starts), assign(student_pieces, s_starts), n
