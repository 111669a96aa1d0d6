"""Simulation: gymnasium envs, recording and evaluation episodes, the seed-ordered worker pool, rendered frames."""
