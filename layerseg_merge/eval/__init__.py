"""Evaluation: datasets, inference, metrics and reports (no mergekit imports here)."""
