"""The teacher's per-token log-probabilities, as `distill generate --logprobs K` stores them in a trace row.

For logit distillation the student learns from the teacher's whole next-token distribution, not only
from the token it sampled. A vLLM server returns, for every generated token, its id and log-probability
and the top-K alternatives (`logprobs: true, top_logprobs: K, return_tokens_as_token_ids: true` on a chat
request). A row keeps them under `teacher_logprobs`, compactly:

    {"k": K, "tokens": T, "encoding": "zlib-b64:int32,float16,int32[T*K],float16[T*K]", "data": "<base64>"}

`data` is base64 of zlib of four little-endian arrays one after another: the sampled token ids (int32
[T]), their log-probabilities (float16 [T]), the top-K ids (int32 [T, K], -1 where the server listed
fewer), and their log-probabilities (float16 [T, K], ordered as the server listed them, most likely
first). float16 keeps log-probabilities to ~3 significant digits, ample for a KD target, and a 1,000
token trace with K = 20 takes ~90 kB of JSON instead of ~2 MB as lists of numbers.

Log-probabilities are the teacher's raw next-token distribution (vLLM's default `logprobs_mode`,
before temperature and top-p), natural log.
"""

from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from distill.common.errors import DistillError

ENCODING = "zlib-b64:int32,float16,int32[T*K],float16[T*K]"
TOKEN_ID_PREFIX = "token_id:"  # how vLLM writes a token when return_tokens_as_token_ids is set


@dataclass
class TokenLogprobs:
    """One completion's teacher log-probabilities. ids/logprobs: [T]; top_ids/top_logprobs: [T, K]."""

    ids: np.ndarray  # int32 [T]: the tokens the teacher generated
    logprobs: np.ndarray  # float32 [T]: their log-probabilities
    top_ids: np.ndarray  # int32 [T, K]: the K most likely tokens at each position (-1: none listed)
    top_logprobs: np.ndarray  # float32 [T, K]: their log-probabilities (-inf where top_ids is -1)

    @property
    def k(self) -> int:
        return int(self.top_ids.shape[1])

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def request_params(k: int) -> dict:
    """The chat-request fields that make a vLLM server return what `parse_chat_logprobs` reads."""
    if k < 1:
        raise DistillError(f"--logprobs must be at least 1 to request log-probabilities, got {k}")
    return {"logprobs": True, "top_logprobs": k, "return_tokens_as_token_ids": True}


def _token_id(token: Any, where: str) -> int:
    if isinstance(token, str) and token.startswith(TOKEN_ID_PREFIX):
        try:
            return int(token[len(TOKEN_ID_PREFIX) :])
        except ValueError:
            pass
    raise DistillError(
        f"{where}: the server returned the token {token!r} as text, not as 'token_id:N'; logit distillation "
        "needs token ids: use a vLLM server (it honours return_tokens_as_token_ids)"
    )


def parse_chat_logprobs(choice: dict, k: int, where: str = "response") -> TokenLogprobs:
    """A chat completion choice's `logprobs.content` -> TokenLogprobs with exactly K columns, each row's
    alternatives sorted most likely first."""
    content = (choice.get("logprobs") or {}).get("content")
    if not isinstance(content, list):
        raise DistillError(f"{where}: no logprobs in the response (does the server support top_logprobs?)")
    t = len(content)
    ids = np.empty(t, dtype=np.int32)
    lps = np.empty(t, dtype=np.float32)
    top_ids = np.full((t, k), -1, dtype=np.int32)
    top_lps = np.full((t, k), -np.inf, dtype=np.float32)
    for i, entry in enumerate(content):
        ids[i] = _token_id(entry["token"], where)
        lps[i] = float(entry["logprob"])
        # vLLM lists the sampled token first when it is not among the top K (K + 1 entries, unsorted):
        # keep the K most likely distinct tokens, most likely first (the sampled one is in ids/logprobs).
        alts: dict[int, float] = {}
        for alt in entry.get("top_logprobs") or []:
            alts.setdefault(_token_id(alt["token"], where), float(alt["logprob"]))
        for j, (tid, lp) in enumerate(sorted(alts.items(), key=lambda kv: -kv[1])[:k]):
            top_ids[i, j] = tid
            top_lps[i, j] = lp
    return TokenLogprobs(ids, lps, top_ids, top_lps)


def pack(tl: TokenLogprobs) -> dict:
    """TokenLogprobs -> the compact JSON-ready dict stored in a row."""
    t, k = tl.top_ids.shape
    # -inf (no alternative listed) is stored as float16 -inf; ids -1 mark those slots as well.
    buf = b"".join(
        (
            tl.ids.astype("<i4").tobytes(),
            tl.logprobs.astype("<f2").tobytes(),
            tl.top_ids.astype("<i4").tobytes(),
            tl.top_logprobs.astype("<f2").tobytes(),
        )
    )
    return {"k": k, "tokens": t, "encoding": ENCODING, "data": base64.b64encode(zlib.compress(buf, 6)).decode()}


def unpack(packed: dict, where: str = "row") -> TokenLogprobs:
    """The dict `pack` wrote -> TokenLogprobs (float32 log-probabilities)."""
    try:
        if packed.get("encoding") != ENCODING:
            raise ValueError(f"unknown encoding {packed.get('encoding')!r}")
        t, k = int(packed["tokens"]), int(packed["k"])
        buf = zlib.decompress(base64.b64decode(packed["data"]))
        sizes = (4 * t, 2 * t, 4 * t * k, 2 * t * k)
        if len(buf) != sum(sizes):
            raise ValueError(f"{len(buf)} bytes for {t} tokens x top-{k}, expected {sum(sizes)}")
        a, b, c = sizes[0], sizes[0] + sizes[1], sizes[0] + sizes[1] + sizes[2]
        return TokenLogprobs(
            np.frombuffer(buf[:a], dtype="<i4").astype(np.int32),
            np.frombuffer(buf[a:b], dtype="<f2").astype(np.float32),
            np.frombuffer(buf[b:c], dtype="<i4").astype(np.int32).reshape(t, k),
            np.frombuffer(buf[c:], dtype="<f2").astype(np.float32).reshape(t, k),
        )
    except (KeyError, TypeError, ValueError, zlib.error, AttributeError) as e:
        raise DistillError(f"{where}: 'teacher_logprobs' cannot be read ({e})") from None
