"""`distill train --rehearse true` for every train recipe under recipes/ (sft, logit-kd, onpolicy), on a
random miniature of each recipe's model, and the checks it exists for: rows cut at max_length, a stop token
that never ends the labels, a model with fewer positions than max_length."""

import json
import re

import numpy as np
import pytest

from distill.cli import main
from distill.common.logprobs import TokenLogprobs, pack
from distill.common.models import ensure_embedded
from distill.common.records import write_jsonl
from distill.common.resources import RECIPES
from distill.training.config import METHODS
from distill.training.rehearse import SUBSTITUTED_ARGS, args_diff
from tests.fakes import FakeScorer

pytestmark = pytest.mark.model

RECIPE_FILES = sorted(p for m in METHODS for p in (RECIPES / m).glob("*.yaml"))


def kept_rows(n=6, words=20, logprobs=False):
    """Kept traces as `distill filter` writes them; with logprobs, the teacher's top-2 per token (packed as
    `distill generate --logprobs` stores them), in the Qwen2.5 tokenizer's ids."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(ensure_embedded("teacher"))) if logprobs else None
    rows = []
    for i in range(n):
        answer = " ".join(["We add the two numbers carefully."] * (1 + i * words // 5)) + f" So \\boxed{{{2 * i + 3}}}."
        row = {
            "messages": [
                {"role": "user", "content": f"What is {i} + {i + 3}? Put the answer in \\boxed{{}}."},
                {"role": "assistant", "content": answer},
            ]
        }
        if tok is not None:
            ids = np.array(tok(answer, add_special_tokens=False)["input_ids"], dtype=np.int64)
            top = np.stack([ids, (ids + 1) % 1000], axis=1)
            lps = np.tile(np.array([-0.1, -2.5], dtype=np.float32), (len(ids), 1))
            row["teacher_logprobs"] = pack(TokenLogprobs(ids.astype(np.int32), lps[:, 0], top.astype(np.int32), lps))
        rows.append(row)
    return rows


def rehearse(tmp_path, capsys, *argv):
    code = main(["train", "--rehearse", "true", "--output", str(tmp_path / "out"), *argv])
    return code, capsys.readouterr().out


@pytest.mark.parametrize("recipe", RECIPE_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_train_recipe_rehearses_green(tmp_path, capsys, recipe):
    method, size = recipe.parent.name, recipe.stem.rsplit("-", 1)[1]
    write_jsonl(tmp_path / "kept.jsonl", kept_rows(logprobs=method == "logit-kd"))
    nodes = {"32b": "2", "70b": "4"}.get(size, "1")  # as the recipes' headers say (16 and 32 GPUs)
    argv = ["--size", size, "--method", method, "--data", str(tmp_path / "kept.jsonl"), "--num-gpus", "8",
            "--num-nodes", nodes]  # fmt: skip
    if method == "onpolicy":
        with FakeScorer() as teacher:
            code, out = rehearse(tmp_path, capsys, *argv, "--teacher-url", teacher.url)
    else:
        code, out = rehearse(tmp_path, capsys, *argv)
    assert code == 0 and "all checks passed" in out, out
    assert "100% of rows end with the stop token" in out or method == "onpolicy"
    report = json.loads((tmp_path / "out-rehearsal.json").read_text())
    assert report["steps"]["steps"] == 2 and report["steps"]["first_loss"] is not None
    assert report["schedule"]["effective_batch"] >= 1 and report["schedule"]["total_steps"] >= 1
    if "requires_gpu: true" in recipe.read_text():
        assert report["launch"].startswith("accelerate launch --config_file") and "--rehearse" not in report["launch"]
        assert report["memory"] and report["memory"]["fits"], report["memory"]


def test_a_long_trace_set_makes_the_7b_rehearsal_report_and_drop_the_rows_it_would_cut(tmp_path, capsys):
    rows = kept_rows(4)
    long_answer = "Wait, let me verify this step again. " * 4200  # ~37k tokens: past the recipe's 32,768
    rows += [{"messages": [rows[0]["messages"][0], {"role": "assistant", "content": long_answer + "\\boxed{3}"}]}] * 2
    write_jsonl(tmp_path / "kept.jsonl", rows)
    code, out = rehearse(tmp_path, capsys, "--size", "7b", "--data", str(tmp_path / "kept.jsonl"))
    report = json.loads((tmp_path / "out-rehearsal.json").read_text())
    assert report["lengths"]["rows_over_max_length"] == 2 and report["lengths"]["max_length"] == 32768
    assert re.search(r"over max_length: 2 \(33\.3%\) -> drop: left out of training", out), out
    assert code == 0  # dropping is the default and a reported outcome, not a failure
    assert report["miniature"]["positions"] == 32768 and report["miniature"]["rope"]["rope_theta"] == 300000.0
    # the same rows with truncation: keep would train on cut answers: the rehearsal fails
    code, out = rehearse(
        tmp_path, capsys, "--size", "7b", "--data", str(tmp_path / "kept.jsonl"), "--truncation", "keep"
    )
    assert code == 1 and "would be trained cut" in out


def test_a_stop_token_that_never_ends_the_labels_fails_the_rehearsal(tmp_path, capsys):
    write_jsonl(tmp_path / "kept.jsonl", kept_rows(3))
    # the base model's own EOS is not the token its chat template (chatml-think) ends a turn with
    code, out = rehearse(
        tmp_path, capsys, "--size", "7b", "--data", str(tmp_path / "kept.jsonl"), "--eos-token", "<|endoftext|>"
    )
    assert code == 1 and "of the rows end their labels with the stop token '<|endoftext|>'" in out, out
    assert "never learns to stop" in out  # the training path's own check, in the report


def test_max_length_past_the_models_positions_fails_the_rehearsal(tmp_path, capsys):
    write_jsonl(tmp_path / "kept.jsonl", kept_rows(3))
    code, out = rehearse(
        tmp_path,
        capsys,
        "--size",
        "7b",
        "--data",
        str(tmp_path / "kept.jsonl"),
        "--set",
        "model_config.max_position_embeddings=4096",
    )  # fmt: skip  (the 7b recipe without its 32k positions: max_length 32,768 on 4,096)
    assert code == 1 and "max_length 32768 > the model's 4096 positions" in out


def test_the_rehearsal_builds_the_gpu_runs_trainer_arguments_and_substitutes_only_what_it_says(tmp_path, capsys):
    """trainer_args.json is the GPU run's SFTConfig (TRL's to_dict) with the recipe's keys as written: padding-free,
    Liger, bf16, checkpointing; the trainer the rehearsal ran differs from it only in the declared substitutions.
    The old rehearsal switched padding_free, Liger and bf16 off and wrote no such file."""
    write_jsonl(tmp_path / "kept.jsonl", kept_rows())
    code, out = rehearse(tmp_path, capsys, "--size", "7b", "--data", str(tmp_path / "kept.jsonl"))
    assert code == 0, out
    args = json.loads((tmp_path / "out-trainer_args.json").read_text())
    for key in ("padding_free", "use_liger_kernel", "bf16", "gradient_checkpointing"):
        assert args[key] is True, key
    assert args["use_cpu"] is False and args["max_length"] is None  # distill enforces max_length before TRL
    assert args["per_device_train_batch_size"] == 2 and args["gradient_accumulation_steps"] == 8
    report = json.loads((tmp_path / "out-rehearsal.json").read_text())
    differ = report["trainer_args_differ"]
    assert set(differ) <= set(SUBSTITUTED_ARGS) and differ["use_liger_kernel"] == [True, False]
    assert "padding_free" not in differ and "bf16" not in differ  # the steps ran padding-free, in bf16
    assert any("flash_attention_2 -> sdpa" in s for s in report["substitutions"])


def test_the_rehearsal_fails_where_the_gpu_run_would(tmp_path, capsys):
    """padding_free trains rows whole: truncation 'keep' cannot apply, and the GPU run stops before training. The
    old rehearsal, with padding_free switched off, passed."""
    write_jsonl(tmp_path / "kept.jsonl", kept_rows())
    code, out = rehearse(
        tmp_path, capsys, "--size", "7b", "--data", str(tmp_path / "kept.jsonl"), "--truncation", "keep"
    )
    assert code == 1 and "truncation 'keep'" in out, out


def test_an_undeclared_difference_from_the_gpu_run_fails_the_rehearsal():
    gpu = {"bf16": True, "use_cpu": False, "max_steps": -1, "padding_free": True}
    ran = {"bf16": True, "use_cpu": True, "max_steps": 2, "padding_free": False}
    differ = args_diff(gpu, ran)
    assert differ == {"max_steps": [-1, 2], "padding_free": [True, False], "use_cpu": [False, True]}
    assert [k for k in differ if k not in SUBSTITUTED_ARGS] == ["padding_free"]


def r1_teacher(tmp_path):
    """A local R1-family tokenizer folder: Qwen2.5's with <think>/</think> as added text tokens (as R1-Distill-Qwen)."""
    from transformers import AutoConfig, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(ensure_embedded("teacher")))
    tok.add_tokens(["<think>", "</think>"], special_tokens=False)
    folder = tmp_path / "r1-teacher"
    tok.save_pretrained(folder)
    AutoConfig.from_pretrained(str(ensure_embedded("teacher"))).save_pretrained(folder)
    return folder, tok


@pytest.mark.parametrize("parser", ["off", "on"])
@pytest.mark.parametrize("recipe", ["sft/7b", "logit-kd/7b", "onpolicy/1.5b"])
def test_r1_style_think_rows_rehearse_green(tmp_path, capsys, recipe, parser):
    """Rows in R1's format (<think>…</think> then a boxed answer) from an R1-family teacher whose think tags are
    added tokens. Reasoning parser off: the teacher generated the opening tag; on: its chat template put it in
    the prompt, so the stored ids start after it. Every method trains through the tags (KD coverage > 0.8)."""
    method, size = recipe.split("/")
    teacher, tok = r1_teacher(tmp_path)
    rows = []
    for i in range(6):
        body = f"Let me add {i} and {i + 3}. " * (1 + i) + f"So it is {2 * i + 3}."
        answer = f"<think>\n{body}\n</think>\n\nThe answer is \\boxed{{{2 * i + 3}}}."
        row = {"messages": [{"role": "user", "content": f"What is {i} + {i + 3}?"},
                            {"role": "assistant", "content": answer}]}  # fmt: skip
        if method == "logit-kd":
            generated = answer.removeprefix("<think>\n") if parser == "on" else answer
            ids = np.array(tok(generated, add_special_tokens=False)["input_ids"], dtype=np.int64)
            top = np.stack([ids, (ids + 1) % 1000], axis=1)
            lps = np.tile(np.array([-0.1, -2.5], dtype=np.float32), (len(ids), 1))
            row["teacher_logprobs"] = pack(TokenLogprobs(ids.astype(np.int32), lps[:, 0], top.astype(np.int32), lps))
        rows.append(row)
    write_jsonl(tmp_path / "kept.jsonl", rows)
    argv = ["--size", size, "--method", method, "--data", str(tmp_path / "kept.jsonl"), "--teacher", str(teacher)]
    if method == "onpolicy":
        with FakeScorer() as server:
            code, out = rehearse(tmp_path, capsys, *argv, "--teacher-url", server.url)
    else:
        code, out = rehearse(tmp_path, capsys, *argv)
    assert code == 0 and "all checks passed" in out, out
    if method == "logit-kd":
        coverage = re.search(r"([\d.]+)% of completion tokens get a teacher target", out)
        assert coverage and float(coverage.group(1)) > 80, out
