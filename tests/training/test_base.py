"""Training's shared pieces that need no model: the SFT rows, distill's SFTConfig defaults."""

import json

import pytest

from distill.common.errors import DistillError
from distill.common.records import write_jsonl
from distill.training.base import load_sft_rows
from distill.training.config import SFT_DEFAULTS


def test_sft_rows(tmp_path):
    p = tmp_path / "kept.jsonl"
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    write_jsonl(p, [{"messages": msgs}] * 3)
    rows = load_sft_rows(tmp_path)
    assert rows[0] == {"prompt": msgs[:1], "completion": msgs[1:]}
    assert len(load_sft_rows(p, max_examples=2)) == 2
    write_jsonl(p, [{"messages": msgs[:1]}])
    with pytest.raises(DistillError, match="row 1"):
        load_sft_rows(p)
    p.write_text(json.dumps({"messages": [msgs[1], msgs[0]]}) + "\n")
    with pytest.raises(DistillError, match="last message must be the assistant"):
        load_sft_rows(p)
    p.write_text("")
    with pytest.raises(DistillError, match="no training rows"):
        load_sft_rows(p)


def test_defaults_spell_current_trl_keys():
    import dataclasses

    from trl import SFTConfig

    names = {f.name for f in dataclasses.fields(SFTConfig)}
    assert set(SFT_DEFAULTS) <= names
