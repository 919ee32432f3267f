"""The embedded server's dtype fits the CPU it runs on: bf16 only where the CPU has it natively."""

from distill.common.config import ServeConfig
from distill.common.server import cpu_flags, serve_dtype, server_command

AVX2_EPYC = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse sse2 avx avx2 fma\n\nprocessor\t: 1\n"
SAPPHIRE = "processor\t: 0\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"


def test_cpu_flags_are_read_from_the_first_processor(tmp_path):
    (tmp_path / "cpuinfo").write_text(AVX2_EPYC)
    assert cpu_flags(tmp_path / "cpuinfo") == {"fpu", "sse", "sse2", "avx", "avx2", "fma"}
    assert cpu_flags(tmp_path / "missing") == set()


def test_auto_is_float32_on_a_cpu_without_native_bf16_and_bf16_elsewhere(tmp_path):
    (tmp_path / "a").write_text(AVX2_EPYC)
    (tmp_path / "b").write_text(SAPPHIRE)
    dtype, why = serve_dtype("auto", cuda=False, flags=cpu_flags(tmp_path / "a"))
    assert dtype == "float32" and "no native bf16" in why
    dtype, why = serve_dtype("auto", cuda=False, flags=cpu_flags(tmp_path / "b"))
    assert dtype == "bfloat16" and "amx_bf16" in why and "avx512_bf16" in why
    assert serve_dtype("auto", cuda=True, flags=set()) == ("bfloat16", "GPU")


def test_an_explicit_dtype_is_kept_and_emulated_bf16_is_named():
    dtype, why = serve_dtype("bfloat16", cuda=False, flags={"avx2"})
    assert dtype == "bfloat16" and "emulated" in why
    assert serve_dtype("float16", cuda=False, flags={"avx2"}) == ("float16", "asked for")


def test_the_default_is_auto_and_the_command_carries_the_chosen_dtype():
    assert ServeConfig().dtype == "auto"
    cmd = server_command(ServeConfig(), "/m", "m", 8000, "float32")
    assert cmd[cmd.index("--dtype") + 1] == "float32"
