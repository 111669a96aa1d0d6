"""A policy server on loopback for the remote-policy tests: served from a thread, stalled or killed on cue."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from s2robot.policy.wire import unpack
from s2robot.workflows.serve import PolicyServer, ServeConfig, load_server

LOOPBACK = "tcp://127.0.0.1:*"  # a free port, picked by ZeroMQ


def server_of(checkpoint: Path) -> PolicyServer:
    return load_server(ServeConfig(checkpoint=str(checkpoint), device="cpu"))


@contextmanager
def serving(server: PolicyServer, bind: str = LOOPBACK) -> Iterator[str]:
    """Serve ``server`` from a thread; yields its address (tcp://127.0.0.1:<port>) and stops it afterwards."""
    stop, bound = threading.Event(), queue.Queue()

    def run() -> None:
        try:
            server.serve(bind, stop, bound.put)
        except BaseException as err:  # a bind error, or a server told to die
            bound.put(err)

    thread = threading.Thread(target=run, daemon=True, name="policy-server")
    thread.start()
    endpoint = bound.get(timeout=60)
    if isinstance(endpoint, BaseException):
        raise endpoint
    try:
        yield endpoint
    finally:
        stop.set()
        thread.join(timeout=60)


class Hold:
    """Makes a server hold the request of (episode, step) unanswered: until ``release`` (a stalled server), or for
    good, its serving thread ended (``die``: a server that went away). ``held`` is set once the request arrived."""

    def __init__(self, server: PolicyServer, at: tuple[int, int], die: bool = False) -> None:
        self.at, self.die = at, die
        self.held, self.release = threading.Event(), threading.Event()
        self.held_at: float | None = None  # time.monotonic() when the held request arrived
        self._handle: Callable[[Sequence[bytes]], list[bytes]] = server.handle
        server.handle = self  # the serving loop looks the handler up on the instance

    def __call__(self, frames: Sequence[bytes]) -> list[bytes]:
        header, _ = unpack(frames)
        if header.get("type") == "act" and (header["episode"], header["step"]) == self.at:
            self.held_at = time.monotonic()
            self.held.set()
            if self.die:
                raise SystemExit("the policy server died")  # ends the serving thread; its socket closes
            self.release.wait(120)
        return self._handle(frames)
