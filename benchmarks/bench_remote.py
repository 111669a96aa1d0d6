"""Benchmark the policy server's transport: one control step's round trip over ZeroMQ, without encoder or policy.

Usage: python benchmarks/bench_remote.py [--size 224] [--batch 1] [--steps 500] [--address tcp://127.0.0.1]

A REP socket in a thread answers each ``act`` message (``policy.wire``: B frames of size² × 3 uint8, proprio, the
running mask) with B 8-D actions, as ``workflows.serve`` does, so the round trip is ZeroMQ plus (de)serialization:
what a remote policy adds to a step beyond the server's encoding and inference. p50/p99 after 20 warm-up steps.
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np

from s2robot.policy.wire import pack, unpack, zmq_module


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--address", default="tcp://127.0.0.1", help="where the answering socket binds (a free port)")
    args = p.parse_args()
    zmq = zmq_module()
    context = zmq.Context()
    rep = context.socket(zmq.REP)
    port = rep.bind_to_random_port(args.address)
    action = np.zeros((args.batch, 8), np.float32)

    def answer() -> None:
        for _ in range(args.steps):
            header, _ = unpack(rep.recv_multipart())
            rep.send_multipart(pack("action", {"step": header["step"]}, {"action": action}))

    threading.Thread(target=answer, daemon=True).start()
    req = context.socket(zmq.REQ)
    req.connect(f"{args.address}:{port}")
    rng = np.random.default_rng(0)
    arrays = {"frames_front": rng.integers(0, 256, (args.batch, args.size, args.size, 3), dtype=np.uint8),
              "proprio": np.zeros((args.batch, 8), np.float32), "running": np.ones(args.batch, bool)}
    times = []
    for step in range(args.steps):
        t0 = time.perf_counter()
        req.send_multipart(pack("act", {"step": step}, arrays))
        if not req.poll(10_000):
            raise TimeoutError("no reply within 10 s")
        unpack(req.recv_multipart())
        times.append(time.perf_counter() - t0)
    ms = 1e3 * np.array(times[20:])
    print(f"{args.batch} × {args.size}² frame(s) over {args.address}: round trip p50 {np.median(ms):.2f} ms, "
          f"p99 {np.quantile(ms, 0.99):.2f} ms ({len(ms)} steps)")
    context.destroy(0)


if __name__ == "__main__":
    main()
