"""Logit distillation on the real embedded pair's tokenizers: byte alignment across tokenizers, targets
placed on the right student positions, and a short training run whose KD loss falls."""

import json

import numpy as np
import pytest

from distill.common.config import build
from distill.common.errors import DistillError
from distill.common.logprobs import TokenLogprobs, pack
from distill.common.records import write_jsonl
from distill.training.align import TokenBytes, align, vocab_map
from distill.training.config import TrainConfig

TEXT = "To find 12 + 345, we add: 12 + 345 = 357. So the answer is \\boxed{357}. Café au lait"


@pytest.fixture(scope="module")
def tokenizers(student_path):
    from transformers import AutoTokenizer

    from distill.common.models import ensure_embedded

    return AutoTokenizer.from_pretrained(str(ensure_embedded("teacher"))), AutoTokenizer.from_pretrained(student_path)


def fake_logprobs(teacher_tok, text, k=4, seed=0):
    """The teacher 'generated' `text`: its own tokens first with log-prob -0.1, then k-1 random others."""
    rng = np.random.default_rng(seed)
    ids = np.array(teacher_tok(text, add_special_tokens=False)["input_ids"], dtype=np.int32)
    top = np.concatenate([ids[:, None], rng.integers(1000, 30000, size=(len(ids), k - 1))], axis=1).astype(np.int32)
    lps = np.tile(np.array([-0.1] + [-3.0 - j for j in range(k - 1)], dtype=np.float32), (len(ids), 1))
    return TokenLogprobs(ids, np.full(len(ids), -0.1, np.float32), top, lps)


@pytest.mark.model
def test_byte_alignment_across_the_embedded_pair(tokenizers):
    teacher_tok, student_tok = tokenizers
    tb, sb = TokenBytes(teacher_tok), TokenBytes(student_tok)
    assert tb.byte_level and sb.byte_level
    mapping = vocab_map(tb, sb)
    # tokens spelled the same map to the same text; special tokens never map
    for word in ("Ġthe", "Ġanswer", "1", "{"):
        t_id, s_id = teacher_tok.convert_tokens_to_ids(word), student_tok.convert_tokens_to_ids(word)
        assert mapping[t_id] == s_id
    assert mapping[teacher_tok.convert_tokens_to_ids("<|im_end|>")] == -1
    tl = fake_logprobs(teacher_tok, TEXT)
    s_ids = student_tok(TEXT, add_special_tokens=False)["input_ids"]
    a = align(tl.ids, tl.top_ids, tl.top_logprobs, s_ids, tb, sb, mapping)
    s_pieces = student_tok.convert_ids_to_tokens(s_ids)
    t_pieces = teacher_tok.convert_ids_to_tokens(tl.ids.tolist())
    # the two cut this text alike except "boxed" (teacher one token, student "box"+"ed") and "Café"
    assert 0.85 < a.coverage < 1.0
    assert not a.valid[s_pieces.index("ed")]  # starts inside the teacher's "boxed": no target there
    # where aligned, the teacher's sampled token (its top-1) maps to the student's token when spelled alike
    for j, piece in enumerate(s_pieces):
        if a.valid[j] and piece in t_pieces and piece not in ("boxed",):
            if student_tok.convert_tokens_to_ids(piece) == a.kd_ids[j, 0]:
                assert a.kd_logprobs[j, 0] == pytest.approx(-0.1)
    same = sum(a.kd_ids[j, 0] == s_ids[j] for j in range(len(s_ids)) if a.valid[j])
    assert same >= 0.8 * len(s_ids)


@pytest.mark.model
def test_a_changed_text_gets_no_targets_past_the_change(tokenizers):
    teacher_tok, student_tok = tokenizers
    tb, sb = TokenBytes(teacher_tok), TokenBytes(student_tok)
    tl = fake_logprobs(teacher_tok, TEXT)
    other = TEXT[:20] + " totally different words follow here"
    s_ids = student_tok(other, add_special_tokens=False)["input_ids"]
    a = align(tl.ids, tl.top_ids, tl.top_logprobs, s_ids, tb, sb, vocab_map(tb, sb))
    offsets = np.cumsum([0] + [len(p or b"") for p in (sb.pieces[i] for i in s_ids)])[:-1]
    assert a.valid[offsets < 20].any() and not a.valid[offsets > 21].any()


def kd_rows(teacher_tok, n=6):
    rows = []
    for i in range(n):
        a, b = 10 + i, 20 + 3 * i
        text = f"We add {a} and {b}: {a} + {b} = {a + b}.\n\nThe answer is \\boxed{{{a + b}}}."
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"What is {a} + {b}?"},
                    {"role": "assistant", "content": text},
                ],
                "teacher_logprobs": pack(fake_logprobs(teacher_tok, text, seed=i)),
            }
        )
    return rows


@pytest.mark.model
def test_logit_kd_training_lowers_the_kd_loss(tmp_path, tokenizers, student_path):
    from distill.training.train import run

    teacher_tok, _ = tokenizers
    write_jsonl(tmp_path / "kept.jsonl", kd_rows(teacher_tok))
    cfg = build(TrainConfig, dict(
        model=student_path, method="logit-kd", kd_alpha=0.7, data=str(tmp_path), output=str(tmp_path / "student"),
        sft={"max_steps": 6, "per_device_train_batch_size": 6, "learning_rate": 3e-4, "bf16": False, "warmup_steps": 0},
    ))  # fmt: skip
    metrics = run(cfg)
    assert metrics["method_detail"] == "logit-kd" and metrics["steps"] == 6
    assert metrics["same_tokenizer"] is False and metrics["coverage"] > 0.8 and metrics["top_k"] == 4
    logs = [h for h in json.loads((tmp_path / "student" / "log_history.json").read_text()) if "kd_loss" in h]
    assert len(logs) == 6 and logs[-1]["kd_loss"] < 0.5 * logs[0]["kd_loss"], logs
    assert (tmp_path / "student" / "model.safetensors").is_file()


@pytest.mark.model
def test_one_tokenizer_uses_the_teachers_tokens_as_they_are(tmp_path, tokenizers, student_path):
    from transformers import AutoTokenizer

    from distill.training.kd import build_examples, load_kd_rows

    _, student_tok = tokenizers
    write_jsonl(tmp_path / "kept.jsonl", kd_rows(student_tok, n=2))
    rows = load_kd_rows(tmp_path)
    examples, stats = build_examples(rows, student_tok, AutoTokenizer.from_pretrained(student_path), 4096)
    assert stats["same_tokenizer"] and stats["coverage"] > 0.9  # all but the template's end-of-turn tokens
    ex = examples[0]
    start = next(i for i, t in enumerate(ex["labels"]) if t != -100)
    text_ids = student_tok(rows[0]["text"], add_special_tokens=False)["input_ids"]
    assert ex["input_ids"][start : start + len(text_ids)] == text_ids
    assert ex["input_ids"][start + len(text_ids)] == student_tok.convert_tokens_to_ids("<|im_end|>")
    assert ex["kd_valid"][start : start + len(text_ids)].all()
    assert (ex["kd_ids"][start : start + len(text_ids), 0] == np.array(text_ids)).all()


def test_rows_without_teacher_logprobs_are_refused(tmp_path):
    from distill.training.kd import load_kd_rows

    write_jsonl(
        tmp_path / "kept.jsonl",
        [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}],
    )
    with pytest.raises(DistillError, match=r"row 1: no 'teacher_logprobs'.*--logprobs"):
        load_kd_rows(tmp_path)
    with pytest.raises(DistillError, match="method"):
        TrainConfig(method="distil")


@pytest.mark.model
def test_traces_from_another_teacher_are_refused(tmp_path, tokenizers, student_path):
    from distill.training.kd import build_examples, load_kd_rows

    teacher_tok, student_tok = tokenizers
    write_jsonl(tmp_path / "kept.jsonl", kd_rows(teacher_tok, n=1))
    with pytest.raises(DistillError, match="set --teacher"):
        build_examples(load_kd_rows(tmp_path), student_tok, student_tok, 4096)


def test_kd_recipes_cover_every_sft_size_and_onpolicy_only_the_small_ones():
    from distill.common.resources import RECIPES, recipe_for

    assert {p.stem for p in (RECIPES / "logit-kd").glob("*.yaml")} == {p.stem for p in (RECIPES / "sft").glob("*.yaml")}
    with pytest.raises(DistillError, match="no onpolicy recipe for size '70b'"):
        recipe_for("70b", "onpolicy")
