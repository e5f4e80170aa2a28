"""Evaluation of trained runs (placeholder; the lead writes this module)."""
