"""Evaluation: metrics, statistics, volume-level evaluation, study tables and hypothesis verdicts."""
