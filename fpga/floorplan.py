"""A multiplier floorplan for nextpnr-ecp5: each unit's ``MULT18X18D`` cells locked to a run of
DSP sites, the units in dataflow order along the device's DSP rows.

Why. The whole-model top uses 120 of the LFE5U-85F's 156 multipliers, and they sit on three
rows only. Placed freely, every unit's multipliers are strung along most of a row (docs/fpga.md:
the scan's from x 9 to 118 of a die 126 tiles wide) and its logic follows them, so the units
overlap and the router has to untangle 150,000 arcs across the whole die: the top did not
route in 30 minutes with its state on chip, nor in 38 with it in SDRAM. With each unit's
multipliers on consecutive sites, and the units in the order the data flows (norm, in_proj,
conv, scan, gate, norm, out_proj, then the final norm and the head), the placer starts from
39 % less wire (the state in SDRAM) and both route, in 7 and 15 minutes beside another build.
It does not raise the clock: the layer engine alone placed at 91.9 MHz with it and at 101.3 MHz
without (seed 1), so only the builds that name a floorplan (:attr:`fpga.units.Build.floorplan`)
get one.

How. nextpnr binds a cell whose ``BEL`` attribute names a site to that site before it places
the rest ("Placed N cells based on constraints" in its log). :func:`apply` writes the attribute
into Yosys's JSON netlist; the sites are taken in serpentine order (:func:`sites`): the first
DSP row left to right, the second right to left, the third left to right, so that consecutive
units stay neighbours across a row's end. Within a unit the cells go in name order.

The sites are the LFE5U-85F's: rows y 10, 34 and 58, each with 52 multipliers at the columns of
:data:`ECP5_85K_DSP_COLUMNS`; the site in a column is ``MULT18_0``, ``_1``, ``_4``, ``_5`` in
turn (the two multipliers of each half of a DSP block). They are the sites nextpnr itself used
when it placed the 141 multipliers of the layer engine freely, and 3 x 52 is the 156 of the
device's data sheet.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["ECP5_85K_DSP_ROWS", "ECP5_85K_DSP_COLUMNS", "DSP_CELL", "sites", "assign", "apply"]

ECP5_85K_DSP_ROWS = (10, 34, 58)
ECP5_85K_DSP_COLUMNS = (4, 5, 8, 9, 13, 14, 17, 18, 22, 23, 26, 27, 31, 32, 35, 36, 40, 41, 44, 45,
                        49, 50, 53, 54, 58, 59, 62, 63, 69, 70, 73, 74, 78, 79, 82, 83, 87, 88, 91,
                        92, 96, 97, 100, 101, 105, 106, 109, 110, 114, 115, 118, 119)
_SITE_NAMES = ("MULT18_0", "MULT18_1", "MULT18_4", "MULT18_5")
DSP_CELL = "MULT18X18D"


def sites() -> list[str]:
    """The LFE5U-85F's 156 multiplier sites, ``X{x}/Y{y}/MULT18_{k}``, in serpentine order."""
    out = []
    for r, y in enumerate(ECP5_85K_DSP_ROWS):
        cols = list(enumerate(ECP5_85K_DSP_COLUMNS))
        for i, x in (cols if r % 2 == 0 else cols[::-1]):
            out.append(f"X{x}/Y{y}/{_SITE_NAMES[i % 4]}")
    return out


def assign(cells: Sequence[str], order: Sequence[str]) -> dict[str, str]:
    """Site of each multiplier cell: the cells of ``order[0]`` (cell names beginning with
    ``order[0] + "."``) on the first sites of :func:`sites`, then those of ``order[1]``...

    Raises
    ------
    ValueError
        If ``order`` is empty or names a unit twice, a unit is a prefix of another (a cell
        would belong to both), a cell belongs to no unit of ``order`` (the message names it
        and the units), or there are more cells than sites.
    """
    order = list(order)
    if not order:
        raise ValueError("order must name at least one unit")
    if len(set(order)) != len(order):
        raise ValueError(f"order names a unit twice: {order}")
    for a in order:
        for b in order:
            if a != b and b.startswith(a + "."):
                raise ValueError(f"order's unit {a!r} contains its unit {b!r}: name disjoint "
                                 f"units")
    by: dict[str, list[str]] = {u: [] for u in order}
    for c in cells:
        unit = next((u for u in order if c.startswith(u + ".")), None)
        if unit is None:
            raise ValueError(f"multiplier {c!r} belongs to no unit of the floorplan; allowed: "
                             f"{', '.join(order)}")
        by[unit].append(c)
    free = sites()
    if len(cells) > len(free):
        raise ValueError(f"{len(cells)} multipliers, but the LFE5U-85F has {len(free)} sites")
    out, k = {}, 0
    for u in order:
        for c in sorted(by[u]):
            out[c] = free[k]
            k += 1
    return out


def apply(netlist: dict, top: str, order: Sequence[str]) -> dict[str, int]:
    """Lock the multipliers of the Yosys JSON ``netlist``'s module ``top`` (in place); return
    the number of cells locked per unit.

    Raises
    ------
    ValueError
        If ``top`` is not a module of the netlist, or from :func:`assign`.
    """
    modules = netlist.get("modules", {})
    if top not in modules:
        raise ValueError(f"top {top!r} is not a module of the netlist; it has "
                         f"{', '.join(sorted(modules)) or 'none'}")
    cells = modules[top].get("cells", {})
    mults = [n for n, c in cells.items() if c.get("type") == DSP_CELL]
    placed = assign(mults, order)
    for n, site in placed.items():
        cells[n].setdefault("attributes", {})["BEL"] = site
    return {u: sum(1 for n in placed if n.startswith(u + ".")) for u in order}
