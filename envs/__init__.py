"""Simulation environments (MuJoCo + gymnasium, never torch)."""
