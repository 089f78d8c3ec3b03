"""cocotb 2.x testbenches of the RTL units (run in Verilator through cocotb_tools.runner)."""
