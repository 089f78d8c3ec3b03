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
    """One port of a memory: ``kind`` "write", "read" (synchronous) or "async"; ``bits`` an
    access; ``enable`` the name (and bit, or None) of its enable, None if it has none
    (``always``: a clocked port outside any ``if``, accessed every cycle) or one that is not a
    name (an expression, an ``else`` or ``case`` branch, nested ``if``s: the port is then
    counted as untraced, not as idle); ``data`` the net that carries a read's data."""

    memory: str
    kind: str
    bits: int
    enable: tuple[str, int | None] | None = None
    data: str | None = None
    always: bool = False


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
_CASE_LABEL = re.compile(r"^((?:\d+'[sS]?[bhdo][0-9a-fA-F_xXzZ?]+|\d+)(?:\s*,\s*(?:\d+'[sS]?[bhdo]"
                         r"[0-9a-fA-F_xXzZ?]+|\d+))*|default)\s*:\s*(.*)$")


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
    depth, out, first = 1, [], i
    while i < len(lines):
        s = lines[i]
        i += 1
        words = re.findall(r"\b(begin|end)\b", s)
        depth += words.count("begin") - words.count("end")
        if depth <= 0:
            return out, i
        out.append(s)
    raise ValueError(f"the block opened on line {first} is not closed before the end of the "
                     f"Verilog")


def _split_if(s: str) -> tuple[str, str] | None:
    """``if (cond) rest`` as (cond, rest), the condition's parentheses balanced; None for a
    line that is not an ``if``."""
    m = re.match(r"^if\s*\(", s)
    if not m:
        return None
    depth, j = 1, m.end()
    while j < len(s) and depth:
        depth += {"(": 1, ")": -1}.get(s[j], 0)
        j += 1
    return (s[m.end(): j - 1].strip(), s[j:].strip()) if not depth else None


def _statements(block: list[str]) -> list[tuple[list[str], str]]:
    """The assignments of a block, each with the conditions of the ``if``s around it
    (innermost last; ``"!"`` for an ``else``, ``else if`` or ``case`` branch, which has no
    named enable)."""
    out: list[tuple[list[str], str]] = []
    stack: list[str] = []
    pending: str | None = None  # a condition without begin: it governs the next statement
    for line in block:
        s = line.strip()
        if not s:
            continue
        if s == "end":
            stack.pop() if stack else None
            continue
        if s.startswith("end "):  # ``end else ...``
            stack.pop() if stack else None
            s = s[4:].strip()
        branch = False  # an else or a case item: not a named enable
        if s.startswith("else") and (len(s) == 4 or not (s[4].isalnum() or s[4] in "_$")):
            s, branch = s[4:].strip(), True
        elif s.startswith("endcase") or re.match(r"^case[zx]?\s*\(", s):
            continue
        else:
            item = _CASE_LABEL.match(s)
            if item and not re.search(r"<?=", item.group(1)):
                s, branch = item.group(2).strip(), True
        if not s:
            pending = "!"
            continue
        if s == "begin":  # a block: under the pending condition, if any
            stack.append("!" if branch else (pending or ""))
            pending = None
            continue
        split = _split_if(s)
        if split:
            cond, tail = split
            cond = "!" if branch else cond
            if tail == "begin end":
                continue  # ``if (x) begin end``: an empty branch
            if tail == "begin":
                stack.append(cond)
            elif tail:
                out.append(([c for c in stack if c] + [cond], tail))
            else:
                pending = cond
            continue
        if "=" in s and s.endswith(";"):
            cond = ["!"] if branch else ([pending] if pending else [])
            out.append(([c for c in stack if c] + cond, s))
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
        if s.startswith("initial"):  # a ROM's contents: not logic
            if s.endswith("begin"):
                _, i = _block(lines, i, True)
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
            if lhs.startswith("{"):  # ``assign { a, b } = ...``: each name of the left side
                if not _is_alias(rhs):
                    for part in lhs.strip("{} ").split(","):
                        r = _ref(part)
                        if r is None:
                            raise ValueError(f"line {i}: a left side of names is expected, "
                                             f"not {lhs!r}")
                        cur.comb[r[0]] = widths.get(r[0], 1)
                continue
            r = _ref(lhs)
            if not r:
                raise ValueError(f"line {i}: an assign's left side must be a name with "
                                 f"selects or a concatenation of them, not {lhs!r}")
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
    en = _enable(conds[0]) if len(conds) == 1 else None
    if n in cur.memories:
        bits = (_sel_width(sels[1]) if len(sels) > 1 else None) or cur.memories[n][0]
        cur.ports.append(MemoryPort(n, "write", bits, en, always=not conds))
        return
    src = _ref(rhs.strip())
    if src and src[0] in cur.memories:
        mem = src[0]
        cur.ports.append(MemoryPort(mem, "read", cur.memories[mem][0], en, n, always=not conds))
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
                    period: int, cycles: int, top: str) -> list[InstanceActivity]:
    """Per instance of the SAIF under ``top`` (its instance name), the counts of
    :class:`InstanceActivity` over a run of ``cycles`` clock cycles of ``period`` (the SAIF's
    units). An instance's module is its path with dots (``top/lm/layer`` is ``top.lm.layer``).
    A memory port whose accesses cannot be read (its enable not a traced name) adds its width
    to ``untraced_bits`` instead of counting as idle.

    Raises
    ------
    ValueError
        If ``top`` is not an instance of the SAIF, or an instance has no module in the
        Verilog.
    """
    tops = sorted({p.split("/")[0] for p in nets})
    if top not in tops:
        raise ValueError(f"top must be one of the SAIF's top instances ({', '.join(tops)}), "
                         f"not {top!r}")
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
            count = _accesses(p, table, period, cycles)
            if count is None:
                a.untraced_bits += p.bits
                continue
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


def _accesses(p: MemoryPort, table: dict[str, NetActivity], period: int,
              cycles: int) -> int | None:
    """A port's accesses over the run; None when they cannot be read from the SAIF."""
    if p.always:  # a clocked port outside any if: every cycle
        return cycles
    if p.enable is not None:
        n = table.get(p.enable[0])
        if n is None or p.enable[1] not in n.t1:
            return None
        return round(n.t1[p.enable[1]] / period)
    if p.kind == "async" and p.data in table:
        return table[p.data].busiest
    return None
