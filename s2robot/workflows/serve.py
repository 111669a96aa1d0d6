"""The policy server (``scripts/serve_policy.py``): a checkpoint's frozen encoder and policy, on a GPU machine, answer
the control steps of a robot PC that runs the episode loop (``policy.remote.RemotePolicy``).

One ZeroMQ REP socket, one request at a time (``policy.wire`` messages). ``hello`` starts a client's session: the
server checks that the client evaluates the same weights and encoder, and runs the policy as the client's evaluation
says (execution, ``prefetch``). Each ``act`` is one control step: the running slots' frames go through the encoder
exactly as ``sim.rollout.step_features`` puts them through in process, the policy (or its ``PrefetchingPolicy``)
acts, and the actions go back. Steps must arrive in order (step 0 resets the history); a session that another
client's ``hello`` replaced is refused, as is any message of another protocol version or with arrays of the wrong
shape, each with an ``error`` reply that names the problem (the server keeps serving).
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from s2robot.common.device import resolve_device
from s2robot.data.keys import feat_cameras
from s2robot.policy.checkpoint import from_pretrained
from s2robot.policy.configuration import PolicyExecution
from s2robot.policy.modeling import ChunkTransformerPolicy
from s2robot.policy.prefetch import PrefetchingPolicy
from s2robot.policy.wire import WireError, check_array, pack, unpack, weights_digest, zmq_module
from s2robot.sim.env import EnvConfig
from s2robot.sim.rollout import step_features
from s2robot.vision.encoder import EncoderPlacement
from s2robot.vision.oracle import ORACLE
from s2robot.workflows.evaluate import encoder_for_checkpoint

POLL_MS = 100  # how often the serving loop looks at its stop event [ms]
SCHEMES = ("tcp://", "ipc://", "inproc://")


@dataclass
class ServeConfig:
    """``scripts/serve_policy.py`` (``configs/serve.yaml``).

    checkpoint: a ``train_bc.py`` checkpoint folder; clients evaluate the same one (its weights are checked)
    bind: where to listen: ``tcp://*:5555`` (every interface, port 5555), ``tcp://127.0.0.1:5555`` (this machine
        only); clients connect with ``scripts/eval.py ... server=tcp://<this machine>:5555``
    use_ema / device / placement: as ``scripts/eval.py``'s (``EvalConfig``): which weights, and where and in what
        precision the encoder and policy run
    """

    checkpoint: str = "runs/cube_pick/checkpoints/last"
    bind: str = "tcp://*:5555"
    use_ema: bool = True
    device: str = "auto"
    placement: EncoderPlacement = field(default_factory=EncoderPlacement)

    def __post_init__(self) -> None:
        if not self.bind.startswith(SCHEMES):
            raise ValueError(f"bind must be a ZeroMQ address ({', '.join(SCHEMES)}), e.g. tcp://*:5555, got "
                             f"{self.bind!r}")


class PolicyServer:
    """Answers ``hello``/``act`` messages (``handle``) for one client session at a time; ``serve`` runs the socket.

    policy, encoder, parts: a checkpoint's (``from_pretrained``, ``evaluate.encoder_for_checkpoint``); checkpoint:
    its name, told to clients.
    """

    def __init__(self, policy: ChunkTransformerPolicy, encoder: Any, parts: Mapping[str, Any], checkpoint: str
                 ) -> None:
        self.cameras = feat_cameras(policy.feature_keys)
        if self.cameras == [ORACLE]:
            raise ValueError(f"{checkpoint} reads the simulator's privileged state (the oracle encoder), not camera "
                             "frames: evaluate it in process (scripts/eval.py without server=)")
        self.policy, self.encoder, self.trained = policy, encoder, policy.cfg
        self.device = next(policy.parameters()).device
        size = int(parts["env"].get("image_size", EnvConfig.image_size))
        self.frame_shape = (size, size, 3)  # (H, W, 3): the frames the checkpoint's env renders
        self.digest = weights_digest(policy)
        self.ready = {"checkpoint": checkpoint, "step": parts["config"].get("step"), "encoder": encoder.describe(),
                      "feature_keys": list(policy.feature_keys), "action_space": policy.action_space,
                      "frame_shape": list(self.frame_shape), "proprio_dim": policy.proprio_dim}
        self.runner: ChunkTransformerPolicy | PrefetchingPolicy = policy
        self.session: str | None = None
        self.next_step: tuple[int, int, int] | None = None  # (episode, step, batch) the session's next act must be

    def handle(self, frames: Sequence[bytes]) -> list[bytes]:
        """The reply frames to one request's frames; a bad request gets an ``error`` reply, never an exception."""
        try:
            header, arrays = unpack(frames)
            if header.get("type") == "hello":
                return self._hello(header)
            if header.get("type") == "act":
                return self._act(header, arrays)
            raise WireError(f"unknown message type {header.get('type')!r}; the server takes hello and act")
        except (WireError, KeyError, TypeError, ValueError) as err:
            return pack("error", {"message": f"{type(err).__name__}: {err}"})
        except Exception as err:  # a failure of the encoder or policy: the client stops its episode, the server goes on
            traceback.print_exc()
            return pack("error", {"message": f"the server failed: {type(err).__name__}: {err}"})

    def _hello(self, header: Mapping[str, Any]) -> list[bytes]:
        theirs = (header.get("policy_digest"), header.get("encoder"))
        if theirs != (self.digest, self.encoder.fingerprint):
            raise WireError(
                f"this server serves {self.ready['checkpoint']} (step {self.ready['step']}, policy weights "
                f"{self.digest[:12]}, encoder {self.encoder.fingerprint}); the client evaluates policy weights "
                f"{str(theirs[0])[:12]}, encoder {theirs[1]}. Start the server with the checkpoint (and use_ema) the "
                "client evaluates")
        self.policy.cfg = PolicyExecution(**header["execution"]).apply(self.trained)
        if isinstance(self.runner, PrefetchingPolicy):
            self.runner.close()  # the previous client's background step ends before the new session starts
        prefetch = int(header.get("prefetch", 0))
        self.runner = PrefetchingPolicy(self.policy, prefetch) if prefetch else self.policy
        self.session, self.next_step = header["session"], None
        return pack("ready", self.ready)

    def _act(self, header: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> list[bytes]:
        if self.session is None or header.get("session") != self.session:
            raise WireError("this client's session is not the server's: another client connected since (the server "
                            "serves one at a time), or the server restarted. Start the evaluation again")
        episode, step, batch = int(header["episode"]), int(header["step"]), int(header["batch"])
        if step == 0:
            self.runner.reset(batch)
        elif (episode, step, batch) != self.next_step:
            raise WireError(f"expected episode, step, batch {self.next_step}, got {(episode, step, batch)}: steps must "
                            "arrive in order, each once")
        running = check_array(arrays, "running", "bool", (batch,))
        proprio = check_array(arrays, "proprio", "float32", (batch, self.policy.proprio_dim))
        obs = {}
        for cam in self.cameras:
            frames = check_array(arrays, f"frames_{cam}", "uint8", (int(running.sum()), *self.frame_shape))
            obs[cam] = np.zeros((batch, *self.frame_shape), np.uint8)  # (B, H, W, 3); ended slots: never encoded
            obs[cam][running] = frames
        with torch.no_grad():
            feats = step_features(self.encoder, self.cameras, obs, {}, [], self.device, running)
            action = self.runner.act({**feats, "proprio": proprio}).float().cpu().numpy()  # (B, A)
        self.next_step = (episode, step + 1, batch)
        stats = dict(getattr(self.runner, "stats", {}))
        return pack("action", {"episode": episode, "step": step, "stats": stats}, {"action": action})

    def serve(self, bind: str, stop: threading.Event | None = None, on_bound: Callable[[str], None] | None = None
              ) -> None:
        """Answer requests on ``bind`` until ``stop`` is set (or Ctrl-C); ``on_bound`` gets the bound address
        (``tcp://127.0.0.1:*`` picks a free port)."""
        zmq = zmq_module()
        context = zmq.Context()
        sock = context.socket(zmq.REP)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            try:
                sock.bind(bind)
            except zmq.ZMQError as err:
                raise OSError(f"cannot listen on {bind}: {err}. Another server may hold that port: pick another "
                              "(bind=tcp://*:5556)") from None
            if on_bound is not None:
                on_bound(sock.getsockopt_string(zmq.LAST_ENDPOINT))
            while stop is None or not stop.is_set():
                if sock.poll(POLL_MS, zmq.POLLIN):
                    sock.send_multipart(self.handle(sock.recv_multipart()))
        finally:
            if isinstance(self.runner, PrefetchingPolicy):
                self.runner.close()  # no background step outlives the server
                self.runner = self.policy
            sock.close(0)
            context.term()


def load_server(cfg: ServeConfig) -> PolicyServer:
    """The server of ``cfg.checkpoint``: its policy and its encoder, checked as an evaluation checks them."""
    policy, parts = from_pretrained(cfg.checkpoint, resolve_device(cfg.device), use_ema=cfg.use_ema)
    encoder = encoder_for_checkpoint(parts["encoder"], cfg.placement)
    return PolicyServer(policy, encoder, parts, str(Path(cfg.checkpoint).resolve()))


def serve_policy(cfg: ServeConfig, stop: threading.Event | None = None) -> None:
    """Load ``cfg.checkpoint`` and serve it on ``cfg.bind`` until ``stop`` is set (or Ctrl-C)."""
    server = load_server(cfg)

    def bound(endpoint: str) -> None:
        port = endpoint.rsplit(":", 1)[-1]
        print(f"serving {server.ready['checkpoint']} (step {server.ready['step']}) at {endpoint}; on the robot PC: "
              f"python scripts/eval.py checkpoint={cfg.checkpoint} server=tcp://<this machine>:{port}", flush=True)

    server.serve(cfg.bind, stop, bound)
