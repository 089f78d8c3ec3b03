"""Amaranth 0.5 generators of the accelerator units, emitted as Verilog."""
