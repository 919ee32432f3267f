"""`distill train` around the training loop, without training: the accelerate launch command, resume
errors, the chat template / EOS check on the embedded student's tokenizer, LoRA/QLoRA settings, the model
card and the Hub push failing fast. The training itself is tested in test_train.py."""

import importlib.util
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from distill.cli import build_parser, main
from distill.common import config as C
from distill.common.errors import DistillError
from distill.common.records import write_json, write_jsonl
from distill.generation.config import GenerateConfig
from distill.training import base, launch, modelcard, sft, train
from distill.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
ROW = {
    "messages": [
        {"role": "user", "content": "What is 12 + 30?\nPlease reason step by step."},
        {"role": "assistant", "content": "<think>\n12 + 30 = 42\n</think>\nThe answer is \\boxed{42}."},
    ]
}
PAIR = {"prompt": ROW["messages"][:1], "completion": ROW["messages"][1:]}


def run_cli(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out.strip(), out.err.strip()


def assert_one_line_error(code, err, *needles):
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err


def no_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")


# --------------------------------------------------------------------------------------------------
# Launch


def cfg_and_args(argv):
    """The TrainConfig the CLI resolves from `distill train ARGV` (its recipe layer included), and the parsed args."""
    from distill.cli import COMMANDS, configured

    args = build_parser().parse_args(["train", *argv])
    return configured(COMMANDS["train"], args), args


def launched_config(cmd):
    """The resolved config a launch command hands every rank (`train --config FILE`), as the child reads it."""
    child = cmd[cmd.index("distill.cli") + 1 :]
    assert child[:2] == ["train", "--config"] and len(child) == 3, child
    cfg, _ = cfg_and_args(child[1:])
    return cfg, yaml.safe_load(Path(child[2]).read_text())


def test_launch_command_hands_every_rank_the_resolved_config_without_the_launch_keys(tmp_path):
    cfg, _ = cfg_and_args(
        ["--size", "32b", "--launcher", "zero3", "--num-gpus=8", "--data", "runs/f", "--output", str(tmp_path / "s")]
        + ["--set", "learning_rate=2.0e-5", "--set", "main_process_port=29600", "--lora-r", "16"]
    )
    assert cfg.launch.main_process_port == 29600 and cfg.lora.lora_r == 16 and cfg.sft["learning_rate"] == 2e-5
    cmd = launch.launch_command(cfg, launch.child_argv(cfg))
    assert cmd[:12] == [
        "accelerate",
        "launch",
        "--config_file",
        "recipes/accelerate/zero3.yaml" if Path.cwd() == ROOT else str(ROOT / "recipes/accelerate/zero3.yaml"),
        "--num_processes",
        "8",
        "--num_machines",
        "1",
        "--main_process_port",
        "29600",
        "-m",
        "distill.cli",
    ]
    child, written = launched_config(cmd)
    assert written["stage"] == "train" and not set(written) & set(launch.LAUNCH_KEYS)
    # every rank trains what this process resolved: the recipe, --set and flags, and no launcher of its own
    assert child.size == "32b" and child.model == cfg.model and child.data == "runs/f" and child.lora.lora_r == 16
    assert child.sft == cfg.sft and child.sft["learning_rate"] == 2e-5
    assert child.launch.launcher == "" and not child.rehearse


def test_launch_command_on_several_nodes(tmp_path):
    cfg, _ = cfg_and_args(
        ["--size", "70b", "--launcher", "fsdp", "--num-gpus", "8", "--num-nodes", "4", "--machine-rank", "3"]
        + ["--main-process-ip", "10.0.0.1", "--resume", "true", "--print-launch", "true"]
        + ["--output", str(tmp_path / "s")]
    )
    cmd = launch.launch_command(cfg, launch.child_argv(cfg))
    flags = dict(zip(cmd[2:12:2], cmd[3:12:2], strict=True))
    assert flags["--num_processes"] == "32" and flags["--num_machines"] == "4"
    assert flags["--machine_rank"] == "3" and flags["--main_process_ip"] == "10.0.0.1"
    assert flags["--config_file"].endswith("recipes/accelerate/fsdp.yaml")
    child, _ = launched_config(cmd)
    assert child.resume and child.size == "70b" and child.launch.num_nodes == 1  # every launch flag left out

    cfg.launch.main_process_ip = ""
    with pytest.raises(DistillError, match="--num-nodes 4 needs --main-process-ip"):
        launch.launch_command(cfg, ["train"])
    assert launch.launch_command(C.build(TrainConfig, {"launcher": "ddp"}), ["train"], gpus_here=4)[5] == "4"
    with pytest.raises(DistillError, match="pass --num-gpus"):
        launch.launch_command(C.build(TrainConfig, {"launcher": "ddp"}), ["train"], gpus_here=0)


def test_print_launch_prints_the_command_without_a_gpu(capsys, tmp_path):
    argv = ["train", "--size", "7b", "--launcher", "zero3", "--num-gpus", "8", "--print-launch", "true"]
    code, out, err = run_cli([*argv, "--data", str(tmp_path / "kept.jsonl"), "--output", str(tmp_path / "s")], capsys)
    assert code == 0, err
    cmd = shlex.split(out)
    assert cmd[:2] == ["accelerate", "launch"] and "recipes/accelerate/zero3.yaml" in cmd[3]
    child, _ = launched_config(cmd)
    assert child.size == "7b" and child.data == str(tmp_path / "kept.jsonl") and child.model == "Qwen/Qwen2.5-Math-7B"


def test_launcher_without_gpu_is_a_clear_error(capsys):
    no_gpu()
    code, _, err = run_cli(["train", "--size", "32b", "--launcher", "zero3", "--num-gpus", "8"], capsys)
    assert_one_line_error(code, err, "--launcher zero3 needs CUDA GPUs", "--print-launch")
    code, _, err = run_cli(["train", "--print-launch", "true"], capsys)
    assert_one_line_error(code, err, "--print-launch", "--launcher")
    code, _, err = run_cli(["train", "--launcher", "horovod"], capsys)
    assert_one_line_error(code, err, "launcher", "zero3", "horovod")


def test_inside_a_launch_it_trains_instead_of_launching_again(monkeypatch):
    assert not launch.inside_launch({})
    assert launch.inside_launch({"LOCAL_RANK": "0"}) and launch.inside_launch({launch.LAUNCHED_ENV: "1"})
    ran = []
    monkeypatch.setattr(train, "train", lambda cfg: ran.append(cfg))
    monkeypatch.setenv("LOCAL_RANK", "0")
    cfg, _ = cfg_and_args(["--launcher", "ddp", "--num-gpus", "2"])
    assert train.run(cfg) == 0 and ran == [cfg]


def test_launch_on_a_gpu_machine_checks_first_then_runs_the_command(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "has_cuda", lambda: True)
    monkeypatch.setattr(base, "has_cuda", lambda: True)
    for key in ("LOCAL_RANK", "WORLD_SIZE", "ACCELERATE_MIXED_PRECISION", launch.LAUNCHED_ENV):
        monkeypatch.delenv(key, raising=False)
    ran = []
    monkeypatch.setattr(train, "execute", lambda cmd: ran.append(cmd) or 5)
    cfg, _ = cfg_and_args(
        ["--launcher", "ddp", "--num-gpus", "2", "--data", str(tmp_path), "--output", str(tmp_path / "s")]
    )
    with pytest.raises(DistillError, match="does not exist"):  # checked once here, not in every process
        train.run(cfg)
    write_jsonl(tmp_path / "kept.jsonl", [ROW])
    assert train.run(cfg) == 5 and ran[0][:2] == ["accelerate", "launch"]  # its exit code comes back
    assert ran[0][ran[0].index("--num_processes") + 1] == "2"
    if importlib.util.find_spec("deepspeed") is None:
        cfg.launch.launcher = "zero3"
        with pytest.raises(DistillError, match="pip install deepspeed, or use --launcher fsdp"):
            train.run(cfg)


def test_execute_returns_the_exit_code_and_forwards_sigterm(tmp_path):
    assert launch.execute([sys.executable, "-c", "raise SystemExit(3)"]) == 3
    assert launch.execute([sys.executable, "-c", "import os; os.kill(os.getpid(), 9)"]) == 128 + 9

    ready = tmp_path / "ready"
    child = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\n"
        "open(sys.argv[1], 'w').close()\n"
        "time.sleep(60)\n"
    )
    ours = signal.getsignal(signal.SIGTERM)

    def terminate_us():  # like Slurm's time limit: SIGTERM to distill, which must pass it on
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if ready.exists() and signal.getsignal(signal.SIGTERM) is not ours:
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.05)

    threading.Thread(target=terminate_us, daemon=True).start()
    start = time.monotonic()
    assert launch.execute([sys.executable, "-c", child, str(ready)]) == 7
    assert time.monotonic() - start < 30
    assert signal.getsignal(signal.SIGTERM) is ours  # restored


# --------------------------------------------------------------------------------------------------
# Resume


def test_resume_errors(tmp_path, capsys):
    write_jsonl(tmp_path / "kept.jsonl", [ROW])
    out = tmp_path / "student"
    argv = ["train", "--data", str(tmp_path), "--output", str(out)]
    code, _, err = run_cli([*argv, "--resume", "true"], capsys)
    assert_one_line_error(code, err, "--resume: no checkpoint in", "save_strategy 'no'", "without --resume")

    (out / "checkpoints" / "checkpoint-4").mkdir(parents=True)
    (out / "checkpoints" / "checkpoint-4" / "trainer_state.json").write_text("{}")
    (out / "checkpoints" / "checkpoint-12").mkdir()  # numerically last, but its save never finished
    code, _, err = run_cli([*argv, "--resume", "true"], capsys)
    assert_one_line_error(code, err, "checkpoint-12 is incomplete", "delete it")
    code, _, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, "holds checkpoints of an earlier run (last: checkpoint-12)", "--resume true")

    (out / "checkpoints" / "checkpoint-12" / "trainer_state.json").write_text("{}")
    cfg = TrainConfig(data=str(tmp_path), output=str(out), resume=True)
    assert base.resume_checkpoint(cfg) == str(out / "checkpoints" / "checkpoint-12")


def test_gpu_recipes_save_checkpoints_and_set_the_stop_token():
    for path in sorted((ROOT / "recipes" / "sft").glob("*.yaml")):
        data = C.load_yaml(path)
        cfg = C.build(TrainConfig, data, source=str(path), extra=train.sft_fields())
        header = path.read_text().splitlines()[:4]
        assert any("Hardware:" in line or "CPU" in line for line in header), path
        if not cfg.requires_gpu:
            continue
        assert cfg.sft["save_strategy"] in ("steps", "epoch") and cfg.sft["save_total_limit"] >= 1, path
        assert cfg.sft.get("save_steps", 0) > 0 or cfg.sft["save_strategy"] == "epoch", path
        assert cfg.eos_token and base.resolve_chat_template(cfg.chat_template).is_file(), path
        assert "warmup_ratio" not in data and 0 < cfg.sft["warmup_steps"] < 1, path
    template = (ROOT / "recipes" / "chat_templates" / "chatml-think.jinja").read_text()
    assert "<|im_end|>" in template


# --------------------------------------------------------------------------------------------------
# Chat template and EOS


@pytest.fixture
def tokenizer(student_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(student_path)


def test_loss_covers_the_answer_and_its_eos_not_the_prompt(tokenizer):
    base.configure_tokenizer(tokenizer, TrainConfig(), "student")
    ids, labels = base.supervised_example(tokenizer, PAIR)
    start = next(i for i, label in enumerate(labels) if label != -100)
    prompt_text = tokenizer.apply_chat_template(PAIR["prompt"], tokenize=False, add_generation_prompt=True)
    assert tokenizer.decode(ids[:start]) == prompt_text  # every prompt token is -100
    assert all(label == -100 for label in labels[:start]) and labels[start:] == ids[start:]
    assert tokenizer.decode(labels[start:]) == ROW["messages"][1]["content"] + "<|im_end|>\n"
    base.check_stop_token(tokenizer, labels)  # <|im_end|> is the eos; the newline after it is ignored


def test_a_base_tokenizer_eos_is_caught_with_the_fix(tokenizer):
    # A base model's tokenizer: eos <|endoftext|>, while the chat template ends turns with <|im_end|>.
    base.configure_tokenizer(tokenizer, TrainConfig(eos_token="<|endoftext|>"), "student")
    _, labels = base.supervised_example(tokenizer, PAIR)
    with pytest.raises(DistillError) as e:
        base.check_stop_token(tokenizer, labels)
    msg = str(e.value)
    assert "\n" not in msg and "never learns to stop" in msg and "'<|endoftext|>'" in msg
    assert "set eos_token: '<|im_end|>'" in msg

    # The shipped ChatML template with eos_token <|im_end|>: what the base-model recipes set.
    base.configure_tokenizer(tokenizer, TrainConfig(chat_template="chatml-think", eos_token="<|im_end|>"), "s")
    _, labels = base.supervised_example(tokenizer, PAIR)
    base.check_stop_token(tokenizer, labels)
    assert tokenizer.eos_token == "<|im_end|>" and "You are a helpful" not in tokenizer.chat_template


def test_a_template_without_an_end_token_is_caught(tokenizer, tmp_path):
    bare = tmp_path / "bare.jinja"
    bare.write_text(
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    base.configure_tokenizer(tokenizer, TrainConfig(chat_template=str(bare)), "student")
    _, labels = base.supervised_example(tokenizer, PAIR)
    with pytest.raises(DistillError, match="set chat_template to one that ends each assistant turn"):
        base.check_stop_token(tokenizer, labels)
    with pytest.raises(DistillError, match="not a token of student's tokenizer"):
        base.configure_tokenizer(tokenizer, TrainConfig(eos_token="<|eot_id|>"), "student")
    with pytest.raises(DistillError, match="chatml-think"):
        base.resolve_chat_template("chatml-thinking")


def test_stop_token_error_comes_before_loading_the_model(tmp_path, capsys):
    write_jsonl(tmp_path / "kept.jsonl", [ROW])
    argv = ["train", "--data", str(tmp_path), "--output", str(tmp_path / "s"), "--eos-token", "<|endoftext|>"]
    start = time.monotonic()
    code, _, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, "never learns to stop", "--eos-token '<|im_end|>'")
    assert time.monotonic() - start < 60
    assert not (tmp_path / "s" / "model.safetensors").exists()


@pytest.mark.model
def test_trl_tokenizes_the_training_rows_the_same_way(tmp_path, student_path):
    """The check's tokenization against the SFTTrainer's own: same ids, prompt masked, eos supervised."""
    write_jsonl(tmp_path / "kept.jsonl", [ROW, ROW])
    cfg = TrainConfig(model=student_path, data=str(tmp_path), output=str(tmp_path / "s"), sft={"bf16": False})
    prep = sft.prepare(cfg)
    assert prep.checked_rows == 2
    example = prep.trainer.train_dataset[0]
    ids, labels = base.supervised_example(prep.tokenizer, PAIR)
    assert example["input_ids"] == ids and example["labels"] == labels
    assert prep.model.generation_config.eos_token_id in (2, [2])


@pytest.mark.model
def test_a_base_model_student_gets_the_stop_token_in_its_generation_config(tmp_path, student_path, capsys):
    """The embedded student made to look like a base model (eos <|endoftext|>, as Qwen2.5-Math's tokenizer):
    without eos_token the run stops before loading weights; with it, TRL's data ends answers with
    <|im_end|> and the generation config lists it first, so vLLM stops there."""
    base = tmp_path / "base"
    base.mkdir()
    for f in Path(student_path).iterdir():
        (base / f.name).symlink_to(f)
    for name, key, value in [
        ("tokenizer_config.json", "eos_token", "<|endoftext|>"),
        ("config.json", "eos_token_id", 0),
    ]:
        data = json.loads((base / name).read_text())
        (base / name).unlink()
        (base / name).write_text(json.dumps({**data, key: value}))
    (base / "generation_config.json").unlink()
    (base / "generation_config.json").write_text(json.dumps({"eos_token_id": 0, "bos_token_id": 1}))
    write_jsonl(tmp_path / "kept.jsonl", [ROW])

    argv = ["train", "--model", str(base), "--data", str(tmp_path), "--output", str(tmp_path / "s")]
    code, _, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, "not with the EOS token '<|endoftext|>'", "--eos-token '<|im_end|>'")

    cfg = TrainConfig(model=str(base), data=str(tmp_path), output=str(tmp_path / "s"), sft={"bf16": False})
    cfg.chat_template, cfg.eos_token = "chatml-think", "<|im_end|>"
    prep = sft.prepare(cfg)
    assert prep.checked_rows == 1 and prep.tokenizer.eos_token == "<|im_end|>"
    assert prep.model.generation_config.eos_token_id == [2, 0] and prep.model.config.eos_token_id == 2
    labels = prep.trainer.train_dataset[0]["labels"]
    assert [t for t in labels if t != -100][-2:] == [2, 198]  # <|im_end|> and the template's newline


# --------------------------------------------------------------------------------------------------
# LoRA / QLoRA settings


def test_lora_settings(capsys):
    cfg = C.build(TrainConfig, {"lora_r": 8, "lora_target_modules": "q_proj, v_proj"})
    lora = base.lora_config(cfg)
    assert lora.r == 8 and lora.lora_alpha == 16 and set(lora.target_modules) == {"q_proj", "v_proj"}
    assert base.lora_config(C.build(TrainConfig, {"lora_r": 4, "lora_alpha": 4})).target_modules == "all-linear"
    with pytest.raises(DistillError, match="'merge_lora' needs LoRA"):
        C.build(TrainConfig, {"merge_lora": True})
    with pytest.raises(DistillError, match="'load_in_4bit' needs LoRA"):
        C.build(TrainConfig, {"load_in_4bit": True})
    no_gpu()
    code, _, err = run_cli(["train", "--lora-r", "16", "--load-in-4bit", "true"], capsys)
    assert_one_line_error(code, err, "load_in_4bit (QLoRA) needs CUDA GPUs", "drop --load-in-4bit")


# --------------------------------------------------------------------------------------------------
# Model card and Hub push


def make_student(tmp_path: Path, adapter: bool = False) -> Path:
    """A `distill train` output folder with the records a real run writes (weights replaced by a stub),
    trained on a filter folder whose report and generate config are still on disk."""
    gen = tmp_path / "gen"
    C.save(C.build(GenerateConfig, {"teacher": "deepseek-ai/DeepSeek-R1", "max_tokens": 32768}), gen)
    filtered = tmp_path / "filtered"
    write_jsonl(filtered / "kept.jsonl", [{**ROW, "teacher": "DeepSeek-R1"}] * 3)
    write_json(filtered / "report.json", {"total": 640, "kept": 349, "pass_rate": 0.5453, "input": str(gen)})
    out = tmp_path / "student"
    cfg = C.build(
        TrainConfig,
        {"model": "embedded:student", "data": str(filtered), "output": str(out), "learning_rate": 3e-5, "max_steps": 9}
        | ({"lora_r": 16} if adapter else {}),
        extra=train.sft_fields(),
    )
    C.save(cfg, out, extra={"resolved_model": "/home/someone/.cache/distill/models/smollm2-135m-instruct"})
    metrics = {"train_rows": 3, "steps": 9, "seconds": 7200.0, "first_loss": 1.25, "last_loss": 0.5}
    write_json(out / "train_metrics.json", metrics | {"world_size": 8, "distributed_type": "DEEPSPEED"})
    names = ["adapter_config.json", "adapter_model.safetensors"] if adapter else ["config.json", "model.safetensors"]
    for name in [*names, "tokenizer.json", "chat_template.jinja", "generation_config.json", "training_args.bin"]:
        (out / name).write_text("{}")
    (out / "checkpoints" / "checkpoint-9").mkdir(parents=True)
    (out / ".saving").mkdir()
    evals = tmp_path / "eval-student"
    write_json(
        evals / "results.json",
        {"model": str(out), "tasks": "builtin", "n": 150, "pass@1": 0.12, "mean_completion_tokens": 410.5}
        | {"truncated": 3, "sampling": {"temperature": 0.0, "max_tokens": 1024}},
    )
    write_json(tmp_path / "eval-other" / "results.json", {"model": "embedded:teacher", "tasks": "aime", "pass@1": 0.5})
    return out


def test_model_card_says_what_was_trained_on_what(tmp_path):
    out = make_student(tmp_path)
    card = modelcard.model_card(out, "alice/smol-distill")
    front = yaml.safe_load(card.split("---")[1])
    assert front["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and front["library_name"] == "transformers"
    for needle in [
        "# smol-distill",
        "`runs/filtered/kept.jsonl`",  # no local directory names
        "| rows trained on | 3 |",
        "`DeepSeek-R1`",
        "349 of 640 traces kept (54.5% pass rate)",
        "recipes/sft/smollm2-tiny.yaml",
        "| `learning_rate` | 3e-05 |",
        "| `max_steps` | 9 |",
        "full fine-tuning",
        "| processes | 8 (DEEPSPEED) |",
        "| sequences per optimizer step | 64 |",
        "1.25 (first step) → 0.5",
        "| builtin | 150 | 12.0% | 410.5 | 3 | temperature 0.0, max_tokens 1024 |",
        "vllm serve alice/smol-distill",
        "distill eval --model alice/smol-distill",
    ]:
        assert needle in card, needle
    assert str(tmp_path) not in card and "aime" not in card  # another model's results are not this one's
    assert [f.name for f in modelcard.files_to_upload(out)] == [
        "chat_template.jinja",
        "config.json",
        "distill_config.yaml",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "train_metrics.json",
    ]

    given = modelcard.model_card(out, "alice/smol-distill", eval_results=str(tmp_path / "eval-other"))
    assert "| aime |" in given and "| builtin |" not in given
    with pytest.raises(DistillError, match="does not exist"):
        modelcard.model_card(out, "alice/smol-distill", eval_results=str(tmp_path / "nowhere"))


def test_adapter_card_says_how_to_serve_the_adapter(tmp_path):
    card = modelcard.model_card(make_student(tmp_path, adapter=True), "alice/smol-lora")
    assert "library_name: peft" in card and "LoRA, r=16, alpha=32" in card
    assert "--enable-lora --max-lora-rank 16 --lora-modules smol-lora=./smol-lora" in card
    assert "--generation-config ./smol-lora" in card


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def hub_env(monkeypatch):
    """A fake token and no offline mode, whatever the machine's environment says."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    return hf_constants


def test_push_to_a_closed_port_fails_fast_in_one_line(tmp_path, hub_env):
    out = make_student(tmp_path)
    endpoint = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(DistillError) as e:
        modelcard.push_model(out, "alice/smol-distill", endpoint=endpoint)
    assert time.monotonic() - start < 15
    msg = str(e.value)
    assert "\n" not in msg and "push to model repo alice/smol-distill failed while creating the model repo" in msg
    assert f"cannot reach {endpoint}" in msg
    assert (out / "README.md").is_file()  # the card is written locally first


def test_bad_repo_id_fails_before_training(tmp_path, capsys):
    write_jsonl(tmp_path / "kept.jsonl", [ROW])
    argv = ["train", "--data", str(tmp_path), "--output", str(tmp_path / "s")]
    code, _, err = run_cli([*argv, "--push-to-hub", "alice/a/b"], capsys)
    assert_one_line_error(code, err, "repo id 'alice/a/b' is not valid")
    code, _, err = run_cli([*argv, "--push-to-hub", "true"], capsys)
    assert_one_line_error(code, err, "push_to_hub", "repo id")
    with pytest.raises(DistillError, match="holds no trained model"):
        modelcard.files_to_upload(tmp_path)


# --------------------------------------------------------------------------------------------------
# Slurm


def test_slurm_train_template():
    script = ROOT / "recipes" / "slurm" / "train.slurm"
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = script.read_text()
    assert text.splitlines()[1].startswith("# sbatch ") and "Hardware:" in text and "#SBATCH --nodes=" in text
    for needle in ["--launcher", "LAUNCHER:-fsdp", '--machine-rank "$SLURM_NODEID"', '--main-process-ip "$HEAD_IP"']:
        assert needle in text, needle
