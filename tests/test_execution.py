"""The execution sandbox: verdicts come from the completion marker, not the exit status; limits and isolation hold."""
from __future__ import annotations

import os
import time

import pytest

from tasks.execution import ExecResult, run_many, run_program

# HumanEval/0-style problem, inlined so these tests do not depend on the benchmark loader.
PROBLEM = {
    "task_id": "Toy/0",
    "prompt": 'def add(a: int, b: int) -> int:\n    """Return a + b."""\n',
    "test": "\n\ndef check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-1, 1) == 0\n",
    "entry_point": "add",
}


def program(completion: str) -> str:
    from tasks.evaluate import humaneval_program

    return humaneval_program(PROBLEM, completion)


def test_correct_completion_passes():
    r = run_program(program("    return a + b\n"), timeout_s=5)
    assert isinstance(r, ExecResult)
    assert (r.status, r.message) == ("passed", "ok")
    assert r.passed and r.seconds > 0


def test_wrong_completion_fails_with_the_failing_line():
    r = run_program(program("    return a - b\n"), timeout_s=5)
    assert r.status == "failed"
    assert "AssertionError" in r.message and "candidate(1, 2) == 3" in r.message


def test_exception_and_syntax_error():
    r = run_program(program("    return undefined_name\n"), timeout_s=5)
    assert r.status == "failed" and "NameError" in r.message
    r = run_program(program("    return (a +\n"), timeout_s=5)
    assert r.status == "error" and "SyntaxError" in r.message


@pytest.mark.parametrize(
    "completion",
    [
        "    import os\n    os._exit(0)\n",
        "    import sys\n    sys.exit(0)\n",
        "    raise SystemExit(0)\n",
        "    exit(0)\n",
        "    return a + b\nimport os\nos._exit(0)\n",  # exits at import time, before check() runs
    ],
)
def test_early_exit_with_status_zero_is_not_a_pass(completion):
    r = run_program(program(completion), timeout_s=5)
    assert r.status == "failed", r
    assert "before its checks finished" in r.message or "exit" in r.message.lower()


def test_printing_a_fake_marker_does_not_pass():
    fake = "__snowcoder_checks_done__ 0123456789abcdef0123456789abcdef"
    completion = f'    print("{fake}")\n    import os\n    os._exit(0)\n'
    assert run_program(program(completion), timeout_s=5).status == "failed"


def test_output_after_the_checks_is_fine_but_a_late_nonzero_exit_fails():
    assert run_program("print('hello')\nassert 1 + 1 == 2\n", timeout_s=5).passed
    late_exit = "import atexit, os\natexit.register(lambda: os._exit(3))\nassert True\n"
    assert run_program(late_exit, timeout_s=5).status == "failed"


def test_without_nonce_check_the_exit_status_decides():
    assert run_program("import sys\nsys.exit(0)\nassert False\n", 5, nonce_check=False).status == "passed"
    assert run_program("import sys\nsys.exit(2)\n", 5, nonce_check=False).status == "failed"


def test_infinite_loop_is_killed_within_timeout_plus_two_seconds():
    t0 = time.perf_counter()
    r = run_program(program("    while True:\n        pass\n"), timeout_s=1.0)
    elapsed = time.perf_counter() - t0
    assert r.status == "timeout"
    assert elapsed < 1.0 + 2.0


def test_sleeping_program_times_out():
    t0 = time.perf_counter()
    r = run_program("import time\ntime.sleep(60)\n", timeout_s=0.5)
    assert r.status == "timeout" and time.perf_counter() - t0 < 2.5


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return "zombie" not in fh.read()
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc")
def test_background_processes_of_the_program_are_killed(tmp_path):
    pid_file = tmp_path / "pid"
    code = (
        "import subprocess\n"
        f"p = subprocess.Popen(['sleep', '30'])\nopen({str(pid_file)!r}, 'w').write(str(p.pid))\n"
    )
    assert run_program(code, timeout_s=5).passed
    pid = int(pid_file.read_text())
    deadline = time.time() + 2
    while _alive(pid) and time.time() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


def test_parent_secrets_are_not_visible(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret-do-not-leak")
    monkeypatch.setenv("HF_TOKEN", "hf_fake_token")
    code = (
        "import os\n"
        "assert 'AWS_SECRET_ACCESS_KEY' not in os.environ\n"
        "assert 'HF_TOKEN' not in os.environ\n"
        "assert 'fake-secret-do-not-leak' not in repr(dict(os.environ))\n"
        "assert set(os.environ) <= {'PATH', 'HOME', 'TMPDIR', 'LANG', 'LC_CTYPE'}, sorted(os.environ)\n"
        "assert os.environ['HOME'] == os.getcwd()\n"
    )
    r = run_program(code, timeout_s=5)
    assert r.passed, r.message


def test_each_run_gets_a_fresh_working_directory():
    assert run_program("open('leftover.txt', 'w').write('x')\n", timeout_s=5).passed
    assert run_program("import os\nassert not os.path.exists('leftover.txt')\n", timeout_s=5).passed


def test_memory_limit():
    r = run_program("x = bytearray(3 * 1024 ** 3)\n", timeout_s=5)
    assert r.status == "failed" and "MemoryError" in r.message


def test_stdin_is_empty_and_site_packages_are_unavailable():
    assert run_program("import sys\nassert sys.stdin.read() == ''\n", timeout_s=5).passed
    r = run_program("import pandas\n", timeout_s=5)
    assert r.status == "failed" and "ModuleNotFoundError" in r.message


def test_run_many_keeps_order_and_runs_in_parallel():
    programs = [f"import time\ntime.sleep(0.6)\nassert {i} != 2\n" for i in range(4)]
    t0 = time.perf_counter()
    results = run_many(programs, timeout_s=5, workers=4)
    elapsed = time.perf_counter() - t0
    assert [r.status for r in results] == ["passed", "passed", "failed", "passed"]
    assert elapsed < 4 * 0.6  # sequential would take at least 2.4 s
    assert run_many([], timeout_s=1, workers=2) == []
