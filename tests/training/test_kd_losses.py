"""distill.training.kd_losses against plain references: Python loops and `math` over explicit probability lists."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from distill.training.kd_losses import (
    CHUNK_LOGIT_BYTES,
    chunked_kd_ce_loss,
    chunked_token_logprobs,
    gather_token_logprobs,
    kd_chunk_rows,
    mixed_kd_loss,
    sampled_reverse_kl_loss,
    topk_forward_kl,
    topk_generalized_jsd,
)

FLOOR = 1e-12  # the module's floors on p_rest and (reverse KL) on q


# ---------------------------------------------------------------- plain references


def ref_buckets(logits: list[float], ids: list[int], lps: list[float]) -> tuple[list[float], list[float]]:
    """(q, p) on the buckets: the listed ids (id >= 0) in order, then the rest."""
    top = max(logits)
    exps = [math.exp(x - top) for x in logits]
    z = sum(exps)
    p_all = [e / z for e in exps]
    listed = [(i, lp) for i, lp in zip(ids, lps, strict=True) if i >= 0]
    q = [math.exp(lp) for _, lp in listed]
    total = sum(q)
    if total > 1.0:
        q = [x / total for x in q]
    q_rest = max(0.0, 1.0 - sum(q))
    listed_ids = {i for i, _ in listed}
    p = [p_all[i] for i, _ in listed]
    p_rest = max(sum(p_all[j] for j in range(len(logits)) if j not in listed_ids), FLOOR)
    return q + [q_rest], p + [p_rest]


def ref_forward_kl(q: list[float], p: list[float]) -> float:
    return sum(qi * (math.log(qi) - math.log(pi)) for qi, pi in zip(q, p, strict=True) if qi > 0)


def ref_reverse_kl(q: list[float], p: list[float]) -> float:
    return sum(pi * (math.log(pi) - math.log(max(qi, FLOOR))) for qi, pi in zip(q, p, strict=True) if pi > 0)


def ref_jsd(q: list[float], p: list[float], beta: float) -> float:
    m = [beta * qi + (1 - beta) * pi for qi, pi in zip(q, p, strict=True)]
    kl_q = sum(qi * math.log(qi / mi) for qi, mi in zip(q, m, strict=True) if qi > 0)
    kl_p = sum(pi * math.log(pi / mi) for pi, mi in zip(p, m, strict=True) if pi > 0)
    return beta * kl_q + (1 - beta) * kl_p


def ref_loss(student, ids, lps, mask, row_fn) -> float:
    logits, ids, lps = student.tolist(), ids.tolist(), lps.tolist()
    keep = [True] * len(logits) if mask is None else [bool(m) for m in mask.tolist()]
    rows = [row_fn(*ref_buckets(logits[n], ids[n], lps[n])) for n in range(len(logits)) if keep[n]]
    return sum(rows) / len(rows) if rows else 0.0


def make_case(n: int, v: int, k: int, seed: int, absent: float = 0.3, with_mask: bool = False, dtype=torch.float64):
    """Random student logits, the teacher's log-probs at K distinct random ids (some -1 with garbage)."""
    gen = torch.Generator().manual_seed(seed)
    student = torch.randn(n, v, generator=gen, dtype=torch.float64) * 2
    teacher = torch.randn(n, v, generator=gen, dtype=torch.float64) * 3
    ids = torch.rand(n, v, generator=gen).argsort(dim=-1)[:, :k]
    lps = torch.log_softmax(teacher, dim=-1).gather(-1, ids)
    drop = torch.rand(n, k, generator=gen) < absent
    ids = ids.masked_fill(drop, -1)
    lps = lps.masked_fill(drop, 123.0)  # ignored whatever they hold
    mask = None
    if with_mask:
        mask = torch.rand(n, generator=gen) > 0.3
        mask[0] = True
    return student.to(dtype), ids, lps, mask


# ---------------------------------------------------------------- topk_forward_kl

SHAPES = [(1, 5, 1), (4, 8, 3), (7, 20, 5), (3, 6, 6), (5, 50, 20)]


@pytest.mark.parametrize("n,v,k", SHAPES)
@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forward_kl_matches_reference(n, v, k, with_mask, dtype):
    student, ids, lps, mask = make_case(n, v, k, seed=n * 100 + v + k, with_mask=with_mask, dtype=dtype)
    got = topk_forward_kl(student, ids, lps, mask=mask)
    want = ref_loss(student.double(), ids, lps, mask, ref_forward_kl)
    assert got.dtype == dtype
    assert got.item() == pytest.approx(want, abs=1e-5)


def test_forward_kl_float_mask_is_weights():
    student, ids, lps, mask = make_case(6, 12, 4, seed=3, with_mask=True)
    assert topk_forward_kl(student, ids, lps, mask=mask.double()).item() == pytest.approx(
        topk_forward_kl(student, ids, lps, mask=mask).item(), abs=1e-12
    )


@pytest.mark.parametrize("shuffle", [False, True])
def test_forward_kl_with_every_token_listed_is_full_kl(shuffle):
    gen = torch.Generator().manual_seed(7)
    n, v = 5, 9
    student = torch.randn(n, v, generator=gen, dtype=torch.float64) * 2
    teacher = torch.randn(n, v, generator=gen, dtype=torch.float64) * 2
    ids = torch.rand(n, v, generator=gen).argsort(dim=-1) if shuffle else torch.arange(v).repeat(n, 1)
    lps = torch.log_softmax(teacher, dim=-1).gather(-1, ids)
    full = (torch.softmax(teacher, -1) * (torch.log_softmax(teacher, -1) - torch.log_softmax(student, -1))).sum(-1)
    assert topk_forward_kl(student, ids, lps).item() == pytest.approx(full.mean().item(), abs=1e-9)


def test_gradcheck_forward_kl_and_jsd():
    student, ids, lps, _ = make_case(4, 7, 3, seed=11)
    ids[1, 0], lps[1, 0] = -1, float("nan")
    mask = torch.tensor([True, True, False, True])
    x = student.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: topk_forward_kl(s, ids, lps, mask=mask), (x,))
    assert torch.autograd.gradcheck(lambda s: topk_generalized_jsd(s, ids, lps, beta=0.3, mask=mask), (x,))


def test_float16_teacher_logprobs_over_one_stay_finite():
    lps = torch.tensor([[math.log(0.5), math.log(0.31), math.log(0.2)]], dtype=torch.float16)  # sums to ~1.01
    assert lps.float().exp().sum().item() > 1.005
    ids = torch.tensor([[2, 0, 5]])
    student = torch.randn(1, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
    loss = topk_forward_kl(student, ids, lps)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()
    assert loss.item() == pytest.approx(
        ref_loss(student.detach().double(), ids, lps.double(), None, ref_forward_kl), abs=1e-5
    )
    for beta in (0.0, 0.5, 1.0):
        assert torch.isfinite(topk_generalized_jsd(student, ids, lps, beta=beta))


def test_all_masked_gives_zero_with_backward():
    student, ids, lps, _ = make_case(3, 6, 2, seed=5)
    student.requires_grad_(True)
    mask = torch.zeros(3, dtype=torch.bool)
    for loss in (topk_forward_kl(student, ids, lps, mask=mask), topk_generalized_jsd(student, ids, lps, mask=mask)):
        assert loss.item() == 0.0
        loss.backward()
        assert torch.equal(student.grad, torch.zeros_like(student))


def test_excluded_rows_are_ignored_entirely():
    student, ids, lps, _ = make_case(3, 6, 3, seed=9, absent=0.0)
    mask = torch.tensor([True, False, True])
    bad_ids, bad_lps = ids.clone(), lps.clone()
    bad_ids[1] = torch.tensor([4, 4, 99])  # duplicates, out of range: padding garbage
    bad_lps[1] = float("nan")
    x = student.clone().requires_grad_(True)
    loss = topk_forward_kl(x, bad_ids, bad_lps, mask=mask)
    loss.backward()
    assert torch.isfinite(x.grad).all() and torch.equal(x.grad[1], torch.zeros(6, dtype=torch.float64))
    keep = mask.nonzero().squeeze(-1)
    assert loss.item() == pytest.approx(topk_forward_kl(student[keep], ids[keep], lps[keep]).item(), abs=1e-12)


def test_bad_ids_raise():
    student = torch.zeros(2, 5)
    lps = torch.full((2, 3), -2.0)
    with pytest.raises(ValueError, match="duplicate"):
        topk_forward_kl(student, torch.tensor([[0, 1, 2], [3, 1, 3]]), lps)
    with pytest.raises(ValueError, match="duplicate"):
        topk_generalized_jsd(student, torch.tensor([[0, 0, -1], [1, 2, 3]]), lps)
    with pytest.raises(ValueError, match="vocabulary"):
        topk_forward_kl(student, torch.tensor([[0, 1, 5], [1, 2, 3]]), lps)
    # repeated -1 is not a duplicate
    assert torch.isfinite(topk_forward_kl(student, torch.tensor([[0, -1, -1], [-1, -1, -1]]), lps))
    with pytest.raises(ValueError):
        topk_forward_kl(student, torch.tensor([[0, 1]]), torch.zeros(1, 2))


# ---------------------------------------------------------------- topk_generalized_jsd


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("n,v,k", SHAPES)
def test_jsd_matches_reference(beta, n, v, k):
    student, ids, lps, mask = make_case(n, v, k, seed=n + v * 10 + k, with_mask=True)
    got = topk_generalized_jsd(student, ids, lps, beta=beta, mask=mask)
    assert got.item() == pytest.approx(ref_loss(student, ids, lps, mask, lambda q, p: ref_jsd(q, p, beta)), abs=1e-5)
    assert got.item() >= -1e-12  # up to rounding


@pytest.mark.parametrize("n,v,k", SHAPES)
def test_jsd_limits(n, v, k):
    student, ids, lps, mask = make_case(n, v, k, seed=n + v + k, with_mask=True)
    assert topk_generalized_jsd(student, ids, lps, beta=0.0, mask=mask).item() == pytest.approx(
        topk_forward_kl(student, ids, lps, mask=mask).item(), abs=1e-12
    )
    assert topk_generalized_jsd(student, ids, lps, beta=1.0, mask=mask).item() == pytest.approx(
        ref_loss(student, ids, lps, mask, ref_reverse_kl), abs=1e-5
    )


def test_reverse_kl_floors_zero_teacher_buckets():
    # every token listed (empty teacher rest bucket) and one of them with teacher probability 0
    student = torch.tensor([[0.0, 1.0, -1.0, 0.5]], dtype=torch.float64)
    ids = torch.tensor([[0, 1, 2, 3]])
    lps = torch.tensor([[math.log(0.5), math.log(0.3), math.log(0.2), -math.inf]], dtype=torch.float64)
    got = topk_generalized_jsd(student, ids, lps, beta=1.0)
    assert math.isfinite(got.item())
    assert got.item() == pytest.approx(ref_loss(student, ids, lps, None, ref_reverse_kl), abs=1e-6)
    # only 3 of 4 listed: the student's mass on the unlisted token meets an empty teacher rest bucket
    got3 = topk_generalized_jsd(student, ids[:, :3], lps[:, :3], beta=1.0)
    assert got3.item() == pytest.approx(ref_loss(student, ids[:, :3], lps[:, :3], None, ref_reverse_kl), abs=1e-6)


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 1.0])
def test_jsd_is_zero_when_student_equals_teacher(beta):
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(4, 10, generator=gen, dtype=torch.float64)
    ids = torch.rand(4, 10, generator=gen).argsort(-1)[:, :4]
    lps = torch.log_softmax(logits, -1).gather(-1, ids)
    assert topk_generalized_jsd(logits, ids, lps, beta=beta).item() == pytest.approx(0.0, abs=1e-12)
    # the buckets alone matter: redistributing mass inside the rest bucket changes nothing
    rest = torch.ones(4, 10, dtype=torch.bool).scatter(-1, ids, False)
    lse_rest = torch.logsumexp(logits.masked_fill(~rest, -math.inf), -1, keepdim=True)
    other = torch.where(rest, lse_rest - math.log(6), logits)  # rest mass spread evenly
    assert topk_generalized_jsd(other, ids, lps, beta=beta).item() == pytest.approx(0.0, abs=1e-12)
    student = logits + torch.randn(4, 10, generator=gen, dtype=torch.float64)
    assert topk_generalized_jsd(student, ids, lps, beta=beta).item() > 0


@pytest.mark.parametrize("beta", [-0.1, 1.5, float("nan")])
def test_jsd_rejects_bad_beta(beta):
    with pytest.raises(ValueError):
        topk_generalized_jsd(torch.zeros(1, 3), torch.tensor([[0]]), torch.tensor([[-1.0]]), beta=beta)


# ---------------------------------------------------------------- sampled_reverse_kl_loss


def test_sampled_reverse_kl_metrics_and_gradient():
    gen = torch.Generator().manual_seed(4)
    s = (torch.rand(3, 6, generator=gen, dtype=torch.float64) * -4).requires_grad_(True)
    t = torch.rand(3, 6, generator=gen, dtype=torch.float64) * -4
    mask = torch.rand(3, 6, generator=gen) > 0.4
    t_garbage = t.masked_fill(~mask, float("nan"))  # excluded tokens may hold anything
    loss, metrics = sampled_reverse_kl_loss(s, t_garbage, mask=mask)
    n = int(mask.sum())
    diffs = [
        si - ti
        for si, ti, m in zip(s.detach().flatten().tolist(), t.flatten().tolist(), mask.flatten().tolist(), strict=True)
        if m
    ]
    assert metrics["tokens"] == n and isinstance(metrics["tokens"], float)
    assert metrics["reverse_kl"] == pytest.approx(sum(diffs) / n, abs=1e-12)
    loss.backward()
    want = torch.where(mask, (s.detach() - t) / n, torch.zeros_like(t))
    assert torch.allclose(s.grad, want, atol=1e-12)
    # no mask: all tokens
    _, m_all = sampled_reverse_kl_loss(s, t)
    assert m_all["tokens"] == 18 and m_all["reverse_kl"] == pytest.approx((s - t).mean().item(), abs=1e-12)


def test_sampled_reverse_kl_all_masked():
    s = torch.randn(2, 3, requires_grad=True)
    loss, metrics = sampled_reverse_kl_loss(s, torch.randn(2, 3), mask=torch.zeros(2, 3))
    assert loss.item() == 0.0 and metrics == {"reverse_kl": 0.0, "tokens": 0.0}
    loss.backward()
    assert torch.equal(s.grad, torch.zeros(2, 3))


def test_sampled_reverse_kl_gradient_is_unbiased():
    gen = torch.Generator().manual_seed(0)
    theta = torch.tensor([0.5, -1.0, 1.2, 0.0, -0.3], dtype=torch.float64, requires_grad=True)
    log_q = torch.log_softmax(torch.tensor([1.0, 0.0, -0.5, 0.8, 0.2], dtype=torch.float64), -1)

    def kl_exact() -> torch.Tensor:
        log_p = torch.log_softmax(theta, -1)
        return (log_p.exp() * (log_p - log_q)).sum()

    exact = torch.autograd.grad(kl_exact(), theta)[0]

    log_p = torch.log_softmax(theta, -1)
    x = torch.multinomial(log_p.detach().exp(), 20000, replacement=True, generator=gen).view(200, 100)
    loss, metrics = sampled_reverse_kl_loss(log_p[x], log_q[x])
    estimate = torch.autograd.grad(loss, theta)[0]
    assert torch.allclose(estimate, exact, atol=0.05), (estimate, exact)
    assert metrics["reverse_kl"] == pytest.approx(kl_exact().item(), abs=0.05)


# ---------------------------------------------------------------- small helpers


def test_mixed_kd_loss():
    kd = torch.tensor(2.0, requires_grad=True)
    ce = torch.tensor(4.0, requires_grad=True)
    out = mixed_kd_loss(kd, ce, 0.25)
    assert out.item() == pytest.approx(3.5)
    out.backward()
    assert kd.grad.item() == pytest.approx(0.25) and ce.grad.item() == pytest.approx(0.75)
    assert mixed_kd_loss(kd, ce, 1).item() == 2.0 and mixed_kd_loss(kd, ce, 0.0).item() == 4.0
    for alpha in (-0.01, 1.01, float("nan")):
        with pytest.raises(ValueError):
            mixed_kd_loss(kd, ce, alpha)


def test_gather_token_logprobs():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 7, generator=gen).to(torch.bfloat16).requires_grad_(True)
    ids = torch.randint(0, 7, (2, 4), generator=gen)
    got = gather_token_logprobs(logits, ids)
    assert got.shape == (2, 4) and got.dtype == torch.float32
    want = torch.log_softmax(logits.detach().float(), -1).gather(-1, ids[..., None]).squeeze(-1)
    assert torch.allclose(got, want, atol=1e-6)
    got.sum().backward()
    assert logits.grad is not None and logits.grad.shape == logits.shape
    with pytest.raises(ValueError):
        gather_token_logprobs(logits, ids[:, :3])


@pytest.mark.parametrize("chunk", [1, 3, 5, 64])
def test_chunked_token_logprobs_equal_the_full_logits_values_and_gradients(chunk):
    """On-policy's sampled-token log-probabilities, LM head chunk by chunk, against gather_token_logprobs on the
    full logits: the same values and the same gradients into the hidden states and the head."""
    gen = torch.Generator().manual_seed(2)
    hidden = torch.randn(2, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    head = torch.nn.Linear(6, 11, bias=False).double()
    ids = torch.randint(0, 11, (2, 5), generator=gen)
    weights = torch.randn(2, 5, generator=gen, dtype=torch.float64)
    want = gather_token_logprobs(head(hidden), ids)
    (want * weights).sum().backward()
    want_grads = hidden.grad.clone(), head.weight.grad.clone()
    hidden.grad, head.weight.grad = None, None
    got = chunked_token_logprobs(hidden, head, ids, chunk=chunk)
    assert got.shape == (2, 5) and torch.allclose(got, want, atol=1e-12)
    (got * weights).sum().backward()
    assert torch.allclose(hidden.grad, want_grads[0], atol=1e-12)
    assert torch.allclose(head.weight.grad, want_grads[1], atol=1e-12)
    with pytest.raises(ValueError):
        chunked_token_logprobs(hidden, head, ids[:, :3])


# ---------------------------------------------------------------- training sanity


def test_training_matches_teacher_buckets():
    torch.manual_seed(0)
    n, v, k = 4, 10, 3
    teacher = torch.randn(n, v) * 2
    q_all = torch.softmax(teacher, -1)
    lps, ids = torch.log_softmax(teacher, -1).topk(k, dim=-1)
    student = torch.zeros(n, v, requires_grad=True)
    opt = torch.optim.Adam([student], lr=0.1)
    for _ in range(200):
        opt.zero_grad()
        loss = topk_forward_kl(student, ids, lps)
        loss.backward()
        opt.step()
    p_all = torch.softmax(student.detach(), -1)
    p_top, q_top = p_all.gather(-1, ids), q_all.gather(-1, ids)
    assert torch.allclose(p_top, q_top, atol=0.02), (p_top, q_top)
    assert torch.allclose(1 - p_top.sum(-1), 1 - q_top.sum(-1), atol=0.02)
    assert loss.item() < 1e-3


def test_float32_every_token_listed_has_finite_gradients():
    # the student's rest mass is 0 up to float32 rounding (its log is floored), the teacher's is ~0
    gen = torch.Generator().manual_seed(8)
    student = (torch.randn(6, 50, generator=gen) * 4).requires_grad_(True)
    teacher = torch.randn(6, 50, generator=gen) * 4
    ids = torch.rand(6, 50, generator=gen).argsort(-1)
    lps = torch.log_softmax(teacher, -1).gather(-1, ids)
    full = (torch.softmax(teacher, -1) * (torch.log_softmax(teacher, -1) - torch.log_softmax(student, -1))).sum(-1)
    for beta in (0.0, 0.5, 1.0):
        loss = topk_generalized_jsd(student, ids, lps, beta=beta)
        (grad,) = torch.autograd.grad(loss, student)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert topk_forward_kl(student, ids, lps).item() == pytest.approx(full.mean().item(), abs=1e-4)


# ---------------------------------------------------------------- chunked_kd_ce_loss


def full_logits_loss(hidden, head, labels, kd_ids, kd_lps, valid, alpha):
    """The computation chunked_kd_ce_loss replaces (LogitKDTrainer.compute_loss before it): the full
    [B, T, V] logits, cross-entropy over them in fp32 (float64 kept, as the module does, for a tight check),
    top-K forward KL on the positions with a target."""
    logits = head(hidden)[:, :-1]
    target = labels[:, 1:]
    flat = logits.reshape(-1, logits.size(-1)).to(torch.promote_types(logits.dtype, torch.float32))
    ce = F.cross_entropy(flat, target.reshape(-1), ignore_index=-100)
    sel = valid[:, 1:] & (target != -100)
    kd = topk_forward_kl(logits[sel], kd_ids[:, 1:][sel], kd_lps[:, 1:][sel]) if sel.any() else logits.sum() * 0.0
    return mixed_kd_loss(kd, ce, alpha), kd, ce


def kd_batch(b=3, t=13, h=8, v=29, k=4, seed=0, dtype=torch.float64):
    """Hidden states, a head with a bias, labels with a prompt and padding, teacher targets on some positions."""
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, t, h, generator=gen, dtype=dtype)
    head = torch.nn.Linear(h, v, bias=True).to(dtype)
    with torch.no_grad():
        head.weight.copy_(torch.randn(v, h, generator=gen, dtype=dtype))
        head.bias.copy_(torch.randn(v, generator=gen, dtype=dtype))
    labels = torch.randint(0, v, (b, t), generator=gen)
    labels[:, :4] = -100  # prompt
    labels[b - 1, t - 3 :] = -100  # padding
    ids = torch.rand(b, t, v, generator=gen).argsort(dim=-1)[..., :k]
    ids[0, 6, 1] = -1
    lps = torch.log_softmax(torch.randn(b, t, k + 1, generator=gen, dtype=torch.float64), -1)[..., :k].float()
    valid = torch.rand(b, t, generator=gen) > 0.3
    valid[b - 1, t - 3 :] = True  # targets on padding are ignored: no supervised token there
    return hidden, head, labels, ids, lps, valid


def loss_and_grads(fn, hidden, head, *rest):
    x = hidden.clone().requires_grad_(True)
    head.zero_grad()
    loss, kd, ce = fn(x, head, *rest)
    loss.backward()
    return [loss.detach(), kd.detach(), ce.detach(), x.grad, head.weight.grad.clone(), head.bias.grad.clone()]


@pytest.mark.parametrize("chunk", [1, 2, 5, 7, 64, 0, 10_000])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_chunked_loss_equals_the_full_logits(chunk, dtype, tol):
    hidden, head, labels, ids, lps, valid = kd_batch(dtype=dtype)
    alpha = 0.3
    want = loss_and_grads(full_logits_loss, hidden, head, labels, ids, lps, valid, alpha)
    got = loss_and_grads(
        lambda x, hd, *r: chunked_kd_ce_loss(x, hd, *r, chunk=chunk), hidden, head, labels, ids, lps, valid, alpha
    )
    assert got[0].dtype == dtype
    for name, g, w in zip(("loss", "kd", "ce", "d hidden", "d weight", "d bias"), got, want, strict=True):
        assert torch.allclose(g, w, rtol=0, atol=tol), (name, (g - w).abs().max().item())


def test_chunked_loss_computes_one_chunk_at_a_time_and_recomputes_it_in_the_backward():
    hidden, head, labels, ids, lps, valid = kd_batch(b=2, t=21)
    rows = []
    head.register_forward_hook(lambda _m, inputs, _out: rows.append(inputs[0].shape[0]))
    x = hidden.clone().requires_grad_(True)
    scored = int((labels[:, 1:] != -100).sum())
    loss, _, _ = chunked_kd_ce_loss(x, head, labels, ids, lps, valid, 0.5, chunk=4)
    chunks = -(-scored // 4)
    assert rows == [4] * (scored // 4) + [scored % 4] * (scored % 4 > 0) and len(rows) == chunks
    loss.backward()
    assert len(rows) == 2 * chunks and max(rows) == 4  # each chunk again, in the backward, never all at once


def test_chunked_loss_edge_cases_stay_finite():
    hidden, head, labels, ids, lps, valid = kd_batch()
    # no teacher target anywhere: KD 0.0 (with a gradient path), the loss is (1 - alpha) * cross-entropy
    none = torch.zeros_like(valid)
    want = loss_and_grads(full_logits_loss, hidden, head, labels, ids, lps, none, 0.5)
    got = loss_and_grads(chunked_kd_ce_loss, hidden, head, labels, ids, lps, none, 0.5)
    assert got[1].item() == 0.0
    for g, w in zip(got, want, strict=True):
        assert torch.allclose(g, w, rtol=0, atol=1e-12)
    # nothing supervised: 0.0 and zero gradients everywhere (the full-logits computation gives NaN)
    unsupervised = torch.full_like(labels, -100)
    loss, kd, ce, d_hidden, d_weight, d_bias = loss_and_grads(
        chunked_kd_ce_loss, hidden, head, unsupervised, ids, lps, valid, 0.5
    )
    assert loss.item() == kd.item() == ce.item() == 0.0
    assert not d_hidden.any() and not d_weight.any() and not d_bias.any()


def test_chunked_loss_checks_its_inputs():
    hidden, head, labels, ids, lps, valid = kd_batch(v=29)
    bad = ids.clone()
    bad[1, 7, 0] = 29
    with pytest.raises(ValueError, match="vocabulary"):
        chunked_kd_ce_loss(hidden, head, labels, bad, lps, valid.fill_(True), 0.5)
    bad = ids.clone()
    bad[1, 7, 1] = bad[1, 7, 0]
    with pytest.raises(ValueError, match="duplicate"):
        chunked_kd_ce_loss(hidden, head, labels, bad, lps, valid, 0.5)
    # a head without out_features (a plain function): the same checks, chunk by chunk
    with pytest.raises(ValueError, match="duplicate"):
        chunked_kd_ce_loss(hidden, lambda x: head(x), labels, bad, lps, valid, 0.5, chunk=3)
    # positions without a supervised next token may hold anything
    garbage = ids.clone()
    garbage[:, :4] = 999
    assert torch.isfinite(chunked_kd_ce_loss(hidden, head, labels, garbage, lps, valid, 0.5)[0])
    with pytest.raises(ValueError, match="alpha"):
        chunked_kd_ce_loss(hidden, head, labels, ids, lps, valid, 1.5)
    with pytest.raises(ValueError, match=r"\[B, T, H\]"):
        chunked_kd_ce_loss(hidden[0], head, labels, ids, lps, valid, 0.5)
    with pytest.raises(ValueError, match="labels"):
        chunked_kd_ce_loss(hidden, head, labels[:, 1:], ids, lps, valid, 0.5)
    with pytest.raises(ValueError, match="kd_ids"):
        chunked_kd_ce_loss(hidden, head, labels, ids[:, 1:], lps, valid, 0.5)
    with pytest.raises(ValueError, match="chunk"):
        chunked_kd_ce_loss(hidden, head, labels, ids, lps, valid, 0.5, chunk=-1)


@pytest.mark.parametrize("vocab, rows", [(151_936, 384), (152_064, 384), (128_256, 512), (49_152, 1344)])
def test_kd_chunk_rows_keeps_a_chunks_fp32_logits_under_the_budget(vocab, rows):
    assert kd_chunk_rows(vocab) == rows
    assert rows * vocab * 4 <= CHUNK_LOGIT_BYTES < (rows + 64) * vocab * 4
    assert kd_chunk_rows(10**9) == 1 and kd_chunk_rows(10) % 64 == 0
    with pytest.raises(ValueError):
        kd_chunk_rows(0)
