"""Shared by the stop tests (imported as ``stopping``): a child process watched line by line, its descendants read
from /proc, a pool job that leaves proof that its env was closed, and an evaluation to stop."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
STOP_BOUND_S = 30.0  # a stop must end the process within this [s] (generous: CI shares 2 cores)
START_LIMIT_S = 600.0  # longest wait for a child's workers to start (a loaded machine) [s]
# Prints "stepping" once an evaluation's vector env is first stepped: its workers are up and its episodes running.
READY_HOOK = """
import gymnasium
_step_async = gymnasium.vector.AsyncVectorEnv.step_async
def _announce(self, actions):
    if not getattr(self, "_announced", False):
        self._announced = True
        print("stepping", flush=True)
    return _step_async(self, actions)
gymnasium.vector.AsyncVectorEnv.step_async = _announce
"""

# argv[1] "sim" or "arm" (franky-sim): an evaluation's episodes (a still policy, 2 env workers) that do not end
# within a test, with READY_HOOK's "stepping" line
ROLLOUT = READY_HOOK + """
import sys, torch
from s2robot.sim import rollout as R
from s2robot.sim.env import ARM_ENV_ID, EnvConfig

class Still(torch.nn.Module):
    feature_keys = ("feat_front",)
    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))
    def reset(self, batch_size):
        pass
    def act(self, obs):
        return torch.zeros(len(obs["proprio"]), 8)

arm = {"id": ARM_ENV_ID, "options": {"host": "franky-sim"}} if sys.argv[1] == "arm" else {}
cfg = EnvConfig(image_size=32, max_steps=1000, **arm)
R.run_episodes(Still(), lambda x: torch.zeros(len(x), 4), cfg, R.eval_episodes([(0.5, 0.0), (0.55, 0.05)]), n_envs=2,
               progress=False)
"""


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pids: list[int], seconds: float) -> list[int]:
    """Wait up to ``seconds`` for ``pids`` to end; the ones still running."""
    deadline = time.monotonic() + seconds
    while (left := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


class Child:
    """A Python child process whose stdout lines are read as they come; stderr is kept for failure messages."""

    def __init__(self, code: str, *args: str, cwd: Path = ROOT) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # envs picks the headless GL backend itself
        self.proc = subprocess.Popen([sys.executable, "-c", code, *args], cwd=cwd, env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.err: list[str] = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines.put), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.err.append), daemon=True).start()

    @staticmethod
    def _pump(stream: object, put: object) -> None:
        for line in stream:
            put(line.rstrip("\n"))
        put(None)

    def wait_for(self, prefix: str, seconds: float = START_LIMIT_S) -> str:
        """The first stdout line starting with ``prefix``; fails (with the child's stderr) if the child ends first."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise AssertionError(f"no {prefix!r} line within {seconds} s; stderr:\n" + self.stderr()) from None
            if line is None:
                raise AssertionError(f"the child ended (rc {self.proc.wait()}) before {prefix!r}:\n" + self.stderr())
            if line.startswith(prefix):
                return line

    def stop(self, *signals: signal.Signals) -> tuple[int | None, float]:
        """Send ``signals`` one after the other; (exit code or None if still running after STOP_BOUND_S, seconds)."""
        t0 = time.monotonic()
        for sig in signals:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=STOP_BOUND_S), time.monotonic() - t0
        except subprocess.TimeoutExpired:
            return None, time.monotonic() - t0

    def stderr(self) -> str:
        time.sleep(0.2)  # let the pump catch up
        return "\n".join(line for line in self.err[-60:] if line is not None)

    def kill(self) -> None:
        """Clean up after a failed test: the child and everything below it."""
        for pid in [*descendants(self.proc.pid), self.proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()


class ClosingJob:
    """A pool job (``sim.pool.EpisodeJob``) whose workers print their pid once set up and as each episode starts, run
    episodes of ``seconds``, and, when their env is closed (the path an arm env's stop takes), write
    ``closing-<pid>`` into ``folder``, take ``close_seconds`` and write ``closed-<pid>``."""

    def __init__(self, folder: str, seconds: float = 60.0, close_seconds: float = 0.0) -> None:
        self.folder, self.seconds, self.close_seconds = folder, seconds, close_seconds

    def setup(self) -> str:
        print(f"worker {os.getpid()}", flush=True)
        return "env"

    def run(self, state: str, seed: int) -> int:
        print(f"running {os.getpid()}", flush=True)  # set up: a stop from now on closes this worker's env
        time.sleep(self.seconds)
        return seed

    def close(self, state: str) -> None:
        Path(self.folder, f"closing-{os.getpid()}").touch()
        time.sleep(self.close_seconds)
        Path(self.folder, f"closed-{os.getpid()}").touch()


def eval_script(checkpoint: Path, out: Path, n_envs: int = 2) -> str:
    """Code for ``Child``: scripts/eval.py as its command line runs it, at 4 positions × 100 steps (it will not end
    by itself within a test), printing "stepping" once its env workers step."""
    argv = ["scripts/eval.py", f"checkpoint={checkpoint}", f"out={out}", f"n_envs={n_envs}", "repeats=1",
            "positions=[[0.5,0.0],[0.55,0.05],[0.6,-0.05],[0.45,0.1]]", "max_steps=100", "videos=0", "progress=false",
            "wandb.mode=disabled", "joint_noise=0"]
    run = "runpy.run_path('scripts/eval.py', run_name='__main__')"
    return READY_HOOK + f"import runpy, sys\nsys.argv = {argv!r}\n{run}\n"


def assert_workers_die_with_a_killed_evaluation(env: str) -> None:
    """SIGKILL of a process evaluating on ``env`` (``sim`` or ``arm``) env workers (nothing in it can run) leaves
    none of its workers running."""
    child = Child(ROLLOUT, env)
    try:
        child.wait_for("stepping")
        below = descendants(child.proc.pid)
        assert len(below) >= 2
        child.proc.send_signal(signal.SIGKILL)
        assert child.proc.wait(timeout=STOP_BOUND_S) == -signal.SIGKILL
        assert wait_gone(below, STOP_BOUND_S) == []
    finally:
        child.kill()
