"""s2robot: frozen MVP vision encoders wrapped with S² (Scaling on Scales) for behavior-cloning policies."""

__version__ = "0.1.0"
