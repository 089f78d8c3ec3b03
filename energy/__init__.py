"""Cycle and energy estimator of a Bi-Mamba accelerator against an FP16 baseline."""
