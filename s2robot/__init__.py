"""s2robot: frozen MVP vision encoders wrapped with S² (Scaling on Scales) for behavior-cloning policies."""

# Every process that uses s2robot can make every s2robot env by id: the arm env registers from its own layer
# (s2robot/real/__init__.py, by entry-point name only); the simulated scene registers with ``envs`` when first made.
import s2robot.real  # noqa: F401

__version__ = "0.1.0"
