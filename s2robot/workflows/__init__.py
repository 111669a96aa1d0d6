"""Workflows: record, cache, train, pretrain, evaluate, report, probe, compare, pipeline (what scripts call)."""
