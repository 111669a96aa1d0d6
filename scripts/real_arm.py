"""Franka cell utilities (README, "The real arm"): the placement sheet, a connection check, error recovery.

    python scripts/real_arm.py sheet --out placement.pdf              # the 16 paper positions at 1:1, to print
    python scripts/real_arm.py check --host 172.16.0.2 --camera front=realsense:123456789012
    python scripts/real_arm.py check --host franky-sim                # the rehearsal
    python scripts/real_arm.py recover --host 172.16.0.2              # after a reflex (collision, limit)
    python scripts/real_arm.py homing --host 172.16.0.2               # after a failed hand command

Recording, training and evaluation on the arm use the usual scripts with ``env=franka`` (or ``env=franka_sim``).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    """The command line (every command an error message prints parses with it: tests/real/test_hints.py)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sheet = sub.add_parser("sheet", help="print the cube placement sheet (PDF/PNG at 1:1 in the robot base frame)")
    sheet.add_argument("--out", default="placement.pdf")
    sheet.add_argument("--positions", default="paper", help="paper, a .json/.csv file, or an inline [[x, y], ...]")
    sheet.add_argument("--page", default="A4", help="A4, A3, letter or none (one page of the drawing's size)")
    check = sub.add_parser("check", help="connect, print the arm's state, save one frame per camera")
    recover = sub.add_parser("recover", help="clear a reflex error (libfranka's automatic error recovery)")
    homing = sub.add_parser("homing", help="home the hand (after a failed hand command, or new fingers)")
    for p in (check, recover, homing):
        p.add_argument("--host", required=True, help="the robot's FCI address, or franky-sim")
    check.add_argument("--camera", action="append", default=[], help="name=source, e.g. front=realsense:<serial>")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "sheet":
        from s2robot.real.placement import placement_sheet, positions_table
        from s2robot.workflows.evaluate import EvalConfig

        positions, _ = EvalConfig(positions=args.positions).position_set()
        for path in placement_sheet(positions, args.out, page=args.page):
            print(f"wrote {path} (print at 100% / actual size; its 10 cm bar must measure 10.0 cm)")
        print(positions_table(positions))
    elif args.command == "check":
        check(args.host, dict(item.split("=", 1) for item in args.camera))
    else:
        bare_session(args.host, args.command)


def bare_session(host: str, command: str) -> None:
    """``recover`` (libfranka's error recovery) or ``homing`` (the hand's) in a session that configures nothing: a
    robot in a reflex may refuse the configuration commands."""
    from s2robot.real.arm import ArmError, FrankyArm
    from s2robot.real.rehearsal import SimulatedFranka
    from s2robot.real.safety import SafetyConfig

    scene = SimulatedFranka(()).start() if host == "franky-sim" else None
    try:
        arm = FrankyArm(scene.host if scene else host, SafetyConfig(), configure=False)
        if command == "recover":
            print("recovered" if arm.recover() else f"recovery failed: {arm.errors()}")
        else:
            print("the hand is homed" if arm.home_gripper() else "homing failed: check the hand in Desk")
        arm.close()
    except ArmError as err:
        raise SystemExit(f"error: {err}") from None
    finally:
        if scene:
            scene.close()


def check(host: str, sources: dict[str, str]) -> None:
    """Connect, print the arm's joints, hand and errors, and save one frame per camera."""
    from s2robot.real.arm import ArmError
    from s2robot.real.env import FrankaEnv

    try:
        env = FrankaEnv(host=host, cameras=list(sources) or ([] if host != "franky-sim" else ["front"]),
                        camera_sources=sources)
    except ArmError as err:
        raise SystemExit(f"error: {err}") from None
    try:
        print(f"connected to {env.arm.host}: joints {env.arm.joint_positions().round(3).tolist()} rad, hand "
              f"{env.arm.gripper_width() * 100:.1f} cm open, errors: {env.arm.errors() or 'none'}")
        import imageio.v3 as iio

        for name, camera in env.camera_devices.items():
            frame = camera.read()
            out = Path(f"check_{name}.png")
            iio.imwrite(out, frame.rgb)
            print(f"camera {name} ({camera.source}): frame {frame.rgb.shape} → {out}")
    finally:
        env.close()


if __name__ == "__main__":
    main()
