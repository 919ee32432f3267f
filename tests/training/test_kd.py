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
    from distill.training.train import train

    teacher_tok, _ = tokenizers
    write_jsonl(tmp_path / "kept.jsonl", kd_rows(teacher_tok))
    cfg = build(TrainConfig, dict(
        model=student_path, method="logit-kd", kd_alpha=0.7, data=str(tmp_path), output=str(tmp_path / "student"),
        sft={"max_steps": 6, "per_device_train_batch_size": 6, "learning_rate": 3e-4, "bf16": False, "warmup_steps": 0},
    ))  # fmt: skip
    metrics = train(cfg)
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


# --------------------------------------------------------------------------------------------------
# The loss on a tiny random model: chunked over positions, equal to the full-logits computation


def tiny_model(kind: str, tied: bool, vocab: int = 101, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    model_cls, config_cls = {"llama": (LlamaForCausalLM, LlamaConfig), "qwen2": (Qwen2ForCausalLM, Qwen2Config)}[kind]
    config = config_cls(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, tie_word_embeddings=tied,
    )  # fmt: skip
    return model_cls(config).float()


def tiny_batch(vocab: int = 101, k: int = 4, lengths=(17, 12, 9), seed: int = 0) -> dict:
    """Rows of different lengths through the Collator: a prompt, then a completion with teacher targets on
    most of its tokens (-1 ids here and there)."""
    from distill.training.kd import Collator

    rng = np.random.default_rng(seed)
    features = []
    for n in lengths:
        ids = rng.integers(0, vocab, n).tolist()
        labels = [-100] * 4 + ids[4:]
        kd_ids = np.stack([rng.permutation(vocab)[:k] for _ in range(n)]).astype(np.int64)
        kd_ids[rng.random((n, k)) < 0.1] = -1
        lps = np.log(rng.dirichlet(np.ones(k + 1), n)[:, :k]).astype(np.float32)
        valid = rng.random(n) < 0.8
        features.append({"input_ids": ids, "labels": labels, "kd_ids": kd_ids, "kd_logprobs": lps, "kd_valid": valid})
    return Collator(pad_id=0)(features)


def full_logits_loss(model, batch: dict, alpha: float):
    """LogitKDTrainer.compute_loss as it was: the model's full logits, CE over them in fp32, top-K KL."""
    import torch
    import torch.nn.functional as F

    from distill.training.kd_losses import mixed_kd_loss, topk_forward_kl

    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    logits = out.logits[:, :-1]
    target = batch["labels"][:, 1:]
    ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), target.reshape(-1), ignore_index=-100)
    sel = batch["kd_valid"][:, 1:] & (target != -100)
    kd = topk_forward_kl(logits[sel], batch["kd_ids"][:, 1:][sel], batch["kd_logprobs"][:, 1:][sel])
    assert sel.any() and torch.isfinite(kd)
    return mixed_kd_loss(kd, ce, alpha)


def grads(model) -> dict:
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


def trainer_for(model, tmp_path, **kwargs):
    from transformers import TrainingArguments

    from distill.training.kd import kd_trainer_class

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", remove_unused_columns=False)
    return kd_trainer_class()(model=model, args=args, **kwargs)


@pytest.mark.parametrize("kind, tied", [("llama", True), ("qwen2", False)])
@pytest.mark.parametrize("chunk", [1, 3, 16, 0, 4096])  # one position; several; the whole batch in one
def test_trainer_loss_is_chunked_and_equals_the_full_logits(tmp_path, kind, tied, chunk):
    import torch

    model = tiny_model(kind, tied)
    batch = tiny_batch()
    full_logits_loss(model, batch, 0.3).backward()
    want, want_loss = grads(model), full_logits_loss(model, batch, 0.3).item()
    model.zero_grad()
    trainer = trainer_for(model, tmp_path, kd_alpha=0.3, kd_chunk=chunk)
    loss = trainer.compute_loss(model, dict(batch))
    loss.backward()
    got = grads(model)
    assert loss.item() == pytest.approx(want_loss, abs=1e-5)
    assert set(got) == set(want)
    head = "model.embed_tokens.weight" if tied else "lm_head.weight"
    assert head in got and "model.layers.0.self_attn.q_proj.weight" in got
    for name in want:
        assert torch.allclose(got[name], want[name], rtol=0, atol=1e-5), (name, (got[name] - want[name]).abs().max())
    assert len(trainer._parts["kd_loss"]) == len(trainer._parts["ce_loss"]) == 1  # still logged


def test_trainer_loss_with_lora_equals_the_full_logits(tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_model("qwen2", False), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    with torch.no_grad():  # B starts at zero: give the adapters a value so every gradient is non-trivial
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    batch = tiny_batch()
    full_logits_loss(model, batch, 0.6).backward()
    want = grads(model)
    model.zero_grad()
    trainer_for(model, tmp_path, kd_alpha=0.6, kd_chunk=5).compute_loss(model, dict(batch)).backward()
    got = grads(model)
    assert set(got) == set(want) and all("lora_" in name for name in got)
    for name in want:
        assert torch.allclose(got[name], want[name], rtol=0, atol=1e-5), name


def test_gradient_accumulation_averages_the_micro_batches(tmp_path):
    """4 identical rows, one step: 4 rows at once, or 2 micro-batches of 2, log the same loss (the Trainer
    summed the micro-batches' means before LogitKDTrainer.loss_is_scaled_for_ga)."""
    from datasets import Dataset
    from transformers import TrainingArguments

    from distill.training.kd import Collator, kd_trainer_class

    one = tiny_batch(lengths=(12,))
    row = {key: value[0].tolist() for key, value in one.items() if key != "attention_mask"}
    ds = Dataset.from_dict({key: [value] * 4 for key, value in row.items()})
    logged = []
    for batch, accumulate in ((4, 1), (2, 2)):
        args = TrainingArguments(
            output_dir=str(tmp_path / str(batch)), use_cpu=True, report_to="none", remove_unused_columns=False,
            max_steps=1, per_device_train_batch_size=batch, gradient_accumulation_steps=accumulate,
            learning_rate=0.0, logging_steps=1, save_strategy="no",
        )  # fmt: skip
        trainer = kd_trainer_class()(
            model=tiny_model("llama", True), args=args, train_dataset=ds, data_collator=Collator(0), kd_alpha=0.5
        )
        trainer.train()
        logged.append(next(h for h in trainer.state.log_history if "loss" in h))
    assert logged[0]["loss"] == pytest.approx(logged[1]["loss"], rel=1e-3)
    assert logged[0]["kd_loss"] == pytest.approx(logged[1]["kd_loss"], rel=1e-3)


def test_models_that_scale_their_logits_are_refused(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from distill.training import kd

    monkeypatch.setattr(kd, "load_kd_rows", lambda *a, **k: [])
    monkeypatch.setattr(kd, "checks_before_loading", lambda cfg: None)
    monkeypatch.setattr(kd, "resolve_model", lambda spec: spec)
    monkeypatch.setattr(kd.AutoTokenizer, "from_pretrained", lambda *a, **k: SimpleNamespace())
    monkeypatch.setattr(kd, "configure_tokenizer", lambda *a, **k: None)
    monkeypatch.setattr(kd, "check_positions", lambda *a, **k: None)
    monkeypatch.setattr(kd, "row_lengths", lambda *a, **k: [])
    monkeypatch.setattr(kd, "apply_length_policy", lambda rows, *a, **k: (rows, SimpleNamespace(summary=dict)))
    monkeypatch.setattr(
        kd,
        "build_examples",
        lambda *a, **k: ([], {"top_k": 0, "same_tokenizer": True, "coverage": 0.0, "mapped_teacher_mass": 0.0}),
    )
    model = SimpleNamespace(config=SimpleNamespace(final_logit_softcapping=30.0))
    monkeypatch.setattr(kd, "load_student", lambda *a, **k: model)
    cfg = build(TrainConfig, {"method": "logit-kd", "data": str(tmp_path), "output": str(tmp_path / "out")})
    with pytest.raises(DistillError, match="final_logit_softcapping.*--method sft"):
        kd.prepare(cfg)


@pytest.mark.parametrize("weights", ["float32", "bfloat16"])
def test_a_training_step_under_bf16_mixed_precision(tmp_path, weights):
    """bf16: true, as the recipes set it: accelerate runs the forward under autocast and returns its outputs
    as fp32 copies; the loss takes the decoder's own hidden states and runs the head under the same autocast."""
    import torch
    from datasets import Dataset
    from transformers import TrainingArguments

    from distill.training.kd import Collator, kd_trainer_class

    batch = tiny_batch(lengths=(14, 14))
    rows = {key: [value[i].tolist() for i in range(2)] for key, value in batch.items() if key != "attention_mask"}
    model = tiny_model("qwen2", False).to(getattr(torch, weights))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        want = full_logits_loss(model, batch, 0.5).item()
    args = TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to="none", remove_unused_columns=False, max_steps=1,
        per_device_train_batch_size=2, learning_rate=0.0, logging_steps=1, save_strategy="no", bf16=True,
    )  # fmt: skip
    trainer = kd_trainer_class()(
        model=model, args=args, train_dataset=Dataset.from_dict(rows), data_collator=Collator(0), kd_alpha=0.5
    )
    trainer.train()
    logged = next(h for h in trainer.state.log_history if "loss" in h)
    assert logged["loss"] == pytest.approx(want, rel=2e-2)
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_kd_recipe_headers_offer_only_what_logit_kd_does(capsys):
    """Every recipes/logit-kd header: the command, the hardware, that it has not run on a GPU, no QLoRA (kd.prepare
    refuses it) and no Liger setting (kd.prepare drops it), and distill plan's figure as quoted."""
    import re

    from distill.cli import main
    from distill.common.config import load_yaml
    from distill.common.resources import RECIPES

    for path in sorted((RECIPES / "logit-kd").glob("*.yaml")):
        header = [line for line in path.read_text().splitlines() if line.startswith("#")]
        text = "\n".join(header)
        assert header[0].startswith("# distill train --method logit-kd --size "), path
        assert "Hardware:" in text and re.search(r"not run on a gpu|never run on a gpu", text, re.I), path
        assert "--load-in-4bit true" not in text and "QLoRA:" not in text, path
        assert "no QLoRA (--load-in-4bit is refused)" in text, path
        assert "use_liger_kernel" not in load_yaml(path), path
        for args, gib in re.findall(r"`distill plan ([^`]+)` estimates ([\d.]+) GiB", text):
            assert main(["plan", *args.split(), "--gradient-checkpointing", "on", "--json"]) == 0
            printed = json.loads(capsys.readouterr().out)
            assert printed["verdict"] == "fits", (path, args)
            assert printed["memory_gib"]["total"] == pytest.approx(float(gib), abs=0.05), (path, args)
