"""Demo stores from the shell: info, verify, upgrade, video, merge; import other projects' datasets, export to them.

``python -m s2robot.workflows.store COMMAND PATH ...`` (``--help`` lists each command's options; docs/interop.md the
formats).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from s2robot.common.lock import LockedError
from s2robot.data.episode import find_non_finite
from s2robot.data.importer import ACTION_SPACE, EXPORTERS, READERS, exporter, import_source, key_map_for, open_source
from s2robot.data.keys import is_rgb, rgb_cameras, rgb_key
from s2robot.data.store import EpisodeStore
from s2robot.data.verify import upgrade_path, verify_path


def _format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError


def info_text(store: EpisodeStore) -> str:
    """Human-readable summary of a store (what `python -m s2robot.workflows.store info` prints)."""
    lengths = store.episode_lengths
    lines = [f"store        {store.path}", f"episodes     {store.n_episodes}",
             f"steps        {store.n_steps}"]
    if len(lengths):
        lines.append(f"lengths      min {lengths.min()}  mean {lengths.mean():.1f}  max {lengths.max()}")
    successes = [store.episode_info(i)["success"] for i in range(store.n_episodes)
                 if "success" in store.episode_info(i)]
    if successes:
        lines.append(f"success      {np.mean(successes):.1%} ({sum(map(bool, successes))}/{len(successes)})")
    lines.append(f"{'key':<16} {'dtype':<8} {'shape':<20} {'chunks':<20} {'stored':>10}")
    for k in store.keys:
        arr = store.array(k)
        lines.append(f"{k:<16} {arr.dtype!s:<8} {(store.n_steps, *arr.shape[1:])!s:<20} {arr.chunks!s:<20} "
                     f"{_format_bytes(arr.nbytes_stored()):>10}")
    for k in store.keys:
        if not is_rgb(k) and (found := find_non_finite(store.get_steps(k, 0, store.n_steps), store.episode_ends)):
            lines.append(f"NON-FINITE   {k}: {found[0]} steps with NaN/inf, first at episode {found[1]}, step "
                         f"{found[2]}")
    for k, v in store.attrs.items():
        text = json.dumps(v)
        lines.append(f"attr {k:<11} {text if len(text) <= 80 else text[:77] + '...'}")
    lines.append(f"software     {json.dumps(store.software)}")
    lines.append(f"fingerprint  {store.fingerprint}")
    return "\n".join(lines)


def write_store_videos(store: EpisodeStore, episodes: list[int], camera: str | None, out: Path,
                       fps: float) -> list[Path]:
    """Write `out/<store>_ep<i>_<camera>.mp4` from data/rgb_<camera> for each episode; return the paths."""
    import imageio.v2 as imageio

    cameras = rgb_cameras(store.keys)
    if not cameras:
        raise ValueError(f"{store.path} has no rgb_<camera> key; keys: {list(store.keys)}")
    camera = camera or cameras[0]
    if camera not in cameras:
        raise ValueError(f"{store.path} has no camera {camera!r} (no key 'rgb_{camera}'); "
                         f"available: {cameras}")
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in episodes:
        start, stop = store.episode_bounds(i)
        frames = store.get_steps(rgb_key(camera), start, stop)  # (T, S, S, 3)
        path = out / f"{store.path.stem}_ep{i}_{camera}.mp4"
        imageio.mimwrite(path, list(frames), fps=fps, macro_block_size=2)
        paths.append(path)
    return paths


# attrs that say how a store's steps were recorded: stores merged into one must agree on them (an env's other
# options, such as which varied scene it drew, may differ)
SAME_RECORDING = ("cameras", "image_size", "control_hz")
SAME_ENV = ("id", "action_mode")


def merge_stores(out: Path, sources: list[Path], chunk: int = 20) -> EpisodeStore:
    """A new store at ``out`` holding every episode of ``sources``, in order (say demos recorded in several sessions,
    or the same demos recorded in several scenes). The sources must have the same keys, dtypes and per-step shapes
    and the same recording setup (``SAME_RECORDING``, the env's ``SAME_ENV``); the new store's attrs are the first
    source's, without its recorder's attempt list (it is not a recording to resume), plus ``merged_from`` (path,
    fingerprint and episode count of each source); each episode's info gains ``merged_from_store``, its source's
    index. Nothing is written before every source is checked; an existing ``out`` is refused."""
    if len(sources) < 2:
        raise ValueError(f"merge needs at least two stores, got {len(sources)}")
    stores = [EpisodeStore.open(p) for p in sources]
    first = stores[0]
    want = {k: first.spec(k) for k in first.keys}
    for p, st in zip(sources[1:], stores[1:], strict=True):
        specs = {k: st.spec(k) for k in st.keys}
        if specs != want:
            raise ValueError(f"{p} holds other arrays than {sources[0]} (keys, dtypes or per-step shapes): "
                             f"{sorted(set(specs.items()) ^ set(want.items()), key=str)}; only stores of the same "
                             "recording setup merge")
        setup = [(k, st.attrs.get(k), first.attrs.get(k)) for k in SAME_RECORDING] + [
            (f"env.{k}", (st.attrs.get("env") or {}).get(k), (first.attrs.get("env") or {}).get(k)) for k in SAME_ENV]
        differ = [f"{k}: {a!r} vs {b!r}" for k, a, b in setup if a != b]
        if differ:
            raise ValueError(f"{p} was recorded otherwise than {sources[0]} ({'; '.join(differ)}); only stores of "
                             "the same recording setup merge")
    attrs = {k: v for k, v in first.attrs.items() if k != "attempts"} | {"merged_from": [
        {"path": str(p), "fingerprint": st.fingerprint, "n_episodes": st.n_episodes}
        for p, st in zip(sources, stores, strict=True)]}
    merged = EpisodeStore.create(out, attrs=attrs)
    for k, st in enumerate(stores):
        for a in range(0, st.n_episodes, chunk):
            merged.add_episodes([(st.get_episode(i), st.episode_info(i) | {"merged_from_store": k})
                                 for i in range(a, min(a + chunk, st.n_episodes))])
    return merged


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m s2robot.workflows.store", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("info", "summarise a store"),
                       ("verify", "re-read every episode and check it against its stored digest"),
                       ("upgrade", "sign a schema-1 store as schema 2, once, after verifying it")):
        sub.add_parser(name, help=text).add_argument("path", type=Path)
    p_video = sub.add_parser("video", help="write an mp4 per episode from rgb_<camera>")
    p_video.add_argument("path", type=Path)
    p_video.add_argument("--episodes", type=int, nargs="+", default=[0])
    p_video.add_argument("--camera", default=None, help="camera name (default: the first rgb_ key)")
    p_video.add_argument("--out", type=Path, default=Path("videos"))
    p_video.add_argument("--fps", type=float, default=10.0)
    p_merge = sub.add_parser("merge", help="write the episodes of several stores of one recording setup into a new one")
    p_merge.add_argument("path", type=Path, nargs="+", help="the stores, in order")
    p_merge.add_argument("--out", type=Path, required=True, help="the new store (an existing one is refused)")
    p_import = sub.add_parser("import", help="import another project's dataset into a new store (docs/interop.md)")
    p_import.add_argument("path", type=Path, help="the dataset (LeRobot: its root folder)")
    p_import.add_argument("--format", required=True, choices=sorted(READERS))
    p_import.add_argument("--out", type=Path, required=True, help="the store to write (resumed when it exists)")
    p_import.add_argument("--proprio", default=None, help="source columns concatenated into proprio: a,b")
    p_import.add_argument("--action", default=None, help="source column of the action")
    p_import.add_argument("--camera", action="append", default=None, metavar="NAME=COLUMN",
                          help="a camera: store name = source column (repeat; replaces the default cameras)")
    p_import.add_argument("--image-size", type=int, default=224, help="square frame size S [px]")
    p_import.add_argument("--action-space", choices=["absolute", "delta"], default=None,
                          help="the source's actions: absolute targets (stored as action and target) or deltas "
                               "(default: the format's usual, robomimic delta, others absolute)")
    p_import.add_argument("--overwrite", action="store_true", help="replace an existing import at --out")
    p_export = sub.add_parser("export", help="write a store in another project's format (docs/interop.md)")
    p_export.add_argument("path", type=Path)
    p_export.add_argument("--format", required=True, choices=sorted(EXPORTERS))
    p_export.add_argument("--out", type=Path, required=True)
    p_export.add_argument("--codec", choices=["h264", "av1"], default=None, help="lerobot video codec (h264)")
    p_export.add_argument("--crf", type=int, default=None, help="lerobot video quality (30; lower is better)")
    p_export.add_argument("--fps", type=float, default=None, help="lerobot fps [Hz] (the store's control_hz)")
    return parser


def _import(args: argparse.Namespace) -> str:
    source = open_source(args.format, args.path)
    key_map = key_map_for(source, args.proprio, args.action, args.camera)
    action_space = args.action_space or ACTION_SPACE[args.format]
    store = import_source(source, args.out, key_map, args.image_size, action_space, overwrite=args.overwrite)
    return (f"{store.path}: {store.n_episodes} episodes, {store.n_steps} steps from {args.format} dataset {args.path}; "
            f"fingerprint {store.fingerprint}")


def _export(args: argparse.Namespace) -> str:
    store = EpisodeStore.open(args.path)
    options = {k: v for k in ("codec", "crf", "fps") if (v := getattr(args, k)) is not None}
    if options and args.format != "lerobot":
        raise ValueError(f"{', '.join('--' + k for k in options)}: only for --format lerobot (video options)")
    return f"{exporter(args.format)(store, args.out, **options)}: {store.n_episodes} episodes as {args.format}"


def main(argv: list[str] | None = None) -> int:
    """`python -m s2robot.workflows.store {info,verify,upgrade,video,merge,import,export} PATH ...`; returns the exit
    code (verify: 1 when it finds a problem; upgrade: 1 when it refuses; 2 on bad input)."""
    args = _parser().parse_args(argv)
    if args.command == "verify":
        problems = verify_path(args.path)
        print("\n".join(problems) if problems else f"{args.path}: verified, every episode matches its digest")
        return 1 if problems else 0
    if args.command == "upgrade":
        upgrade = upgrade_path(args.path)
        if upgrade.problems:
            print("\n".join(upgrade.problems))
            print(f"upgrade refused, nothing was changed: the problems above would be signed as good. Copy the "
                  f"episodes you trust into a new store, or restore {args.path} from a copy, and upgrade that")
            return 1
        print("\n".join(upgrade.report))
        return 0
    try:
        if args.command == "merge":
            merged = merge_stores(args.out, args.path)
            print(f"{merged.path}: {merged.n_episodes} episodes, {merged.n_steps} steps from {len(args.path)} stores; "
                  f"fingerprint {merged.fingerprint}")
            return 0
        if args.command in ("import", "export"):
            print((_import if args.command == "import" else _export)(args))
            return 0
        store = EpisodeStore.open(args.path)
        if args.command == "info":
            print(info_text(store))
        else:
            for path in write_store_videos(store, args.episodes, args.camera, args.out, args.fps):
                print(path)
    except (FileNotFoundError, FileExistsError, ValueError, IndexError, KeyError, LockedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
