"""tests/warm.py starts the suite's scripts from a forked warm interpreter: what a script sees and what the test
gets back must be what a fresh ``python script.py`` gives."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import warm  # noqa: E402

SCRIPT = r"""
import atexit, os, sys, threading, time
print("argv", sys.argv[1:], "path0", os.path.basename(sys.path[0]), "cwd", os.path.basename(os.getcwd()))
print("env", os.environ.get("WARM_PROBE"), "stdin", repr(sys.stdin.read()), "main", __name__)
print("é to stderr", file=sys.stderr)
atexit.register(lambda: print("atexit ran"))
threading.Thread(target=lambda: (time.sleep(0.2), print("thread joined"))).start()
how = sys.argv[1]
if how == "code":
    sys.exit(3)
if how == "message":
    sys.exit("refused: a message")
if how == "raise":
    raise ValueError("boom")
if how == "sleep":
    time.sleep(60)
print("unflushed at the end", end="")
"""


@pytest.mark.parametrize("how", ["ok", "code", "message", "raise"])
def test_a_script_behaves_as_in_a_fresh_interpreter(tmp_path, how):
    script = tmp_path / "probe.py"
    script.write_text(SCRIPT)
    (tmp_path / "here").mkdir()
    env = {"PATH": "/usr/bin:/bin", "WARM_PROBE": "set"}
    cmd = [sys.executable, str(script), how]
    fresh = subprocess.run(cmd, cwd=tmp_path / "here", env=env, capture_output=True, text=True, timeout=60)
    forked = warm.run(cmd, cwd=tmp_path / "here", env=env, capture_output=True, text=True, timeout=60)
    assert forked.returncode == fresh.returncode == {"ok": 0, "code": 3, "message": 1, "raise": 1}[how]
    assert forked.stdout == fresh.stdout
    assert "thread joined" in forked.stdout and "atexit ran" in forked.stdout
    assert "argv ['" + how + "'] path0 " + tmp_path.name + " cwd here" in forked.stdout
    if how == "raise":  # the traceback's last line; the frames above the script's differ
        assert forked.stderr.splitlines()[-1] == fresh.stderr.splitlines()[-1] == "ValueError: boom"
    else:
        assert forked.stderr == fresh.stderr


def test_a_module_runs_with_dash_m_and_check_raises(tmp_path):
    (tmp_path / "probe_module.py").write_text("import sys\nprint(sys.argv[1:])\nsys.exit(int(sys.argv[1]))\n")
    ok = warm.run([sys.executable, "-m", "probe_module", "0"], cwd=tmp_path, capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout == "['0']\n"
    with pytest.raises(subprocess.CalledProcessError):
        warm.run([sys.executable, "-m", "probe_module", "4"], cwd=tmp_path, capture_output=True, check=True)


def test_a_timeout_kills_the_command_and_the_next_one_runs(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(SCRIPT)
    start = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        warm.run([sys.executable, str(script), "sleep"], cwd=tmp_path, capture_output=True, timeout=2)
    assert time.monotonic() - start < 30
    after = warm.run([sys.executable, str(script), "code"], cwd=tmp_path, capture_output=True, text=True)
    assert after.returncode == 3


SIGNALLED = r"""
import signal, sys, time
print("sigint", "ignored" if signal.getsignal(signal.SIGINT) == signal.SIG_IGN else "python's", flush=True)
print("to stderr", file=sys.stderr, flush=True)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
time.sleep(60)
"""


@pytest.mark.parametrize("ignored", [False, True])
def test_popen_runs_in_the_background_takes_signals_and_writes_both_streams_to_one_file(tmp_path, ignored):
    script = tmp_path / "probe.py"
    script.write_text(SIGNALLED)
    logs = [tmp_path / f"{k}.out" for k in range(2)]
    procs = []
    for log in logs:  # two at once: the server does not wait for the first
        with open(log, "w") as fh:
            procs.append(
                warm.Popen([sys.executable, str(script)], stdout=fh, stderr=subprocess.STDOUT, sigint_ignored=ignored)
            )
    deadline = time.monotonic() + 30
    while not all(log.read_text().count("\n") == 2 for log in logs) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(p.poll() is None for p in procs) and procs[0].pid != procs[1].pid
    procs[0].send_signal(signal.SIGTERM)
    procs[1].kill()
    assert procs[0].wait(30) == 143 and procs[1].wait(30) == -signal.SIGKILL
    for log in logs:
        handler = "ignored" if ignored else "python's"
        assert log.read_text() == f"sigint {handler}\nto stderr\n"
