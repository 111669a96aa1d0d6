"""A policy that runs on another machine: the rollout's ``reset``/``act`` answered by a policy server over ZeroMQ.

``RemotePolicy`` stands in for the policy in ``sim.rollout.run_episodes``, and its ``relay`` (``FrameRelay``) for
the encoder, so the same episode loop, env and timing code run on a robot PC without a GPU. Every control step is one
request and its reply (``policy.wire``): the running slots' newest frames (uint8), every slot's proprio and which slots
run go out; the server (``workflows.serve``) encodes the frames as the rollout would, appends them to the policy's
history and answers with the step's actions. The server thus runs the in-process loop itself: the same history, the
same chunk queue and, with ``prefetch``, the same background prediction whose stale actions are dropped (it counts
steps by the requests it gets, one per control step), so a step's actions equal in-process inference's, bit for bit.

Every round trip (request sent → reply received) is timed into ``round_trips`` (since ``reset``, [s]). No reply within
``timeout_s`` raises ``PolicyServerError``: ``server_unreachable`` when connecting, ``server_timeout`` during an
episode (the rollout then stops and closes its envs, which stops an arm); a refusal by the server (another
checkpoint, a protocol version or array shape it does not take) raises ``ServerRefused``.
"""

from __future__ import annotations

import time
import uuid
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from s2robot.data.keys import feat_cameras, feat_key
from s2robot.policy.wire import WireError, check_array, pack, unpack, weights_digest, zmq_module

SERVE = "python scripts/serve_policy.py checkpoint=<the same checkpoint> bind=tcp://*:<port>"


class PolicyServerError(RuntimeError):
    """The policy server gave no action. ``reason``: ``server_unreachable``, ``server_timeout`` or
    ``server_refused``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class ServerRefused(PolicyServerError, ValueError):
    """The server answered with an error: it serves another checkpoint, or refused a message."""

    def __init__(self, message: str) -> None:
        super().__init__("server_refused", message)


class FrameRelay:
    """The rollout's encoder on the client: passes each frame on instead of encoding it.

    ``relay(frames (n, H, W, 3) uint8)`` → rows (n, 1 + H·W·3) uint8: a presence byte 1, then the pixels. The rollout
    puts zero rows for the slots it does not encode (ended episodes), so ``split`` recovers which slots run and
    their frames. ``describe``/``fingerprint``: the server's encoder, which encodes them.
    """

    def __init__(self, served: Mapping[str, Any]) -> None:
        self._served = dict(served)

    @property
    def fingerprint(self) -> str:
        return self._served["fingerprint"]

    def describe(self) -> dict[str, Any]:
        return dict(self._served)

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        frames = np.asarray(frames)  # (n, H, W, 3)
        rows = np.ones((len(frames), 1 + frames[0].size if len(frames) else 1), np.uint8)  # (n, 1 + H·W·3)
        rows[:, 1:] = frames.reshape(len(frames), -1)
        return torch.from_numpy(rows)

    @staticmethod
    def split(rows: torch.Tensor | np.ndarray, frame_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """(running (B,) bool, frames of the running slots (n, H, W, 3) uint8) of the rows (B, 1 + H·W·3)."""
        rows = rows.cpu().numpy() if isinstance(rows, torch.Tensor) else np.asarray(rows)
        if rows.dtype != np.uint8 or rows.ndim != 2 or rows.shape[1] != 1 + int(np.prod(frame_shape)):
            raise ValueError(f"frame rows must be uint8 (B, 1 + {'·'.join(map(str, frame_shape))}) from FrameRelay, "
                             f"got {rows.dtype} {rows.shape}: the env renders frames of another size than the "
                             f"server's checkpoint ({tuple(frame_shape)})")
        running = rows[:, 0] == 1
        return running, rows[running, 1:].reshape(-1, *frame_shape)


class RemotePolicy:
    """``reset``/``act`` of ``policy`` (the same checkpoint, loaded here only to be checked against the server's),
    run by the policy server at ``address`` (``tcp://host:port``); see the module docstring.

    encoder_fingerprint: the checkpoint's encoder (the server must encode with it); prefetch: the server predicts in
    the background (``policy.prefetch``) once this many queued actions are left (0: off); timeout_s: the longest
    wait for any reply [s]. Connects and checks the server when built.
    """

    def __init__(self, address: str, policy: Any, encoder_fingerprint: str, prefetch: int = 0,
                 timeout_s: float = 5.0) -> None:
        self._zmq = zmq_module()
        self.address, self.timeout_s = address, timeout_s
        self.feature_keys: tuple[str, ...] = tuple(policy.feature_keys)
        self.action_space: str = policy.action_space
        self.session = uuid.uuid4().hex
        self.stats: dict[str, int] = {}  # the server's background-inference counts (PrefetchingPolicy.stats)
        self.round_trips: list[float] = []  # per step since reset [s]
        self.last_round_trip = 0.0  # [s]
        self._anchor = torch.nn.Parameter(torch.zeros(0), requires_grad=False)  # the rollout's device: this CPU
        self._context = self._zmq.Context()
        self._finalize = weakref.finalize(self, self._context.destroy, 0)
        self._socket = self._context.socket(self._zmq.REQ)
        for option, value in ((self._zmq.LINGER, 0), (self._zmq.SNDTIMEO, int(1000 * timeout_s))):
            self._socket.setsockopt(option, value)
        self._socket.connect(address)
        self._episode, self._t, self._batch = -1, 0, 1
        execution = {k: getattr(policy.cfg, k) for k in ("execution", "execute_steps")}
        hello = {"session": self.session, "policy_digest": weights_digest(policy), "encoder": encoder_fingerprint,
                 "execution": execution, "prefetch": prefetch}
        try:
            ready, _ = self._request(pack("hello", hello), "the connection check")
        except PolicyServerError as err:
            self.close()
            if err.reason != "server_timeout":
                raise
            raise PolicyServerError("server_unreachable", f"no policy server answered at {address} within "
                                    f"{timeout_s:g} s. Start one on the GPU machine ({SERVE}), check the host, port "
                                    "and firewall, or wait longer (server_timeout=...)") from None
        if tuple(ready.get("feature_keys", ())) != self.feature_keys:
            raise ServerRefused(f"the server at {address} serves a policy reading {ready.get('feature_keys')}, this "
                                f"one reads {list(self.feature_keys)}")
        self.served = ready  # checkpoint, step, encoder, frame_shape, ...
        self.frame_shape = tuple(ready["frame_shape"])  # (H, W, 3)
        self.relay = FrameRelay(ready["encoder"])

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        """One empty CPU tensor: the rollout puts the relayed frames on this device (the client's)."""
        yield self._anchor

    def reset(self, batch_size: int = 1) -> None:
        """Start a new episode in each of ``batch_size`` envs; the server resets its history with the first step."""
        self._episode, self._t, self._batch = self._episode + 1, 0, batch_size
        self.round_trips = []

    def act(self, obs: Mapping[str, torch.Tensor | np.ndarray]) -> torch.Tensor:
        """One control step: obs {feat_<camera>: relayed frame rows (B, 1 + H·W·3), proprio (B, P)} → action (B, A)
        float32, as the server's policy computed it."""
        arrays: dict[str, np.ndarray] = {"proprio": np.asarray(obs["proprio"], np.float32).reshape(self._batch, -1)}
        for cam in feat_cameras(self.feature_keys):
            running, arrays[f"frames_{cam}"] = FrameRelay.split(obs[feat_key(cam)], self.frame_shape)
            if "running" in arrays and not np.array_equal(arrays["running"], running):
                raise ValueError(f"camera {cam!r} relays frames of other slots than the first camera")
            arrays["running"] = running
        fields = {"session": self.session, "episode": self._episode, "step": self._t, "batch": self._batch}
        reply, out = self._request(pack("act", fields, arrays), f"step {self._t} of episode {self._episode}")
        self.round_trips.append(self.last_round_trip)
        if (reply.get("episode"), reply.get("step")) != (self._episode, self._t):
            raise ServerRefused(f"the server at {self.address} answered episode {reply.get('episode')} step "
                                f"{reply.get('step')}, asked for episode {self._episode} step {self._t}")
        action = check_array(out, "action", "float32", (self._batch, None))  # (B, A)
        self.stats = dict(reply.get("stats", {}))
        self._t += 1
        return torch.from_numpy(action)

    def _request(self, frames: list[bytes], what: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Send a message and wait up to ``timeout_s`` for its reply (round trip: ``last_round_trip`` [s])."""
        zmq, sock = self._zmq, self._socket
        if sock is None:
            raise PolicyServerError("server_timeout", f"the connection to {self.address} was closed after the server "
                                    "failed to answer earlier")
        t0 = time.perf_counter()
        try:
            sock.send_multipart(frames)
            answered = sock.poll(int(1000 * self.timeout_s), zmq.POLLIN)
        except zmq.Again:
            answered = 0
        if not answered:
            self._drop_socket()  # a REQ socket whose request went unanswered cannot send again
            raise PolicyServerError("server_timeout", f"the policy server at {self.address} sent no reply to {what} "
                                    f"within {self.timeout_s:g} s (it stalled, died or the network dropped)")
        reply = sock.recv_multipart()
        self.last_round_trip = time.perf_counter() - t0
        try:
            header, arrays = unpack(reply)
        except WireError as err:
            raise ServerRefused(f"the reply of {self.address} to {what}: {err}") from None
        if header.get("type") == "error":
            raise ServerRefused(f"the policy server at {self.address} refused {what}: {header.get('message')}")
        return header, arrays

    def _drop_socket(self) -> None:
        if self._socket is not None:
            self._socket.close(0)
            self._socket = None

    def close(self) -> None:
        """Close the connection (also done when this object is collected)."""
        self._drop_socket()
        self._finalize()
