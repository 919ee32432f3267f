"""Loss functions for distilling a teacher's token distributions into a student (pure torch).

Two ways to use a teacher beyond its sampled text:

Logit KD (off-policy). The teacher wrote the traces and, for every position, its top-K alternatives
with their log-probabilities (natural log, as a vLLM server returns them with ``top_logprobs=K``).
The student reads the same tokens and is pulled towards the teacher's distribution at each position.
Only K of the V probabilities are known, so both distributions are compared on K+1 buckets: the K
listed tokens and one "rest" bucket holding all the other mass (the teacher's ``1 - sum q_k``, the
student's ``1 - sum p_k``). Forgetting the rest bucket would let the student put mass anywhere off
the list for free; with it, the student learns how confident the teacher was as well as its ranking.

    topk_forward_kl       KL(teacher || student) on the K+1 buckets: mode-covering, the usual KD loss
    topk_generalized_jsd  the generalized Jensen-Shannon divergence of the GKD paper (Agarwal et al.
                          2024) on the same buckets; beta=0 is forward KL, beta=1 reverse KL
    mixed_kd_loss         alpha * KD + (1 - alpha) * cross-entropy on the trace tokens
    chunked_kd_ce_loss    the mixed loss from the student's last hidden states and its LM head, chunk by
                          chunk over the positions: never a full [tokens, vocab] tensor of logits

On-policy distillation. The student samples its own completions; the teacher scores each sampled
token (one prefill pass returns log q(x_t)); the student minimizes the reverse KL(student || teacher)
estimated from its own samples, which corrects the mistakes the student actually makes instead of
the ones the teacher's traces never reach.

    gather_token_logprobs    the student's log p(x_t) of the sampled tokens, from its logits
    sampled_reverse_kl_loss  a policy-gradient loss whose gradient is that of the sampled reverse KL

All reductions are means over the positions (tokens) a mask includes; a mask with nothing included
gives 0.0 with a gradient path (zero gradients), never NaN. Student computations run in float32, or
float64 when the student's inputs are float64 (for gradcheck); bf16/fp16 inputs are upcast.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

__all__ = [
    "CHUNK_LOGIT_BYTES",
    "chunked_kd_ce_loss",
    "chunked_token_logprobs",
    "gather_token_logprobs",
    "kd_chunk_rows",
    "mixed_kd_loss",
    "sampled_reverse_kl_loss",
    "topk_forward_kl",
    "topk_generalized_jsd",
]

# Floor on the student's rest-bucket probability: when the listed tokens hold (up to rounding) all of
# the student's mass, 1 - sum p_k is 0 or slightly negative and its log would be -inf/NaN.
_P_REST_FLOOR = 1e-12
# Floor on the teacher's probabilities inside the reverse KL (beta == 1): a bucket the teacher gives
# 0 (an explicit -inf log-probability, or an empty rest bucket) would make KL(p || q) infinite.
_Q_FLOOR = 1e-12
_LN2 = math.log(2.0)
# chunked_kd_ce_loss: one chunk's float32 logits (rows x vocab x 4 B) stay within this; the chunk's whole
# working set (bf16 and fp32 logits, log-softmax, their gradients) is a few times it.
CHUNK_LOGIT_BYTES = 256 * 2**20


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half/bfloat16/float32 inputs, float64 for float64 inputs."""
    return torch.promote_types(dtype, torch.float32)


def _weights(mask: torch.Tensor | None, shape: torch.Size, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The mask as float weights of `shape` (all ones for None); raises ValueError on a shape mismatch."""
    if mask is None:
        return torch.ones(shape, device=device, dtype=dtype)
    if mask.shape != shape:
        raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {tuple(shape)}")
    return mask.to(device=device, dtype=dtype)


def _masked_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum(w * v) / sum(w) over the entries with w != 0; 0.0 (still attached to the graph) when none.

    Excluded entries are replaced by 0 after the product, so a NaN there reaches neither the value nor
    (through `torch.where`) any gradient. No host sync: an empty mask divides 0 by 1."""
    included = weights != 0
    total = torch.where(included, values * weights, torch.zeros_like(values)).sum()
    denom = weights.sum()
    return total / torch.where(denom > 0, denom, torch.ones_like(denom))


def _log1mexp(x: torch.Tensor, floor: float) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, stable both near 0 (expm1) and far below (log1p), clamped so the
    argument of the log is at least `floor` (x >= 0 by rounding gives log(floor), not -inf/NaN).

    Each branch gets an input it is finite on, so the branch `torch.where` discards never produces a
    NaN gradient."""
    near = torch.log((-torch.expm1(x)).clamp(min=floor))
    far = torch.log1p(-torch.exp(x.clamp(max=-_LN2)))
    return torch.where(x > -_LN2, near, far)


def _check_listed_ids(ids_or_pad: torch.Tensor, vocab: int) -> None:
    """ValueError for a listed id (>= 0) >= vocab or listed twice in a row; -1 marks "not listed".
    Two host syncs."""
    if ids_or_pad.numel():
        if int(ids_or_pad.max()) >= vocab:
            raise ValueError(f"teacher_ids holds an id >= the student's vocabulary size {vocab}")
        ordered = ids_or_pad.sort(dim=-1).values
        if bool(((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)).any()):
            raise ValueError("teacher_ids has a duplicate id within a row")


def _topk_buckets(
    student_logits: torch.Tensor,
    teacher_ids: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    mask: torch.Tensor | None,
    check: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Student and teacher distributions on the K+1 buckets (K listed tokens, then the rest).
    `check=False` skips the id checks (the caller made them once for all rows).

    Returns, all [N, K+1] except the last:
      logp     float, the student's log-probability per bucket (finite everywhere, garbage where absent)
      present  bool, whether the bucket exists: listed ids >= 0 of included rows, and the rest bucket
      q        float, the teacher's probability per bucket (0 where absent; renormalized so the listed
               ones sum to at most 1)
      logq     float, log q (-inf where q == 0)
      weights  [N] float, the mask as weights
    """
    if student_logits.dim() != 2:
        raise ValueError(f"student_logits must be [N, V], got shape {tuple(student_logits.shape)}")
    if teacher_ids.dim() != 2 or teacher_ids.shape != teacher_logprobs.shape:
        raise ValueError(
            f"teacher_ids and teacher_logprobs must both be [N, K], got {tuple(teacher_ids.shape)} "
            f"and {tuple(teacher_logprobs.shape)}"
        )
    n, v = student_logits.shape
    if teacher_ids.shape[0] != n:
        raise ValueError(f"teacher_ids has {teacher_ids.shape[0]} rows, student_logits {n}")
    if teacher_ids.dtype.is_floating_point or teacher_ids.dtype == torch.bool:
        raise ValueError(f"teacher_ids must be an integer tensor, got {teacher_ids.dtype}")
    dtype = _compute_dtype(student_logits.dtype)
    device = student_logits.device
    weights = _weights(mask, torch.Size([n]), device, dtype)

    ids = teacher_ids.to(device=device, dtype=torch.long)
    # Rows the mask leaves out are ignored entirely (their ids and log-probs may be padding garbage).
    listed = (ids >= 0) & (weights != 0)[:, None]
    if check:
        _check_listed_ids(torch.where(listed, ids, torch.full_like(ids, -1)), v)
    safe_ids = torch.where(listed, ids, torch.zeros_like(ids))

    # Student: log p at the listed ids, and log p_rest = log(1 - sum p_k) from their logsumexp.
    logits = student_logits.to(dtype)
    logp_listed = logits.gather(-1, safe_ids) - torch.logsumexp(logits, dim=-1, keepdim=True)
    fill = torch.finfo(dtype).min  # finite: exp() of it is 0, and no -inf reaches a backward pass
    log_mass = torch.logsumexp(torch.where(listed, logp_listed, torch.full_like(logp_listed, fill)), dim=-1)
    logp_rest = _log1mexp(log_mass, _P_REST_FLOOR)

    # Teacher: q_k = exp(lp_k) on the listed ids, scaled down when rounding made them sum above 1.
    lp = teacher_logprobs.detach().to(device=device, dtype=dtype)
    lp = torch.where(listed, lp, torch.full_like(lp, -math.inf))
    q_sum = torch.exp(lp).sum(dim=-1, keepdim=True)
    lp = lp - torch.log(q_sum.clamp(min=1.0))
    q_listed = torch.exp(lp)
    q_rest = (1.0 - q_listed.sum(dim=-1)).clamp(min=0.0)

    logp = torch.cat([logp_listed, logp_rest[:, None]], dim=-1)
    present = torch.cat([listed, torch.ones_like(listed[:, :1])], dim=-1)
    q = torch.cat([q_listed, q_rest[:, None]], dim=-1)
    logq = torch.log(q)
    return logp, present, q, logq, weights


def _forward_kl_rows(logp: torch.Tensor, q: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """[N] sum over buckets with q > 0 of q (log q - log p)."""
    has_q = q > 0
    logq_safe = torch.where(has_q, logq, torch.zeros_like(logq))
    return torch.where(has_q, q * (logq_safe - logp), torch.zeros_like(q)).sum(dim=-1)


def topk_forward_kl(
    student_logits: torch.Tensor,
    teacher_ids: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Forward KL(teacher || student) on the teacher's top-K tokens plus a "rest" bucket, averaged.

    Args:
      student_logits: [N, V] float (any float dtype; computed in float32, float64 kept), the student's
        logits at N positions (flatten batch and time first). Gradients flow into it.
      teacher_ids: [N, K] integer (long), the teacher's listed token ids per position; -1 means "no
        alternative here": the entry is ignored and its mass stays in the rest bucket. A duplicate id
        >= 0 within a row (of an included position) raises ValueError, as does an id >= V.
      teacher_logprobs: [N, K] float (any float dtype), the teacher's natural-log probabilities of
        those ids; entries whose id is -1 are ignored whatever they hold (NaN included). Detached.
      mask: [N] bool or float, the positions to include (float values act as weights: the result is
        sum(w * kl) / sum(w)); None includes all. Excluded positions are ignored entirely.

    Per position, with q_k = exp(lp_k) (scaled so the listed ones sum to at most 1, which absorbs
    float16 rounding) and q_rest = max(0, 1 - sum q_k), and the student's p_k = softmax(logits)[id_k],
    p_rest = 1 - sum p_k (in log space, floored at 1e-12), the loss is
    sum over the buckets with q > 0 of q (log q - log p).

    Returns: [] float32 (float64 for float64 logits), the mean over included positions; 0.0 with a
    gradient path when none is included.
    """
    logp, _present, q, logq, weights = _topk_buckets(student_logits, teacher_ids, teacher_logprobs, mask)
    return _masked_mean(_forward_kl_rows(logp, q, logq), weights)


def topk_generalized_jsd(
    student_logits: torch.Tensor,
    teacher_ids: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    beta: float = 0.5,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Generalized Jensen-Shannon divergence (GKD, Agarwal et al. 2024) on the K+1 buckets, averaged.

    Args: as `topk_forward_kl` (student_logits [N, V] float, teacher_ids [N, K] long with -1 for
    absent, teacher_logprobs [N, K] float natural logs, mask [N] bool/float or None), plus
      beta: float in [0, 1] (else ValueError), the teacher's weight in the mixture.

    With q the teacher's and p the student's bucket distributions and M = beta q + (1 - beta) p:
      0 < beta < 1:  JSD_beta = beta KL(q || M) + (1 - beta) KL(p || M)  (>= 0, 0 iff p == q; small
                     beta behaves like beta * forward KL, beta near 1 like (1 - beta) * reverse KL)
      beta == 0:     forward KL(q || p), exactly `topk_forward_kl` (not the beta -> 0 limit, which is 0)
      beta == 1:     reverse KL(p || q) = sum over buckets of p (log p - log q), where log q is floored
                     at log(1e-12): a bucket the teacher gives 0 (a -inf log-probability, or an empty
                     rest bucket) while the student does not would make it infinite; with the floor it
                     costs p * (log p + 27.6).

    Returns: [] float32 (float64 for float64 logits), the mean over included positions; 0.0 with a
    gradient path when none is included.
    """
    beta = float(beta)
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    logp, present, q, logq, weights = _topk_buckets(student_logits, teacher_ids, teacher_logprobs, mask)
    zeros = torch.zeros_like(q)
    p = torch.where(present, torch.exp(logp), zeros)
    if beta == 0.0:
        rows = _forward_kl_rows(logp, q, logq)
    elif beta == 1.0:
        logq_floored = logq.clamp(min=math.log(_Q_FLOOR))
        rows = torch.where(present, p * (logp - logq_floored), zeros).sum(dim=-1)
    else:
        # log M; absent buckets have q == 0 and p == 0 and are skipped below.
        log_m = torch.logaddexp(logq + math.log(beta), logp + math.log1p(-beta))
        has_q = q > 0
        logq_safe = torch.where(has_q, logq, zeros)
        kl_q = torch.where(has_q, q * (logq_safe - log_m), zeros).sum(dim=-1)
        kl_p = torch.where(present, p * (logp - log_m), zeros).sum(dim=-1)
        rows = beta * kl_q + (1.0 - beta) * kl_p
    return _masked_mean(rows, weights)


def sampled_reverse_kl_loss(
    student_logprobs: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """On-policy distillation: a loss whose gradient is the sampled estimate of grad KL(student || teacher).

    The student sampled the tokens x_t; both models scored them.

    Args:
      student_logprobs: [B, T] float, the student's log p(x_t | x_<t) WITH grad (see
        `gather_token_logprobs`); computed in float32 (float64 kept).
      teacher_logprobs: [B, T] float, the teacher's log q(x_t | x_<t); detached here.
      mask: [B, T] bool or float, the sampled tokens to include (prompt and padding excluded; float
        values act as weights); None includes all. Excluded entries may hold anything, NaN included.

    Per token, k_t = log p(x_t) - log q(x_t) is an unbiased one-sample estimate of the reverse KL.
    Since grad E_{x~p}[log p(x) - log q(x)] = E_{x~p}[(log p(x) - log q(x)) grad log p(x)] (the term
    E[grad log p] is 0), the loss is the policy-gradient form

        loss = mean over included tokens of stopgrad(k_t) * log p(x_t)

    i.e. REINFORCE with the per-token advantage -k_t (reward log q - log p, no baseline).

    The VALUE of the loss is not the KL, only its gradient is the KL's (sampled) gradient; log and
    monitor the KL from the metrics.

    Returns: (loss, metrics)
      loss: [] float32 (float64 for float64 inputs); 0.0 with a gradient path when nothing is included.
      metrics: {"reverse_kl": float, mean k_t over included tokens (0.0 when none), "tokens": float,
        the number of included tokens (the sum of the weights for a float mask)}.
    """
    if student_logprobs.shape != teacher_logprobs.shape:
        raise ValueError(
            f"student_logprobs {tuple(student_logprobs.shape)} and teacher_logprobs "
            f"{tuple(teacher_logprobs.shape)} must have the same shape"
        )
    dtype = _compute_dtype(student_logprobs.dtype)
    s = student_logprobs.to(dtype)
    t = teacher_logprobs.detach().to(device=s.device, dtype=dtype)
    weights = _weights(mask, s.shape, s.device, dtype)
    included = weights != 0
    k = torch.where(included, s.detach() - t, torch.zeros_like(t))
    loss = _masked_mean(k * s, weights)
    tokens = float(weights.sum())
    reverse_kl = float(_masked_mean(k, weights))
    return loss, {"reverse_kl": reverse_kl, "tokens": tokens}


def mixed_kd_loss(kd_loss: torch.Tensor, ce_loss: torch.Tensor, alpha: float) -> torch.Tensor:
    """alpha * kd_loss + (1 - alpha) * ce_loss.

    Args:
      kd_loss: [] float, a distillation loss (e.g. `topk_forward_kl`).
      ce_loss: [] float, the cross-entropy of the student on the trace tokens.
      alpha: float in [0, 1] (else ValueError): 1 is pure distillation, 0 plain supervised fine-tuning.

    Returns: [] float, with the dtype torch's type promotion gives the two losses.
    """
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return alpha * kd_loss + (1.0 - alpha) * ce_loss


def kd_chunk_rows(vocab: int, budget: int = CHUNK_LOGIT_BYTES) -> int:
    """Positions per chunk in `chunked_kd_ce_loss` for a vocabulary of `vocab` tokens: as many as keep one
    chunk's float32 logits (rows x vocab x 4 B) within `budget` bytes, rounded down to a multiple of 64
    when there are 64 or more, and at least 1. With the default 256 MiB: 384 for Qwen2.5's 151,936 and
    152,064, 512 for Llama 3's 128,256, 1,344 for SmolLM2's 49,152."""
    if vocab < 1 or budget < 1:
        raise ValueError(f"vocab and budget must be at least 1, got {vocab} and {budget}")
    rows = max(1, budget // (4 * vocab))
    return rows // 64 * 64 if rows >= 64 else rows


def _chunk_sums(
    lm_head: Callable[[torch.Tensor], torch.Tensor],
    hidden: torch.Tensor,
    targets: torch.Tensor,
    ids: torch.Tensor,
    logprobs: torch.Tensor,
    picked: torch.Tensor,
    check: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk of `chunked_kd_ce_loss`: hidden [n, H] -> logits [n, V] (float32, float64 kept), then the
    SUM over its n positions of the cross-entropy of `targets` [n] and the SUM of the top-K forward KL over
    the positions `picked` [n] bool (ids, logprobs [n, K]). Both [] tensors."""
    logits = lm_head(hidden)
    logits = logits.to(_compute_dtype(logits.dtype))
    ce = F.cross_entropy(logits, targets, reduction="sum")
    logp, _present, q, logq, weights = _topk_buckets(logits, ids, logprobs, picked, check=check)
    rows = _forward_kl_rows(logp, q, logq)
    kd = torch.where(weights != 0, rows * weights, torch.zeros_like(rows)).sum()
    return ce, kd


def chunked_kd_ce_loss(
    hidden: torch.Tensor,
    lm_head: Callable[[torch.Tensor], torch.Tensor],
    labels: torch.Tensor,
    kd_ids: torch.Tensor,
    kd_logprobs: torch.Tensor,
    kd_valid: torch.Tensor,
    kd_alpha: float,
    chunk: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logit distillation's loss, `mixed_kd_loss(kd, ce, kd_alpha)`, from the student's last hidden states,
    computed over chunks of positions so that no [tokens, vocab] tensor of logits ever exists.

    The value and the gradients are those of the plain computation on the full logits
    (`logits = lm_head(hidden)`, then `cross_entropy(logits[:, :-1], labels[:, 1:], ignore_index=-100)` and
    `topk_forward_kl` on the positions that have a teacher target), up to float rounding: only the
    positions with a supervised next token are scored, `chunk` of them at a time, each chunk's sums
    weighted by 1 / (the count over the whole batch). Each chunk runs under `torch.utils.checkpoint`
    (non-reentrant): its logits are freed after the forward and recomputed, one chunk at a time, in the
    backward, so the peak holds one chunk's logits, log-softmax and gradients (a few x chunk x V x 4 B).

    Args:
      hidden: [B, T, H] float (any float dtype), the model's last hidden states (after the final norm:
        `model(..., output_hidden_states=True).hidden_states[-1]`). Position p predicts token p + 1.
        Gradients flow into it.
      lm_head: the model's output embeddings (`model.get_output_embeddings()`), [n, H] -> [n, V]; called
        on each chunk, twice (forward and backward). Gradients flow into its parameters (tied or not).
        Its `out_features`, when it has one, is V: the teacher ids are then checked once for all
        positions (an id >= V, or one listed twice, raises ValueError), else in every chunk.
      labels: [B, T] integer, the token ids to predict, -100 where no loss is taken (prompt, padding).
      kd_ids: [B, T, K] integer, the teacher's top-K token ids for the token AT each position, in the
        student's vocabulary; -1 for "none".
      kd_logprobs: [B, T, K] float, the teacher's natural-log probabilities of those ids.
      kd_valid: [B, T] bool, the positions whose token got a teacher target.
      kd_alpha: float in [0, 1] (else ValueError), the weight of the KD term.
      chunk: positions per chunk, >= 0 (0: `kd_chunk_rows(V)`, or 1024 when V is not known).

    Returns: (loss, kd, ce), each [] float32 (float64 for float64 hidden states):
      kd    the top-K forward KL averaged over the positions p with labels[p + 1] != -100 and
            kd_valid[p + 1]; 0.0 with a gradient path when there are none;
      ce    the cross-entropy averaged over the positions with labels[p + 1] != -100; 0.0 with a gradient
            path when there are none (the plain computation gives NaN there);
      loss  kd_alpha * kd + (1 - kd_alpha) * ce.
    """
    kd_alpha = float(kd_alpha)
    if not 0.0 <= kd_alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {kd_alpha}")
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be [B, T, H], got shape {tuple(hidden.shape)}")
    b, t, h = hidden.shape
    if labels.shape != (b, t) or kd_valid.shape != (b, t):
        raise ValueError(
            f"labels and kd_valid must be [B, T] = {(b, t)}, got {tuple(labels.shape)} and {tuple(kd_valid.shape)}"
        )
    if kd_ids.dim() != 3 or kd_ids.shape[:2] != (b, t) or kd_logprobs.shape != kd_ids.shape:
        raise ValueError(
            f"kd_ids and kd_logprobs must both be [B, T, K] with [B, T] = {(b, t)}, got {tuple(kd_ids.shape)} "
            f"and {tuple(kd_logprobs.shape)}"
        )
    if chunk < 0:
        raise ValueError(f"chunk must be 0 or more, got {chunk}")
    device = hidden.device
    target = labels[:, 1:].to(device=device, dtype=torch.long)
    scored = target != -100  # [B, T-1]: the positions whose next token is supervised
    rows = hidden[:, :-1][scored]  # [M, H]; the boolean index syncs once
    targets = target[scored]
    ids = kd_ids[:, 1:].to(device=device, dtype=torch.long)[scored]  # [M, K]
    logprobs = kd_logprobs[:, 1:].to(device)[scored]
    picked = kd_valid[:, 1:].to(device=device, dtype=torch.bool)[scored]  # [M]
    n_ce, n_kd = targets.numel(), int(picked.sum())
    vocab = getattr(lm_head, "out_features", None)
    vocab = vocab if isinstance(vocab, int) else None
    if vocab is not None:
        listed = (ids >= 0) & picked[:, None]
        _check_listed_ids(torch.where(listed, ids, torch.full_like(ids, -1)), vocab)
    chunk = chunk or (kd_chunk_rows(vocab) if vocab is not None else 1024)
    if n_ce == 0:  # nothing supervised: 0.0, through the head so every parameter still gets a (zero) gradient
        logits = lm_head(hidden.reshape(-1, h)[:1])
        zero = logits.to(_compute_dtype(logits.dtype)).sum() * 0.0
        return zero, zero, zero
    ce_sum: torch.Tensor | float = 0.0
    kd_sum: torch.Tensor | float = 0.0
    for start in range(0, n_ce, chunk):
        part = slice(start, start + chunk)
        ce_part, kd_part = checkpoint(
            _chunk_sums,
            lm_head,
            rows[part],
            targets[part],
            ids[part],
            logprobs[part],
            picked[part],
            vocab is None,
            use_reentrant=False,
            preserve_rng_state=False,
        )
        ce_sum = ce_sum + ce_part
        kd_sum = kd_sum + kd_part
    ce = ce_sum / n_ce
    kd = kd_sum / max(n_kd, 1)
    return mixed_kd_loss(kd, ce, kd_alpha), kd, ce


def gather_token_logprobs(logits: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """The log-softmax of `logits` at `token_ids`: the model's log-probability of each given token.

    Args:
      logits: [B, T, V] float (any float dtype), the logits that PREDICT each token: for a causal LM's
        output on input_ids, pass logits[:, :-1] with token_ids = input_ids[:, 1:].
      token_ids: [B, T] integer (long), each in [0, V) (replace padding / -100 labels by any valid id
        and mask those positions afterwards).

    Returns: [B, T] float32 (float64 for float64 logits), with gradients into `logits`. Computed as
    logit - logsumexp(logits) without materializing the full log-softmax.
    """
    if logits.dim() != 3 or token_ids.shape != logits.shape[:2]:
        raise ValueError(
            f"logits must be [B, T, V] and token_ids [B, T], got {tuple(logits.shape)} and {tuple(token_ids.shape)}"
        )
    values = logits.to(_compute_dtype(logits.dtype))
    picked = values.gather(-1, token_ids.to(device=values.device, dtype=torch.long).unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(values, dim=-1)


def _chunk_token_logprobs(lm_head: Callable[[torch.Tensor], torch.Tensor], hidden: torch.Tensor, ids: torch.Tensor):
    """One chunk of `chunked_token_logprobs`: hidden [n, H] -> logits [n, V] -> log p(ids) [n]."""
    logits = lm_head(hidden)
    values = logits.to(_compute_dtype(logits.dtype))
    return values.gather(-1, ids.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(values, dim=-1)


def chunked_token_logprobs(
    hidden: torch.Tensor, lm_head: Callable[[torch.Tensor], torch.Tensor], token_ids: torch.Tensor, chunk: int = 0
) -> torch.Tensor:
    """`gather_token_logprobs(lm_head(hidden), token_ids)` without a [B, T, V] tensor of logits: the LM head runs
    on `chunk` positions at a time under `torch.utils.checkpoint` (its logits freed after the forward and
    recomputed chunk by chunk in the backward), as in `chunked_kd_ce_loss`.

    Args:
      hidden: [B, T, H] float, the last hidden states that PREDICT each token (hidden[:, :-1] for input_ids[:, 1:]).
      lm_head: the student's output layer, [*, H] -> [*, V]; gradients flow into it and into `hidden`.
      token_ids: [B, T] integer, each in [0, V) (replace padding by any valid id and mask it afterwards).
      chunk: positions per chunk, >= 0 (0: `kd_chunk_rows(V)`, or 1024 when V is not known).

    Returns: [B, T] float32 (float64 for a float64 head), equal to gather_token_logprobs on the full logits.
    """
    if hidden.dim() != 3 or token_ids.shape != hidden.shape[:2]:
        raise ValueError(
            f"hidden must be [B, T, H] and token_ids [B, T], got {tuple(hidden.shape)} and {tuple(token_ids.shape)}"
        )
    if chunk < 0:
        raise ValueError(f"chunk must be 0 or more, got {chunk}")
    b, t, h = hidden.shape
    vocab = getattr(lm_head, "out_features", None)
    chunk = chunk or (kd_chunk_rows(vocab) if isinstance(vocab, int) else 1024)
    rows = hidden.reshape(b * t, h)
    ids = token_ids.reshape(b * t).to(device=hidden.device, dtype=torch.long)
    parts = [
        checkpoint(
            _chunk_token_logprobs,
            lm_head,
            rows[i : i + chunk],
            ids[i : i + chunk],
            use_reentrant=False,
            preserve_rng_state=False,
        )  # fmt: skip
        for i in range(0, b * t, chunk)
    ]
    return torch.cat(parts).view(b, t) if parts else rows.new_zeros((b, t), dtype=torch.float32)
