"""Bad values end in one clear line before any work (issue: hard to break, point 5): each case used to be a
traceback after the model loaded, or a run that exited 0 having rejected every row."""

import pytest

from distill.cli import main


def one_line_error(capsys, argv, *needles):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


@pytest.mark.parametrize("value", ["inf", "1e999", "-1", "0"])
def test_filter_timeouts_must_be_finite_and_positive(tmp_path, capsys, value):
    (tmp_path / "traces.jsonl").write_text("")
    for flag in ("--timeout", "--code-timeout"):
        one_line_error(capsys, ["filter", str(tmp_path), "--output", str(tmp_path / "f"), flag, value],
                       flag, "finite")  # fmt: skip
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [("learning_rate", "-1", "learning_rate"), ("learning_rate", "inf", "learning_rate"),
     ("per_device_train_batch_size", "0", "per_device_train_batch_size"),
     ("gradient_accumulation_steps", "0", "gradient_accumulation_steps")],
)  # fmt: skip
def test_train_numbers_are_checked_before_any_weights_load(tmp_path, capsys, key, value, needle):
    (tmp_path / "kept.jsonl").write_text(
        '{"messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]}\n'
    )
    one_line_error(capsys, ["train", "--data", str(tmp_path), "--output", str(tmp_path / "s"), "--set", f"{key}={value}"],
                   needle)  # fmt: skip
    assert not (tmp_path / "s").exists()


def test_a_config_that_is_not_utf8_or_is_a_folder_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"model: caf\xe9\n")
    one_line_error(capsys, ["generate", "--config", str(bad)], "bad.yaml", "not UTF-8")
    one_line_error(capsys, ["generate", "--config", str(tmp_path)], "is a folder")
