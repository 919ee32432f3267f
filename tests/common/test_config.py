"""Config: defaults < YAML < --set < flags, unknown keys named with their file, resolved config saved."""

import argparse

import pytest
import yaml

from distill.common import config as C
from distill.common.errors import DistillError
from distill.curation.config import FilterConfig
from distill.generation.config import GenerateConfig
from distill.training.config import TrainConfig


def parse(cls, argv):
    p = argparse.ArgumentParser()
    C.add_arguments(p, cls)
    return p.parse_args(argv)


def test_defaults_when_nothing_given():
    cfg = C.from_args(GenerateConfig, parse(GenerateConfig, []))
    assert cfg == GenerateConfig()
    assert cfg.top_p == 1.0 and cfg.temperature == 0.6
    assert "\\boxed{{}}" in cfg.prompt_template  # format-escaped braces


def test_precedence_default_yaml_set_flag(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text(yaml.safe_dump({"num_samples": 3, "temperature": 0.9, "max_tokens": 100, "serve": {"port": 9000}}))
    args = parse(
        GenerateConfig,
        ["--config", str(f), "--set", "max_tokens=200", "--set", "serve.max_model_len=8192", "--temperature", "0.2"],
    )
    cfg = C.from_args(GenerateConfig, args)
    assert cfg.num_samples == 3  # YAML over default
    assert cfg.max_tokens == 200  # --set over YAML
    assert cfg.temperature == 0.2  # flag over YAML
    assert cfg.serve.port == 9000 and cfg.serve.max_model_len == 8192  # nested merge keeps both
    assert isinstance(cfg.serve, C.ServeConfig)


def test_unknown_yaml_key_names_key_and_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("num_samples: 2\ntemprature: 0.5\n")
    with pytest.raises(DistillError, match=r"bad\.yaml: unknown key 'temprature'"):
        C.from_args(GenerateConfig, parse(GenerateConfig, ["--config", str(f)]))


def test_unknown_nested_key(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("serve:\n  gpu_mem: 3\n")
    with pytest.raises(DistillError, match="unknown key 'gpu_mem'"):
        C.from_args(GenerateConfig, parse(GenerateConfig, ["--config", str(f)]))


def test_unknown_set_key():
    with pytest.raises(DistillError, match=r"--set: unknown key 'nope'"):
        C.from_args(FilterConfig, parse(FilterConfig, ["--set", "nope=1"]))


def test_type_errors_name_the_key(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("num_samples: many\n")
    with pytest.raises(DistillError, match="key 'num_samples': expected an integer"):
        C.from_args(GenerateConfig, parse(GenerateConfig, ["--config", str(f)]))
    with pytest.raises(DistillError, match="expected true or false"):
        C.build(TrainConfig, {"requires_gpu": "maybe"})


def test_flags_are_typed():
    cfg = C.from_args(GenerateConfig, parse(GenerateConfig, ["--num-samples", "7", "--levels", "1", "2"]))
    assert cfg.num_samples == 7 and cfg.levels == [1, 2]


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(DistillError, match="does not exist"):
        C.load_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(DistillError, match="not valid YAML"):
        C.load_yaml(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(DistillError, match="mapping"):
        C.load_yaml(bad)


def test_extra_keys_pass_through_to_sft():
    cfg = C.build(TrainConfig, {"learning_rate": 1e-5, "size": "7b"}, extra={"learning_rate"})
    assert cfg.sft == {"learning_rate": 1e-5} and cfg.size == "7b"


def test_save_roundtrip(tmp_path):
    cfg = GenerateConfig(num_samples=5)
    path = C.save(cfg, tmp_path)
    data = yaml.safe_load(path.read_text())
    assert data["stage"] == "generate" and data["num_samples"] == 5 and data["serve"]["max_model_len"] == 4096
    data.pop("stage")
    assert C.build(GenerateConfig, data) == cfg  # the saved config rebuilds the same run


def test_exponent_without_dot_is_a_number(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("learning_rate: 1e-5\nnested: {lr: 2E-3, name: e5}\n")
    data = C.load_yaml(f)
    assert data["learning_rate"] == 1e-5 and data["nested"] == {"lr": 2e-3, "name": "e5"}
    assert C.parse_overrides(["learning_rate=3e-6", "tag=1e"]) == {"learning_rate": 3e-6, "tag": "1e"}
