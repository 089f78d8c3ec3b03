"""Switching activity of an engine in simulation: what toggled, where, on real data.

A ``saif`` build of :mod:`cosim.verilator` traces every signal of the emitted Verilog into a
SAIF file (Verilator's ``--trace-saif``): for every bit, its toggle count ``TC`` and the time
it spent at 1, ``T1``. SAIF alone cannot say what a name is: one net is seen under several
names (a port in the child and in the parent, ``assign a = b``), and a memory's contents are
not traced. So the emitted Verilog is read too (:func:`parse_verilog`, for the regular text
that Amaranth's back end writes) and every name of every module is given one class:

* ``ff``: a register, the left side of a ``<=`` in an ``always @(posedge clk)`` block;
* ``comb``: a net computed by logic: the left side of an ``assign`` whose right side has an
  operator, or of an ``always @*`` block;
* a memory (an array) with its ports: a write (``mem[a] <= d``, or a slice of it, under its
  ``if (enable)``), a synchronous read (``q <= mem[a]`` under its enable; ``q`` belongs to the
  memory, not to the registers) or an asynchronous read (``assign q = mem[a]``);
* anything else is not counted in this module: an input port (its driver is counted where
  it is driven), a net driven by a child instance, an alias (``assign a = b``, a slice or a
  concatenation of names and constants).

:func:`module_activity` then sums, per module instance, the register bits, their toggles, the
clocked bit-cycles a word-level clock gate could not avoid (a word's width times the toggles
of its busiest bit), the toggles of the logic's nets and the bits each memory read and wrote:
a port with a named enable accesses as many times as the enable was 1 at a clock edge (its
``T1`` over the clock period), a read without one as many times as its data changed (the
toggles of its busiest bit: a lower bound). :mod:`energy.activity` prices these counts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["MemoryPort", "ModuleNets", "NetActivity", "InstanceActivity", "parse_verilog",
           "parse_saif", "module_activity"]


@dataclass(frozen=True)
class MemoryPort:
    """One port of a memory: ``kind`` "write", "read" (synchronous) or "async"; ``bits`` a
    access; ``enable`` the name (and bit, or None) of its enable, None if it has none or an
    expression; ``data`` the net that carries a read's data."""

    memory: str
    kind: str
    bits: int
    enable: tuple[str, int | None] | None = None
    data: str | None = None


@dataclass
class ModuleNets:
    """The classes of one module's names (see the module docstring); widths in bits."""

    ff: dict[str, int] = field(default_factory=dict)
    comb: dict[str, int] = field(default_factory=dict)
    memories: dict[str, tuple[int, int]] = field(default_factory=dict)  # name: (width, depth)
    ports: list[MemoryPort] = field(default_factory=list)


_MODULE = re.compile(r"^module\s+(\\\S+|[A-Za-z_][\w$]*)\s*\(")
# A declaration: kind, an optional signed and range, the name, an optional array range.
_DECL = re.compile(r"^\s*(input|output|inout|wire|reg)\s+(?:signed\s+)?(?:\[(\d+):(\d+)\]\s*)?"
                   r"(\\\S+|[A-Za-z_][\w$]*)\s*(?:\[(\d+):(\d+)\])?\s*(?:=[^;]*)?;")
_NAME = r"(?:\\\S+|[A-Za-z_][\w$]*)"
_NAME_AT = re.compile(r"\s*(" + _NAME + r")\s*")
_CONST = r"(?:\d+'[sS]?[hdbo][0-9a-fA-FxXzZ_]+|\d+)"
_ALIAS_ATOM = re.compile(r"(" + _NAME + r")\s*(?:\[[^\]]*\]\s*)?|" + _CONST)
_IF = re.compile(r"^\s*if\s*\((.*)\)\s*(begin)?\s*(.*)$")


def _ref(text: str) -> tuple[str, list[str]] | None:
    """``name`` and the contents of its selects, for a text that is one name with selects
    (``mem[a][3:0]``, ``rom[\\$12 [7:0]]``); None for anything else."""
    m = _NAME_AT.match(text)
    if not m:
        return None
    sels, i, rest = [], m.end(), text
    while i < len(rest):
        if rest[i].isspace():
            i += 1
            continue
        if rest[i] != "[":
            return None
        depth, j = 0, i
        while j < len(rest):
            depth += {"[": 1, "]": -1}.get(rest[j], 0)
            if depth == 0:
                break
            j += 1
        if depth:
            return None
        sels.append(rest[i + 1:j].strip())
        i = j + 1
    return _name(m.group(1)), sels


def _name(raw: str) -> str:
    """A Verilog identifier as SAIF writes it: without an escape's backslash."""
    return raw[1:] if raw.startswith("\\") else raw


def _width(hi: str | None, lo: str | None) -> int:
    return abs(int(hi) - int(lo)) + 1 if hi is not None else 1


def _sel_width(sel: str) -> int | None:
    """The width of a ``[hi:lo]`` select, 1 for ``[k]``, None for an expression."""
    parts = sel.split(":")
    if len(parts) == 1:
        return 1
    try:
        return _width(parts[0], parts[1])
    except ValueError:
        return None


def _enable(cond: str) -> tuple[str, int | None] | None:
    """``name`` or ``name[k]`` as (name, k); None for an expression."""
    r = _ref(cond)
    if r is None:
        return None
    name, sels = r
    if not sels:
        return name, None
    if len(sels) == 1 and sels[0].isdigit():
        return name, int(sels[0])
    return None


def _is_alias(rhs: str) -> bool:
    """A right side that only renames: names (with selects), constants, concatenations."""
    rest = _ALIAS_ATOM.sub("", rhs)
    return not re.sub(r"[{},\s]", "", rest)


def _block(lines: list[str], i: int, opened: bool) -> tuple[list[str], int]:
    """The lines of the block after an ``always`` line, and the index after it: up to the
    ``end`` that closes its ``begin`` (``opened``), else the one statement that follows."""
    if not opened:
        return [lines[i]], i + 1
    depth, out = 1, []
    while i < len(lines):
        s = lines[i]
        i += 1
        words = re.findall(r"\b(begin|end)\b", s)
        depth += words.count("begin") - words.count("end")
        if depth <= 0:
            return out, i
        out.append(s)
    raise ValueError("an always block is not closed before the end of the text")


def _statements(block: list[str]) -> list[tuple[list[str], str]]:
    """The assignments of a block, each with the conditions of the ``if``s around it
    (innermost last; ``"!"`` for an else branch, which has no named enable)."""
    out: list[tuple[list[str], str]] = []
    stack: list[str] = []
    pending: str | None = None  # an if without begin: it governs the next line's statement
    for line in block:
        s = line.strip()
        if not s:
            continue
        if s == "end":
            stack.pop() if stack else None
            continue
        if s in ("end else begin", "else begin"):
            if s.startswith("end") and stack:
                stack.pop()
            stack.append("!")
            continue
        m = _IF.match(s)
        if m:
            cond, begin, tail = m.group(1), m.group(2), m.group(3)
            if begin and tail == "end":
                continue  # ``if (x) begin end``: an empty branch
            if begin:
                stack.append(cond)
            elif tail:
                out.append((stack + [cond], tail))
            else:
                pending = cond
            continue
        if s.endswith("begin"):  # a case item with a block
            stack.append("!")
            continue
        if "=" in s and s.endswith(";"):
            out.append((stack + ([pending] if pending else []), s.split(":", 1)[-1].strip()
                        if re.match(r"^[\w']+\s*:", s) else s))
        pending = None
    return out


def parse_verilog(text: str) -> dict[str, ModuleNets]:
    """The classes of every module's names (module docstring), by module name (without the
    escape: ``bimamba_lm_bench.lm.layer.ufifo``)."""
    mods: dict[str, ModuleNets] = {}
    lines = text.splitlines()
    cur: ModuleNets | None = None
    widths: dict[str, int] = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        m = _MODULE.match(line)
        if m:
            cur = mods.setdefault(_name(m.group(1)), ModuleNets())
            widths = {}
            continue
        if cur is None:
            continue
        s = line.strip()
        if s.startswith("endmodule"):
            cur = None
            continue
        d = _DECL.match(line)
        if d:
            name = _name(d.group(4))
            if d.group(5) is not None:
                cur.memories[name] = (_width(d.group(2), d.group(3)), _width(d.group(5),
                                                                             d.group(6)))
            else:
                widths[name] = max(widths.get(name, 0), _width(d.group(2), d.group(3)))
            continue
        if s.startswith("initial"):  # a ROM's contents
            while i < len(lines) and lines[i].strip() != "end":
                i += 1
            i += 1
            continue
        if s.startswith("always @(posedge"):
            block, i = _block(lines, i, s.endswith("begin"))
            for conds, st in _statements(block):
                _sequential(cur, widths, conds, st)
            continue
        if s.startswith("always @*"):
            block, i = _block(lines, i, s.endswith("begin"))
            for _, st in _statements(block):
                r = _ref(st.split("=", 1)[0])
                if r:
                    cur.comb[r[0]] = widths.get(r[0], 1)
            continue
        if s.startswith("assign "):
            lhs, _, rhs = s[len("assign "):].rstrip(";").partition(" = ")
            r = _ref(lhs)
            if not r:
                continue
            n = r[0]
            src = _ref(rhs)
            if src and src[0] in cur.memories:
                mem = src[0]
                cur.ports.append(MemoryPort(mem, "async", cur.memories[mem][0], None, n))
            elif not _is_alias(rhs):
                cur.comb[n] = widths.get(n, 1)
    return mods


def _sequential(cur: ModuleNets, widths: dict[str, int], conds: list[str], st: str) -> None:
    lhs, sep, rhs = st.rstrip(";").partition("<=")
    if not sep:
        return
    r = _ref(lhs)
    if not r:
        return
    n, sels = r
    en = _enable(conds[-1]) if conds else None
    if n in cur.memories:
        bits = (_sel_width(sels[1]) if len(sels) > 1 else None) or cur.memories[n][0]
        cur.ports.append(MemoryPort(n, "write", bits, en))
        return
    src = _ref(rhs.strip())
    if src and src[0] in cur.memories:
        mem = src[0]
        cur.ports.append(MemoryPort(mem, "read", cur.memories[mem][0], en, n))
        return
    cur.ff[n] = widths.get(n, 1)


@dataclass
class NetActivity:
    """A traced name's bits: their toggle counts and their times at 1 (the SAIF's units)."""

    tc: dict[int | None, int] = field(default_factory=dict)
    t1: dict[int | None, int] = field(default_factory=dict)

    @property
    def toggles(self) -> int:
        return sum(self.tc.values())

    @property
    def busiest(self) -> int:
        return max(self.tc.values(), default=0)


_SAIF_NET = re.compile(r"^\s*\((\S+?)(?:\\\[(\d+)\\\])? \(T0 (\d+)\) \(T1 (\d+)\).*\(TC (\d+)\)\)$")


def parse_saif(path: Path | str) -> tuple[int, int, dict[str, dict[str, NetActivity]]]:
    """A SAIF file as Verilator writes it: its duration, its timescale's unit in
    picoseconds... (returned as 1 for ``1ps``) and, by instance path (``a/b/c``, the SAIF's
    divider), every net's bits.

    Raises
    ------
    ValueError
        If the file has no DURATION or a timescale other than 1ps, 1ns.
    """
    duration, unit = None, None
    nets: dict[str, dict[str, NetActivity]] = {}
    stack: list[str] = []
    in_net = False
    table: dict[str, NetActivity] = {}
    with open(path) as fh:
        for line in fh:
            s = line.strip()
            if in_net:
                if s == ")":
                    in_net = False
                    continue
                m = _SAIF_NET.match(line)
                if m:
                    name = m.group(1).replace("\\", "")
                    bit = int(m.group(2)) if m.group(2) is not None else None
                    a = table.get(name)
                    if a is None:
                        a = table[name] = NetActivity()
                    a.tc[bit] = int(m.group(5))
                    a.t1[bit] = int(m.group(4))
                continue
            if s.startswith("(INSTANCE"):
                stack.append(s.split(None, 1)[1])
                table = nets.setdefault("/".join(stack), {})
            elif s == "(NET":
                in_net = True
            elif s == ")":
                if stack:
                    stack.pop()
            elif s.startswith("(DURATION"):
                duration = int(s.split()[1].rstrip(")"))
            elif s.startswith("(TIMESCALE"):
                unit = {"1ps": 1, "1ns": 1000}.get(s.split()[1].rstrip(")"))
                if unit is None:
                    raise ValueError(f"{path}: timescale must be 1ps or 1ns, not {s!r}")
    if duration is None or unit is None:
        raise ValueError(f"{path}: a SAIF file must have a DURATION and a TIMESCALE")
    return duration, unit, nets


@dataclass
class InstanceActivity:
    """The counts of one module instance over a run (module docstring)."""

    path: str
    ff_bits: int = 0
    ff_toggles: int = 0
    ff_gated_clocks: int = 0  # bit-cycles a word-level clock gate must still clock
    comb_bits: int = 0
    comb_toggles: int = 0
    # memory: (width, depth, bits read, bits written)
    memories: dict[str, list[int]] = field(default_factory=dict)
    untraced_bits: int = 0  # classified bits the SAIF does not have (should be 0)


def module_activity(mods: dict[str, ModuleNets], nets: dict[str, dict[str, NetActivity]],
                    period: int, top: str) -> list[InstanceActivity]:
    """Per instance of the SAIF under ``top`` (its instance name), the counts of
    :class:`InstanceActivity`; ``period`` is the clock period in the SAIF's units. An
    instance's module is its path with dots (``top/lm/layer`` is ``top.lm.layer``)."""
    out = []
    for path, table in nets.items():
        parts = path.split("/")
        if parts[0] != top:
            continue
        mod = mods.get(".".join(parts))
        if mod is None:
            raise ValueError(f"SAIF instance {path} has no module {'.'.join(parts)} in the "
                             f"Verilog")
        a = InstanceActivity(path)
        a.ff_bits, a.ff_toggles, a.ff_gated_clocks, untraced_ff = _sum(mod.ff, table)
        a.comb_bits, a.comb_toggles, _, untraced_comb = _sum(mod.comb, table)
        a.untraced_bits = untraced_ff + untraced_comb
        for name, (w, depth) in mod.memories.items():
            a.memories[name] = [w, depth, 0, 0]
        for p in mod.ports:
            count = _accesses(p, table, period)
            a.memories[p.memory][3 if p.kind == "write" else 2] += count * p.bits
        out.append(a)
    return out


def _sum(names: dict[str, int], table: dict[str, NetActivity]) -> tuple[int, int, int, int]:
    """Over ``names`` (name: width): bits, toggles, width times busiest bit's toggles, and the
    bits the SAIF does not have."""
    bits = toggles = gated = untraced = 0
    for name, w in names.items():
        bits += w
        n = table.get(name)
        if n is None:
            untraced += w
            continue
        toggles += n.toggles
        gated += w * n.busiest
    return bits, toggles, gated, untraced


def _accesses(p: MemoryPort, table: dict[str, NetActivity], period: int) -> int:
    if p.enable is not None and p.enable[0] in table:
        n = table[p.enable[0]]
        t1 = n.t1.get(p.enable[1], n.t1.get(None, 0)) if p.enable[1] is not None else \
            n.t1.get(None, max(n.t1.values(), default=0))
        return round(t1 / period)
    if p.data is not None and p.data in table:
        return table[p.data].busiest
    return 0
