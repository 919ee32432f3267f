"""The CLI surface: --help for every subcommand, every recipe loads, bad input is one line and exit 2."""

import subprocess
import sys
from pathlib import Path

import pytest

from distill.cli import build_parser, main
from distill.common import config as C
from distill.common.records import write_jsonl
from distill.generation.config import GenerateConfig

COMMANDS = ("serve", "generate", "filter", "train", "eval", "stats", "plan", "grpo")


@pytest.mark.parametrize("command", COMMANDS)
def test_help(command):
    r = subprocess.run([sys.executable, "-m", "distill.cli", command, "--help"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "--config" in r.stdout and "--set" in r.stdout


def test_push_help():
    r = subprocess.run([sys.executable, "-m", "distill.cli", "push", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--repo-id" in r.stdout, r.stderr


def test_serve_passes_flags_after_double_dash_and_parallel_sizes():
    from distill.cli import split_passthrough
    from distill.common.server import server_command

    argv, rest = split_passthrough(
        ["serve", "--tensor-parallel-size", "8", "--", "--enable-prefix-caching", "--seed", "1"]
    )
    cfg = C.from_args(C.ServeConfig, build_parser().parse_args(argv))
    cfg.extra_args += rest
    cmd = server_command(cfg, "/m", "m", 8000)
    assert cmd[cmd.index("--tensor-parallel-size") + 1] == "8" and "--pipeline-parallel-size" not in cmd
    assert cmd[-3:] == ["--enable-prefix-caching", "--seed", "1"]
    cfg = C.build(C.ServeConfig, {"pipeline_parallel_size": 2, "gpu_memory_utilization": 0.85})
    cmd = server_command(cfg, "/m", "m", 8000)
    assert cmd[cmd.index("--pipeline-parallel-size") + 1] == "2" and "--gpu-memory-utilization" in cmd


def test_bad_serve_settings_are_one_line(capsys):
    code, err = run_cli(["serve", "--tensor-parallel-size", "0"], capsys)
    assert_one_line_error(code, err, "tensor_parallel_size", "at least 1")
    code, err = run_cli(["generate", "--num-prompts", "1", "--", "--x"], capsys)
    assert_one_line_error(code, err, "only `distill serve`")


def test_a_saved_config_can_be_given_back(tmp_path, capsys):
    saved = C.save(C.build(GenerateConfig, {"num_samples": 3}), tmp_path / "run1")
    args = build_parser().parse_args(["generate", "--config", str(saved)])
    assert C.from_args(GenerateConfig, args).num_samples == 3
    code, err = run_cli(["filter", str(tmp_path), "--config", str(saved), "--output", str(tmp_path / "f")], capsys)
    assert_one_line_error(code, err, "this config is for `distill generate`")


def run_cli(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


def assert_one_line_error(code, err, *needles):
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err


def test_missing_prompt_file(tmp_path, capsys):
    code, err = run_cli(
        ["generate", "--dataset", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "g")], capsys
    )
    assert_one_line_error(code, err, "nope.jsonl", "does not exist")


def test_missing_column(tmp_path, capsys):
    p = tmp_path / "p.jsonl"
    write_jsonl(p, [{"question": "1+1?", "answer": "2"}])
    code, err = run_cli(["generate", "--dataset", str(p), "--output", str(tmp_path / "g")], capsys)
    assert_one_line_error(code, err, "no column 'problem'", "--problem-column")
    assert not (tmp_path / "g").exists()  # nothing half-written


def test_empty_dataset(tmp_path, capsys):
    p = tmp_path / "p.jsonl"
    p.write_text("")
    code, err = run_cli(["generate", "--dataset", str(p), "--output", str(tmp_path / "g")], capsys)
    assert_one_line_error(code, err, "empty")


def test_unknown_config_key(tmp_path, capsys):
    f = tmp_path / "r.yaml"
    f.write_text("num_sampels: 3\n")
    code, err = run_cli(["generate", "--config", str(f)], capsys)
    assert_one_line_error(code, err, "r.yaml", "unknown key 'num_sampels'")


def test_unknown_train_recipe_key(tmp_path, capsys):
    f = tmp_path / "t.yaml"
    f.write_text("size: tiny\nlearning_rat: 1.0e-4\n")
    code, err = run_cli(["train", "--config", str(f)], capsys)
    assert_one_line_error(code, err, "t.yaml", "unknown key 'learning_rat'")


def test_filter_missing_and_empty_input(tmp_path, capsys):
    code, err = run_cli(["filter", str(tmp_path / "none.jsonl"), "--output", str(tmp_path / "f")], capsys)
    assert_one_line_error(code, err, "none.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    code, err = run_cli(["filter", str(tmp_path / "empty.jsonl"), "--output", str(tmp_path / "f")], capsys)
    assert_one_line_error(code, err, "no rows")
    assert not (tmp_path / "f").exists()


def test_train_missing_data(tmp_path, capsys):
    code, err = run_cli(["train", "--data", str(tmp_path / "kept.jsonl"), "--output", str(tmp_path / "s")], capsys)
    assert_one_line_error(code, err, "kept.jsonl", "does not exist")


def test_gpu_size_without_gpu(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    write_jsonl(
        tmp_path / "kept.jsonl",
        [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}],
    )
    code, err = run_cli(["train", "--size", "7b", "--data", str(tmp_path), "--output", str(tmp_path / "s")], capsys)
    assert_one_line_error(code, err, "needs CUDA GPUs", "--size tiny")


def test_dead_server_url_fails_fast(tmp_path, capsys):
    import time

    start = time.monotonic()
    code, err = run_cli(
        ["generate", "--server-url", "http://127.0.0.1:9", "--num-prompts", "2", "--output", str(tmp_path / "g")],
        capsys,
    )
    assert_one_line_error(code, err, "no OpenAI-compatible server answers at http://127.0.0.1:9/v1")
    assert time.monotonic() - start < 10


def test_unknown_embedded_model(tmp_path, capsys):
    code, err = run_cli(["eval", "--model", "embedded:professor", "--output", str(tmp_path / "e")], capsys)
    assert_one_line_error(code, err, "embedded:teacher")


def test_readme_commands_exist():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
