"""Shared machinery below every layer: device and dtype, distributed info and RNG, the run logger, optim, bench."""
