"""The policy server's messages: a versioned JSON header and raw numpy buffers as ZeroMQ multipart frames.

A message is ``[header, buffer, buffer, ...]``. The header is a UTF-8 JSON object with ``protocol``
(``s2robot-policy``), ``version``, ``type`` and ``arrays``: one ``{"name", "dtype", "shape"}`` per buffer that follows,
in order; each buffer is the C-ordered bytes of that array. Only ``uint8``, ``float32`` and ``bool`` arrays travel,
and nothing is ever unpickled: a malformed message is refused with a ``WireError`` that names what was wrong.

Client → server: ``hello`` (session, policy weights digest, encoder fingerprint, execution, prefetch) and ``act``
(session, episode, step, batch; arrays ``proprio`` (B, P) float32, ``running`` (B,) bool, ``frames_<camera>``
(n running, H, W, 3) uint8). Server → client: ``ready`` (what it serves), ``action`` (array ``action`` (B, A) float32,
the background-inference counts) or ``error`` (``message``). ZeroMQ itself is imported lazily (``zmq_module``): the
sim-only install does not need it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

import numpy as np
import torch

PROTOCOL = "s2robot-policy"
VERSION = 1
DTYPES = ("uint8", "float32", "bool")
INSTALL = "pip install 's2robot[remote]'"


class WireError(ValueError):
    """A message that is not this protocol's, of another version, or whose arrays do not match its header."""


def zmq_module() -> ModuleType:
    """``zmq`` (pyzmq), or an ImportError that says how to install it."""
    try:
        import zmq
    except ImportError as err:
        raise ImportError(f"the remote policy server and its client need pyzmq, which is not installed: {INSTALL} "
                          "(or pip install pyzmq)") from err
    return zmq


def pack(kind: str, fields: Mapping[str, Any] | None = None, arrays: Mapping[str, np.ndarray] | None = None
         ) -> list[bytes]:
    """The frames of a ``kind`` message: its header (``fields`` + protocol, version, array specs), then each array's
    bytes; arrays are sent as the dtype they have, which must be one of ``DTYPES``."""
    arrays = {k: np.ascontiguousarray(a) for k, a in (arrays or {}).items()}
    specs = []
    for name, a in arrays.items():
        if a.dtype.name not in DTYPES:
            raise TypeError(f"array {name!r} is {a.dtype.name}; the wire carries only {DTYPES}")
        specs.append({"name": name, "dtype": a.dtype.name, "shape": list(a.shape)})
    header = {"protocol": PROTOCOL, "version": VERSION, "type": kind, **(fields or {}), "arrays": specs}
    return [json.dumps(header).encode(), *(a.tobytes() for a in arrays.values())]


def unpack(frames: Sequence[bytes]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(header, {name: array}) of a message; WireError when it is not a version-``VERSION`` message of this protocol
    or an array's bytes do not match its spec. The arrays are writable copies."""
    try:
        header = json.loads(bytes(frames[0]).decode())
    except (IndexError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WireError(f"not an {PROTOCOL} message (its first frame is not a JSON header: {err})") from None
    if not isinstance(header, dict) or header.get("protocol") != PROTOCOL:
        raise WireError(f"not an {PROTOCOL} message (header protocol {_field(header, 'protocol')!r})")
    if header.get("version") != VERSION:
        raise WireError(f"message of {PROTOCOL} version {header.get('version')!r}, this side speaks version {VERSION}: "
                        "install the same s2robot version on the robot PC and on the server")
    specs = header.get("arrays", [])
    if not isinstance(specs, list) or len(specs) != len(frames) - 1:
        raise WireError(f"the header lists {len(specs) if isinstance(specs, list) else specs!r} arrays but "
                        f"{len(frames) - 1} buffers follow it")
    arrays = {}
    for spec, buf in zip(specs, frames[1:], strict=True):
        arrays[spec.get("name")] = _array(spec, bytes(buf))
    return header, arrays


def _field(header: Any, key: str) -> Any:
    return header.get(key) if isinstance(header, dict) else None


def _array(spec: Mapping[str, Any], buf: bytes) -> np.ndarray:
    name, dtype, shape = spec.get("name"), spec.get("dtype"), spec.get("shape")
    if dtype not in DTYPES:
        raise WireError(f"array {name!r} has dtype {dtype!r}; the wire carries only {DTYPES}")
    if not (isinstance(shape, list) and all(isinstance(n, int) and n >= 0 for n in shape)):
        raise WireError(f"array {name!r} has shape {shape!r}; expected a list of sizes ≥ 0")
    expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if len(buf) != expected:
        raise WireError(f"array {name!r} {dtype} {tuple(shape)} needs {expected} bytes, its buffer has {len(buf)}")
    return np.frombuffer(buf, dtype=dtype).reshape(shape).copy()


def check_array(arrays: Mapping[str, np.ndarray], name: str, dtype: str, shape: tuple[int | None, ...]) -> np.ndarray:
    """``arrays[name]``, refused with a WireError unless it has ``dtype`` and ``shape`` (None: any size there)."""
    if name not in arrays:
        raise WireError(f"the message lacks array {name!r} (it has {sorted(arrays)})")
    a = arrays[name]
    if a.dtype.name != dtype or a.ndim != len(shape) or any(n is not None and n != m for n, m in
                                                             zip(shape, a.shape, strict=True)):
        want = tuple("*" if n is None else n for n in shape)
        raise WireError(f"array {name!r} must be {dtype} of shape {want}, got {a.dtype.name} {tuple(a.shape)}")
    return a


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 of a module's state dict (names, dtypes, shapes, values): the client and the server hold the same
    policy weights (and normalizer) exactly when their digests agree."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{tuple(tensor.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
