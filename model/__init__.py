"""Bi-Mamba layer: float PyTorch reference, fixed-point spec and bit-exact integer golden model."""
