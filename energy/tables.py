"""Per-action energy tables: data files under ``energy/tables/``, one entry per action.

Each entry carries its value, its unit and its source; :func:`load_table` checks all three, so
a table cannot silently mix units or lose its provenance. Add a technology by adding a file
with the same structure (``load_table(path)`` takes any JSON file).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TABLE_DIR", "EnergyEntry", "EnergyTable", "load_table", "table_names",
           "table_for_node"]

TABLE_DIR = Path(__file__).with_name("tables")
_UNITS = {"pJ": 1e-12, "nJ": 1e-9, "fJ": 1e-15}


@dataclass(frozen=True)
class EnergyEntry:
    """One action's energy. ``scaled``: the value is another node's figure scaled linearly,
    not a figure of this table's source (the entry's ``source`` says from what)."""

    value: float
    unit: str
    source: str
    scaled: bool = False

    @property
    def joules(self) -> float:
        return self.value * _UNITS[self.unit]


@dataclass(frozen=True)
class EnergyTable:
    name: str
    source: str
    node_nm: float
    entries: dict[str, EnergyEntry]

    @property
    def scaled_actions(self) -> list[str]:
        """Actions whose entries are scaled from another node, not taken from the source."""
        return [a for a, e in self.entries.items() if e.scaled]

    def __getitem__(self, action: str) -> EnergyEntry:
        try:
            return self.entries[action]
        except KeyError:
            raise KeyError(f"action must be one of {', '.join(sorted(self.entries))}, "
                           f"not {action!r}") from None


def load_table(name_or_path: str | Path = "horowitz_45nm") -> EnergyTable:
    """Load a table by name (``energy/tables/<name>.json``) or path.

    Raises
    ------
    ValueError
        If the file cannot be read as a table, or an entry lacks a positive value, a known
        unit or a source.
    """
    path = Path(name_or_path)
    if not path.suffix:
        path = TABLE_DIR / f"{name_or_path}.json"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in TABLE_DIR.glob("*.json")))
        raise ValueError(f"energy table must be one of {known} or a JSON path, not {str(name_or_path)!r}")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"energy table must be a readable JSON file, not {str(path)!r}: {e}") \
            from None
    keys = ("name", "source", "node_nm", "entries")
    if (not isinstance(raw, dict) or any(k not in raw for k in keys)
            or not isinstance(raw["entries"], dict)
            or not all(isinstance(e, dict) for e in raw["entries"].values())):
        raise ValueError(f"{path.name}: energy table must be a JSON object with "
                         f"{', '.join(keys)} (entries: action -> {{value, unit, source}})")
    node = raw["node_nm"]
    if isinstance(node, bool) or not isinstance(node, (int, float)) or not node > 0:
        raise ValueError(f"{path.name}: node_nm must be a positive number, not {node!r}")
    entries = {}
    for action, e in raw["entries"].items():
        if not isinstance(e.get("value"), (int, float)) or e["value"] <= 0:
            raise ValueError(f"{path.name}: {action}.value must be a positive number, not {e.get('value')!r}")
        if e.get("unit") not in _UNITS:
            raise ValueError(f"{path.name}: {action}.unit must be one of {', '.join(_UNITS)}, "
                             f"not {e.get('unit')!r}")
        if not e.get("source"):
            raise ValueError(f"{path.name}: {action}.source is missing")
        if not isinstance(e.get("scaled", False), bool):
            raise ValueError(f"{path.name}: {action}.scaled must be true or false, not "
                             f"{e['scaled']!r}")
        entries[action] = EnergyEntry(float(e["value"]), e["unit"], e["source"],
                                      e.get("scaled", False))
    return EnergyTable(raw["name"], raw["source"], float(raw["node_nm"]), entries)


def table_names() -> list[str]:
    """Names of the tables shipped in ``energy/tables/``."""
    return sorted(p.stem for p in TABLE_DIR.glob("*.json"))


def table_for_node(node_nm: float) -> EnergyTable | None:
    """The shipped table made for ``node_nm``, or None where there is none."""
    for name in table_names():
        t = load_table(name)
        if t.node_nm == node_nm:
            return t
    return None
