"""Sandbox and code verifier: real processes, no mocks. Hostile programs (fork bomb, memory hog, print
loop, escapes, secrets, network) must fail safely and fast, and leave nothing behind."""

import json
import os
import resource
import secrets
import socket
import time
from pathlib import Path

import pytest

from distill.verification.code_verify import extract_code, outputs_match, values_match, verify_code
from distill.verification.sandbox import STATUSES, describe_isolation, network_isolation, run_sandboxed

REPO = Path(__file__).resolve().parents[2]
MODE = network_isolation()
NETNS = MODE == "netns"
ROOT = os.geteuid() == 0
needs_netns = pytest.mark.skipif(not NETNS, reason=f"namespaces not available here ({describe_isolation()})")


def fenced(code: str, tag: str = "python") -> str:
    return f"<think>plan it</think>\nSolution:\n```{tag}\n{code.strip()}\n```\n"


def gone(uid: int | None, within: float = 5.0) -> bool:
    """True once no process of the sandbox is left. The kernel tears a killed PID namespace down on its
    own time: on a loaded machine its last processes can take a moment to exit, so this polls for `within`
    seconds (an escaped process never exits and still fails the check)."""
    deadline = time.monotonic() + within
    while leftovers(uid):
        if time.monotonic() > deadline:
            print("left over:", leftovers(uid))
            return False
        time.sleep(0.05)
    return True


def leftovers(uid: int | None) -> list[int]:
    """Live processes still running as the sandbox's private uid, or (same uid) still running the
    sandbox launcher."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry.name}/status").read_text()
            cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("State", "").split()[:1] == ["Z"]:
            continue
        real_uid = int(fields["Uid"].split()[0])
        if (uid is not None and uid != os.getuid() and real_uid == uid) or b"--distill-sandbox-launch" in cmdline:
            found.append(int(entry.name))
    return found


@pytest.fixture
def listener():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.3)
    yield srv
    srv.close()


def assert_nothing_arrived(srv: socket.socket) -> None:
    try:
        conn, _ = srv.accept()
    except TimeoutError:
        return
    conn.close()
    pytest.fail("a sandboxed program connected to the test's listener")


# --------------------------------------------------------------------------------------------------
# The sandbox


def test_isolation_mode_is_reported():
    assert MODE in ("netns", "python-shim")
    r = run_sandboxed("print('hi')")
    assert r.status == "ok" and r.stdout == "hi\n" and r.returncode == 0
    assert r.status in STATUSES
    assert r.isolation.startswith("netns" if NETNS else "python-shim")


def test_stdin_argv_exit_codes_and_runtime_errors():
    r = run_sandboxed("import sys\nprint(input()[::-1], sys.argv[1:])", "hello\n", argv=["a", "b"])
    assert (r.status, r.stdout) == ("ok", "olleh ['a', 'b']\n")
    r = run_sandboxed("import sys\nprint('partial')\nsys.exit(3)")
    assert (r.status, r.returncode, r.stdout) == ("runtime_error", 3, "partial\n")
    r = run_sandboxed("def f():\n    return 1 / 0\nf()")
    assert r.status == "runtime_error" and r.returncode == 1
    assert "ZeroDivisionError" in r.stderr and "solution.py" in r.stderr
    r = run_sandboxed("def broken(:\n    pass")
    assert r.status == "runtime_error" and "SyntaxError" in r.stderr


def test_threads_and_own_directory_work():
    # the usual competitive-programming trick for deep recursion, and writing a scratch file
    code = (
        "import sys, threading\nsys.setrecursionlimit(10**6)\nthreading.stack_size(1 << 26)\n"
        "def depth(n): return 0 if n == 0 else 1 + depth(n - 1)\n"
        "def main():\n    open('scratch.txt', 'w').write(str(depth(20000)))\n    print(open('scratch.txt').read())\n"
        "threading.Thread(target=main).start()\n"
    )
    r = run_sandboxed(code)
    assert (r.status, r.stdout) == ("ok", "20000\n")


def test_infinite_loop_times_out_within_the_wall_limit():
    t0 = time.monotonic()
    r = run_sandboxed("while True:\n    pass", wall_seconds=0.75, cpu_seconds=30)
    elapsed = time.monotonic() - t0
    assert r.status == "timeout" and r.timed_out
    assert 0.7 <= r.seconds < 2.25 and elapsed < 3.25
    assert gone(r.uid)


def test_cpu_limit_kills_a_spinning_program():
    r = run_sandboxed("while True:\n    pass", cpu_seconds=1, wall_seconds=20)
    assert r.status == "timeout" and r.cpu_exceeded and not r.timed_out
    assert r.seconds < 10


def test_memory_hog_gets_memory_status_and_the_test_process_is_unaffected():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = run_sandboxed("block = bytearray(4 * 1024**3)\nprint(len(block))", memory_mb=256)
    assert r.status == "memory" and r.memory_exceeded and r.stdout == ""
    r = run_sandboxed("xs = []\nwhile True:\n    xs.append(' ' * 10**6)", memory_mb=256, wall_seconds=20)
    assert r.status == "memory"
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB: we did not grow


def test_print_loop_is_cut_at_the_output_cap():
    t0 = time.monotonic()
    r = run_sandboxed("while True:\n    print('x' * 1000)", max_output_bytes=100_000, wall_seconds=20)
    assert r.status == "output_limit" and r.output_truncated
    assert len(r.stdout) == 100_000
    assert time.monotonic() - t0 < 15  # cut by the cap, not by the 20 s wall limit (generous: loaded machines)
    assert gone(r.uid)


def test_python_fork_bomb_and_subprocess_are_refused():
    t0 = time.monotonic()
    r = run_sandboxed("import os\nwhile True:\n    os.fork()", wall_seconds=5)
    assert r.status == "runtime_error" and "not allowed in the sandbox" in r.stderr
    r = run_sandboxed("import subprocess\nprint(subprocess.run(['id'], capture_output=True).stdout)")
    assert r.status == "runtime_error" and "not allowed in the sandbox" in r.stderr
    r = run_sandboxed("import os\nos.system('touch /tmp/distill_sandbox_system')")
    assert r.status == "runtime_error"
    assert time.monotonic() - t0 < 10
    assert gone(r.uid)


@needs_netns
def test_real_fork_bomb_through_libc_is_contained_and_leaves_no_process():
    # ctypes bypasses the Python shim: RLIMIT_NPROC (private uid) caps it, the PID namespace kills it all
    code = (
        "import ctypes, time\nlibc = ctypes.CDLL(None)\n"
        "for _ in range(100000):\n    libc.fork()\n"
        "libc.setsid()\ntime.sleep(60)\n"
    )
    t0 = time.monotonic()
    r = run_sandboxed(code, wall_seconds=2, max_processes=16)
    assert r.status == "timeout"
    assert time.monotonic() - t0 < 20  # the 2 s wall limit, plus the teardown of every fork (generous: load)
    assert gone(r.uid)
    r = run_sandboxed("print('still fine')")
    assert r.stdout == "still fine\n"


def test_secrets_in_the_environment_do_not_reach_the_code(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "secret123")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret456")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret789")
    code = "import os, json\nprint(json.dumps(dict(os.environ)))"
    r = run_sandboxed(code)
    env = json.loads(r.stdout)
    assert set(env) == {"PATH", "LANG", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE", "HOME"}
    for secret in ("secret123", "sk-secret456", "aws-secret789"):
        assert secret not in r.stdout and secret not in r.stderr


@needs_netns
def test_the_parent_process_is_invisible():
    code = "import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))"
    r = run_sandboxed(code)
    pids = json.loads(r.stdout)
    assert os.getpid() not in pids and len(pids) <= 3  # init and the code (PID namespace)


@needs_netns
def test_writes_outside_the_work_directory_do_not_happen():
    name = f"distill_sandbox_escape_{secrets.token_hex(6)}"
    targets = [f"/tmp/{name}", str(REPO / name), f"/dev/shm/{name}", f"/var/tmp/{name}"]
    code = (
        f"import os\nfor path in {targets!r}:\n"
        "    try:\n        open(path, 'w').write('x')\n        print('WROTE', path)\n"
        "    except OSError as e:\n        print('refused', e.errno)\n"
        "print(os.getcwd())\n"
    )
    try:
        r = run_sandboxed(code)
        assert "WROTE" not in r.stdout
        for path in targets:
            assert not os.path.exists(path)
        workdir = r.stdout.strip().splitlines()[-1]
        assert not os.path.exists(workdir)  # and its own directory is gone afterwards
    finally:
        for path in targets:
            if os.path.exists(path):
                os.remove(path)


@needs_netns
def test_private_files_are_not_readable(tmp_path):
    secret_files = [str(REPO / "pyproject.toml"), str(tmp_path / "secret.txt")]
    (tmp_path / "secret.txt").write_text("secret-in-tmp")
    root_secret = None
    if ROOT:
        root_secret = Path(f"/root/distill_sandbox_secret_{secrets.token_hex(6)}")
        root_secret.write_text("secret-in-root")
        root_secret.chmod(0o600)
        secret_files += [str(root_secret), "/etc/shadow"]
    code = (
        f"for path in {secret_files!r}:\n"
        "    try:\n        print('READ', path, open(path).read()[:40])\n"
        "    except OSError as e:\n        print('refused', path, type(e).__name__)\n"
    )
    try:
        r = run_sandboxed(code)
    finally:
        if root_secret is not None:
            root_secret.unlink()
    assert r.status == "ok", r.stderr
    assert "READ" not in r.stdout and "secret-in" not in r.stdout and "[project]" not in r.stdout
    if ROOT and os.path.exists("/etc/shadow"):  # outside the allow-listed root: absent, not merely unreadable
        assert "refused /etc/shadow FileNotFoundError" in r.stdout
        assert r.uid != 0


def test_network_connection_to_a_local_listener_never_arrives(listener):
    port = listener.getsockname()[1]
    code = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')"
    r = run_sandboxed(code)
    assert r.status == "runtime_error" and "connected" not in r.stdout
    assert_nothing_arrived(listener)


def test_python_shim_mode_blocks_sockets_and_fork(listener):
    port = listener.getsockname()[1]
    code = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')"
    r = run_sandboxed(code, isolation="shim")
    assert r.status == "runtime_error" and r.isolation.startswith("python-shim")
    assert "not allowed in the sandbox" in r.stderr
    r = run_sandboxed(
        f"import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', {port}))\nprint('connected')", isolation="shim"
    )
    assert r.status == "runtime_error" and "connected" not in r.stdout
    r = run_sandboxed("import ctypes", isolation="shim")
    assert r.status == "runtime_error"
    assert_nothing_arrived(listener)


@needs_netns
def test_code_cannot_create_namespaces_or_remount():
    code = (
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "print('unshare', libc.unshare(0x10000000 | 0x00020000))\n"
        "print('remount', libc.mount(None, b'/tmp', None, 32 | 4096, None))\n"
        "print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])\n"
    )
    r = run_sandboxed(code)
    assert r.stdout.split() == ["unshare", "-1", "remount", "-1", "0000000000000000"]


def test_disk_use_is_bounded():
    r = run_sandboxed("open('big', 'wb').write(b'x' * (64 << 20))", max_file_mb=8)
    assert r.status == "runtime_error" and "File too large" in r.stderr


# --------------------------------------------------------------------------------------------------
# Code extraction and comparison


def test_extract_code_takes_the_last_python_block_of_the_final_part():
    text = (
        "<think>draft:\n```python\nprint('draft')\n```\n</think>\n"
        "First try:\n```python\nprint(1)\n```\nBetter:\n```py\nprint(2)\n```\nSample output:\n```\n2\n```\n"
        "```bash\necho hi\n```\n"
    )
    assert extract_code(text) == "print(2)\n"
    assert extract_code("</think>\n```\nprint(3)\n```") == "print(3)\n"  # only untagged blocks
    assert extract_code("<think>```python\nprint(1)\n```") is None  # unclosed think: truncated
    assert extract_code("</think>no code here") is None
    assert extract_code("</think>```python\nprint(1)\n") is None  # unclosed fence
    assert extract_code("</think>\n  ```python\n  x = 1\n  print(x)\n  ```") == "x = 1\nprint(x)\n"


def test_output_and_value_comparison():
    assert outputs_match("3\n4\n", "3   \n4\n\n\n")
    assert outputs_match("0.333333", "0.3333333333")
    assert outputs_match("1 2\n3", "1 2 3")
    assert not outputs_match("3", "3.5")
    assert not outputs_match("YES", "yes")
    assert not outputs_match("10000000000000000001", "10000000000000000000")
    assert values_match([0, 1], (0, 1)) and values_match({"a": [1.0]}, {"a": [1]})
    assert values_match(0.1 + 0.2, 0.3) and not values_match(True, 1) and not values_match([1], [1, 2])


# --------------------------------------------------------------------------------------------------
# The code verifier

STDIO = {"inputs": ["1 2\n", "3 4\n", "10 -5\n"], "outputs": ["3\n", "7", "5\n\n"]}
SUM = "a, b = map(int, input().split())\nprint(a + b)"


def test_verify_stdin_stdout_correct_and_wrong():
    v = verify_code(fenced(SUM), STDIO)
    assert (v.correct, v.reason) == (True, "correct") and "input()" in v.extracted
    cases = [{"input": i, "output": o} for i, o in zip(STDIO["inputs"], STDIO["outputs"], strict=True)]
    assert verify_code(fenced(SUM), json.dumps(cases)).reason == "correct"
    wrong = "a, b = map(int, input().split())\nprint(a + b if a < 5 else a - b)"
    assert verify_code(fenced(wrong), STDIO).reason == "wrong_answer: case 3/3"
    assert verify_code(fenced("print(1 / 0)"), STDIO).reason == "runtime_error: case 1/3"


def test_verify_function_calls_with_a_solution_class_and_a_function():
    tests = {"fn_name": "twoSum", "inputs": [[[2, 7, 11, 15], 9], [[3, 2, 4], 6]], "outputs": [[0, 1], [1, 2]]}
    method = """
class Solution:
    def twoSum(self, nums: List[int], target: int) -> List[int]:
        print("debug output is ignored")
        seen = {}
        for i, x in enumerate(nums):
            if target - x in seen:
                return (seen[target - x], i)
            seen[x] = i
"""
    assert verify_code(fenced(method), tests).reason == "correct"
    function = "def twoSum(nums, target):\n    return [0, 1]"
    assert verify_code(fenced(function), tests).reason == "wrong_answer: case 2/2"
    lcb = {"fn_name": "twoSum", "cases": [{"input": "[3,3]\n6", "output": "[0, 1]", "testtype": "functional"}]}
    assert verify_code(fenced(method), lcb).reason == "correct"
    apps = {"fn_name": "double", "inputs": [[1], [2.5]], "outputs": [[2], [5.0]]}
    assert verify_code(fenced("def double(x):\n    return x * 2"), apps).reason == "correct"
    assert verify_code(fenced("def other(): pass"), tests).reason == "runtime_error: no function twoSum"
    crash = "def twoSum(nums, target):\n    return nums[10]"
    assert verify_code(fenced(crash), tests).reason == "runtime_error: case 1/2"


def test_verify_limits_timeouts_and_memory():
    t0 = time.monotonic()
    v = verify_code(fenced("while True:\n    pass"), STDIO, wall_seconds=0.5, cpu_seconds=1)
    assert v.reason == "timeout: case 1/3" and not v.correct
    tests = {"fn_name": "f", "inputs": [[1], [2], [3]], "outputs": [1, 2, 3]}
    slow = """
def f(x):
    while x == 2:
        try:
            pass
        except Exception:  # the per-case timer is not an Exception
            pass
    return x
"""
    assert verify_code(fenced(slow), tests, wall_seconds=0.5, cpu_seconds=1).reason == "timeout: case 2/3"
    hog = "def f(x):\n    return len(bytearray(4 * 1024**3))"
    assert verify_code(fenced(hog), tests, memory_mb=256).reason == "memory: case 1/3"
    v = verify_code(fenced("while True:\n    pass"), STDIO, wall_seconds=5, cpu_seconds=5, total_seconds=0.75)
    assert v.reason in ("timeout: case 1/3", "timeout: total")
    assert time.monotonic() - t0 < 15


def test_verify_truncated_no_code_and_bad_tests():
    assert verify_code("<think>still thinking", STDIO).reason == "truncated"
    assert verify_code(fenced(SUM), STDIO, finish_reason="length").reason == "truncated"
    assert verify_code("</think>The answer is 42.", STDIO).reason == "no_code"
    assert verify_code(fenced(SUM, tag="text"), STDIO).reason == "no_code"
    for bad in ({"inputs": ["1"], "outputs": []}, [], "{not json", {"fn_name": "f", "cases": [{"input": "[1"}]}):
        assert verify_code(fenced(SUM), bad).reason == "bad_tests"
    with pytest.raises(TypeError):
        verify_code(fenced(SUM), STDIO, wall_secs=1)
