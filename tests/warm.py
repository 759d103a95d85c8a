"""Run ``python train.py …`` (and explain/score/prepare, or ``python -m …``) for the tests in a forked copy of
one warm interpreter instead of a fresh one.

Why: a fresh Python spends ≈ 8 s importing torch, torchvision and Lightning (Lightning's version checks import
torchmetrics, which imports torchvision and torch._dynamo) before a script does anything; the suite starts its
scripts ≈ 80 times, so that start-up was about 40 % of its time. Here a server process per pytest worker imports
those libraries once (never runs a tensor operation, so no thread pool exists when it forks) and forks a child for
every command. The child is a real separate process: its own pid and process group, the command's working folder
and environment, stdin from /dev/null, stdout/stderr to files, ``sys.argv``/``sys.path[0]`` as ``python script``
sets them, protocell's own modules imported fresh, and the interpreter's exit (non-daemon threads joined, atexit
handlers, ``SystemExit`` codes and messages, a traceback and status 1 on an uncaught exception) — without the
module teardown a fresh interpreter would then do (≈ 1.7 s with torch loaded, and nothing a command writes).

``Popen`` starts one in the background (the kill/resume and signal tests); the server forks a waiter per command and
never waits itself, so commands run at once. What it does not cover, and where that is tested cold: the
interpreter's own start-up and third-party imports in a fresh process (tests/integration/test_installed_scripts.py
runs the installed entry points; the launchers and DDP start fresh processes). ``run`` falls back to
``subprocess.run`` for any command that is not ``[sys.executable, script.py | -m module, …]`` or passes options it
does not mirror.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# imported once by the server: what every protocell script imports, without anything that starts a thread at
# import (pandas/pyarrow start jemalloc's background thread, and a fork copies no threads)
PRELOAD = (
    "numpy",
    "torch",
    "torchvision",
    "lightning.pytorch",
    "hydra",
    "omegaconf",
    "scipy.ndimage",
    "scipy.optimize",
    "scipy.stats",
    "matplotlib",
    "PIL.Image",
    "tifffile",
)

_SERVER: subprocess.Popen | None = None
_LOCK = threading.Lock()  # one request on the pipe at a time


def _server() -> subprocess.Popen:
    global _SERVER
    if _SERVER is None or _SERVER.poll() is not None:
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        _SERVER = subprocess.Popen(
            [sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        ready = _SERVER.stdout.readline()
        if ready != b"ready\n":
            raise RuntimeError(f"tests/warm.py: the warm interpreter did not start (said {ready!r})")
        atexit.register(_SERVER.kill)
    return _SERVER


def _warmable(cmd) -> bool:
    if not isinstance(cmd, list | tuple) or len(cmd) < 2 or str(cmd[0]) != sys.executable:
        return False
    if str(cmd[1]) == "-m":
        return len(cmd) >= 3
    return str(cmd[1]).endswith(".py")


class Popen:
    """``subprocess.Popen`` for a protocell script started from the warm interpreter: ``pid``, ``poll``,
    ``wait``, ``send_signal``/``terminate``/``kill``, ``returncode`` (−N when killed by signal N). ``stdout``:
    ``DEVNULL``, ``None`` (nothing kept), a path or an open file (written through its name); ``stderr``: the same
    or ``STDOUT``. ``sigint_ignored``: the command starts with SIGINT ignored, as a background job of a
    non-interactive shell does (what ``preexec_fn`` did for a fresh interpreter)."""

    def __init__(self, cmd, *, cwd=None, env=None, stdout=None, stderr=None, sigint_ignored=False):
        self.args = [str(c) for c in cmd]
        self._tmp = tempfile.TemporaryDirectory(prefix="warm-")
        self._rc = Path(self._tmp.name) / "rc"
        out = _target(stdout)
        request = {
            "argv": self.args[1:],
            "cwd": str(Path(cwd) if cwd is not None else Path.cwd()),
            "env": dict(os.environ if env is None else env),
            "out": out,
            "err": out if stderr == subprocess.STDOUT else _target(stderr),
            "rc": str(self._rc),
            "sigint_ignored": bool(sigint_ignored),
        }
        server = _server()
        with _LOCK:
            server.stdin.write(json.dumps(request).encode() + b"\n")
            server.stdin.flush()
            self.pid = int(json.loads(server.stdout.readline())["pid"])
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and self._rc.exists():
            self.returncode = int(self._rc.read_text())
            self._tmp.cleanup()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(0.01)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _target(stream) -> str | None:
    if stream is None or stream == subprocess.DEVNULL:
        return None
    if isinstance(stream, str | Path):
        return str(stream)
    if hasattr(stream, "name") and isinstance(stream.name, str):
        stream.flush()
        return stream.name
    raise ValueError(f"tests/warm.py: cannot hand {stream!r} to a forked command (a path or an open file)")


def run(cmd, *, cwd=None, env=None, capture_output=False, text=False, timeout=None, check=False, **other):
    """``subprocess.run`` for a protocell script, started from the warm interpreter (see the module's docstring)."""
    if other or not _warmable(cmd):
        return subprocess.run(
            cmd, cwd=cwd, env=env, capture_output=capture_output, text=text, timeout=timeout, check=check, **other
        )
    with tempfile.TemporaryDirectory(prefix="warm-") as tmp:
        out, err = Path(tmp) / "out", Path(tmp) / "err"
        proc = Popen(
            cmd, cwd=cwd, env=env, stdout=out if capture_output else None, stderr=err if capture_output else None
        )
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:  # like subprocess.run: kill the command (and what it started), raise
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.kill()
            proc.wait()
            raise

        def read(path: Path):
            if not capture_output:
                return None
            data = path.read_bytes() if path.exists() else b""
            return data.decode() if text else data

        done = subprocess.CompletedProcess(proc.args, code, read(out), read(err))
    if check:
        done.check_returncode()
    return done


def _serve() -> None:
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:
        print(f"tests/warm.py: {threads} threads after the imports; a fork would copy only one", file=sys.stderr)
        raise SystemExit(1)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the server never waits: its waiters are reaped for it
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    replies.write(b"ready\n")
    replies.flush()
    for line in requests:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        r, w = os.pipe()
        if os.fork() == 0:  # the waiter: forks the command, says its pid, writes its exit status when it ends
            os.close(r)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            pid = os.fork()
            if pid == 0:
                os.close(w)
                _child(request)  # never returns: the command exits as the interpreter would
            os.write(w, f"{pid}\n".encode())
            os.close(w)
            _, status = os.waitpid(pid, 0)
            rc = Path(request["rc"])
            rc.with_suffix(".tmp").write_text(str(os.waitstatus_to_exitcode(status)))
            rc.with_suffix(".tmp").rename(rc)
            os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as said:
            pid = int(said.readline())
        replies.write(json.dumps({"pid": pid}).encode() + b"\n")
        replies.flush()


def _child(request: dict) -> None:
    import runpy

    os.setpgid(0, 0)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    opened: dict = {}  # stdout and stderr to one file share one open file (one offset), as 2>&1 does
    for fd, path in ((1, request["out"]), (2, request["err"])):
        if path not in opened:
            opened[path] = (
                os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644) if path else os.open(os.devnull, 1)
            )
        os.dup2(opened[path], fd)
    for target in opened.values():
        os.close(target)
    # what a fresh interpreter writing to files has: stdout block-buffered, stderr line-buffered, utf-8
    sys.stdin = sys.__stdin__ = open(0, encoding="utf-8", closefd=False)
    sys.stdout = sys.__stdout__ = open(1, "w", encoding="utf-8", closefd=False)
    sys.stderr = sys.__stderr__ = open(2, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN if request.get("sigint_ignored") else signal.default_int_handler)
    argv = request["argv"]
    try:
        if argv[0] == "-m":
            sys.argv = argv[1:]
            sys.path[0] = os.getcwd()
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(argv)
            sys.path[0] = str(Path(argv[0]).resolve().parent)
            runpy.run_path(argv[0], run_name="__main__")
        code = 0
    except SystemExit as stop:  # as the interpreter reads it: None 0, an int itself, anything else printed, 1
        if stop.code is None or isinstance(stop.code, int):
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException as error:  # an uncaught exception: the traceback, status 1 (Ctrl-C: killed by SIGINT)
        sys.excepthook(type(error), error, error.__traceback__)
        code = -signal.SIGINT if isinstance(error, KeyboardInterrupt) else 1
    # the interpreter's exit without tearing down torch's modules (≈ 1.7 s): threads joined, atexit, streams
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code & 0xFF)


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    _serve()
