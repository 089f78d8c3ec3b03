"""Reference data kept as files beside the estimator, each figure with its source.

* ``energy/references/dram.json``: DRAM technologies (energy per bit, peak bandwidth of one
  reference configuration, and its behaviour: the share of the peak it sustains, the latency
  of a row miss, the background power of its ranks or stacks), :func:`load_memories`;
  ``--memory NAME`` of the report picks one, and :data:`DEFAULT_MEMORY` is the architecture's
  default memory.
* ``energy/references/anchors.json``: published decode figures of low-bit LLM systems and the
  memory bandwidth of the measured GPU, :func:`load_anchors` and :func:`gpu_bandwidth`.
* ``bench/results/*.json``: measured GPU decode records, read by
  :func:`bench.gpu_decode.load_results`.

Every row says whether its figure is sourced or an assumption (``status``) and what was
checked against a copy of the source (``checked``); the loaders refuse a row without them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

__all__ = ["REFERENCE_DIR", "DEFAULT_MEMORY", "MemoryTech", "load_memories", "memory_names",
           "load_anchors", "gpu_bandwidth", "BEHAVIOUR", "behaviour_stem", "check_behaviour"]

REFERENCE_DIR = Path(__file__).with_name("references")
DEFAULT_MEMORY = "DDR5"  # the memory Arch's defaults describe (two DDR5-6400 channels)
_STATUSES = ("sourced", "derived", "assumption")
_BEHAVIOUR_STATUSES = ("sourced", "derived", "measured", "assumption")
# The behaviour figures of a technology: name in the file, its limits (inclusive), its unit.
BEHAVIOUR = {"efficiency": (0.05, 1.0, "of the peak bandwidth"),
             "latency_ns": (0.0, 10_000.0, "ns"),
             "background_w": (0.0, 1_000.0, "W")}
_ANCHOR_KEYS = ("system", "model", "platform", "kind", "tokens_per_s", "power_w", "j_per_token",
                "derived", "source", "checked")


@dataclass(frozen=True)
class MemoryTech:
    """One DRAM technology: energy per bit moved and the peak bandwidth of ``config``."""

    name: str
    pj_per_bit: float
    pj_per_bit_range: tuple[float, float] | None
    bytes_per_s: float
    config: str
    energy_source: str
    bandwidth_source: str
    status: str  # sourced, derived (arithmetic on sourced figures, shown) or assumption
    checked: str
    efficiency: float  # the share of the peak bandwidth sustained
    latency_ns: float  # a row miss at the device
    background_w: float  # standby and refresh of every rank or stack of ``config``
    behaviour_sources: dict  # "<figure>_source" and "<figure>_status" of the three above


def _read(name: str) -> dict:
    path = REFERENCE_DIR / name
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{name} must be a readable JSON file: {e}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{name} must hold a JSON object")
    return doc


def _positive(v: object) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and v > 0)


def behaviour_stem(key: str) -> str:
    """The prefix of a behaviour figure's ``_status`` and ``_source`` keys (``latency_ns`` ->
    ``latency``)."""
    return key if key == "efficiency" else key.rsplit("_", 1)[0]


def check_behaviour(label: str, key: str, v: object) -> float:
    """``v`` as behaviour figure ``key`` (:data:`BEHAVIOUR`'s limits), or a ValueError naming
    ``label``, the range and the value."""
    lo, hi, unit = BEHAVIOUR[key]
    if (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
            or not lo <= v <= hi):
        raise ValueError(f"{label} must be a number in [{lo:g}, {hi:g}] {unit}, not {v!r}")
    return float(v)


def load_memories() -> dict[str, MemoryTech]:
    """The DRAM technologies of ``references/dram.json`` by name, in file order.

    Raises
    ------
    ValueError
        On a row without a positive energy and bandwidth, a source for each, a status of
        ``sourced`` or ``assumption``, or a ``checked`` note.
    """
    rows = _read("dram.json").get("technologies")
    if not isinstance(rows, list):
        raise ValueError("dram.json must hold a list 'technologies'")
    out: dict[str, MemoryTech] = {}
    for r in rows:
        name = r.get("name") if isinstance(r, dict) else None
        if not isinstance(name, str) or not name:
            raise ValueError(f"dram.json: every technology needs a name, not {r!r}")
        for k in ("pj_per_bit", "bytes_per_s"):
            if not _positive(r.get(k)):
                raise ValueError(f"dram.json: {name}.{k} must be a positive number, "
                                 f"not {r.get(k)!r}")
        for k in ("config", "energy_source", "bandwidth_source", "checked"):
            if not isinstance(r.get(k), str) or not r[k]:
                raise ValueError(f"dram.json: {name}.{k} is missing")
        if r.get("status") not in _STATUSES:
            raise ValueError(f"dram.json: {name}.status must be one of {', '.join(_STATUSES)}, "
                             f"not {r.get('status')!r}")
        rng = r.get("pj_per_bit_range")
        if rng is not None and not (isinstance(rng, list) and len(rng) == 2
                                    and all(_positive(v) for v in rng) and rng[0] <= rng[1]):
            raise ValueError(f"dram.json: {name}.pj_per_bit_range must be null or [low, high], "
                             f"not {rng!r}")
        if name in out:
            raise ValueError(f"dram.json: {name} is listed twice")
        sources = {}
        for k in BEHAVIOUR:
            check_behaviour(f"dram.json: {name}.{k}", k, r.get(k))
            stem = behaviour_stem(k)
            st, src = r.get(f"{stem}_status"), r.get(f"{stem}_source")
            if st not in _BEHAVIOUR_STATUSES:
                raise ValueError(f"dram.json: {name}.{stem}_status must be one of "
                                 f"{', '.join(_BEHAVIOUR_STATUSES)}, not {st!r}")
            if not isinstance(src, str) or not src:
                raise ValueError(f"dram.json: {name}.{stem}_source is missing")
            sources[f"{stem}_status"], sources[f"{stem}_source"] = st, src
        out[name] = MemoryTech(name, float(r["pj_per_bit"]),
                               None if rng is None else (float(rng[0]), float(rng[1])),
                               float(r["bytes_per_s"]), r["config"], r["energy_source"],
                               r["bandwidth_source"], r["status"], r["checked"],
                               float(r["efficiency"]), float(r["latency_ns"]),
                               float(r["background_w"]), sources)
    if DEFAULT_MEMORY not in out:
        raise ValueError(f"dram.json must list the default memory {DEFAULT_MEMORY}")
    return out


def memory_names() -> list[str]:
    """Names ``--memory`` accepts."""
    return list(load_memories())


def load_anchors() -> list[dict]:
    """Published anchors of ``references/anchors.json``, each with the keys of
    ``_ANCHOR_KEYS``.

    Raises
    ------
    ValueError
        On an anchor that lacks a key, a positive tokens/s, a source or a ``checked`` note.
    """
    rows = _read("anchors.json").get("anchors")
    if not isinstance(rows, list):
        raise ValueError("anchors.json must hold a list 'anchors'")
    for r in rows:
        if not isinstance(r, dict) or any(k not in r for k in _ANCHOR_KEYS):
            raise ValueError(f"anchors.json: every anchor needs {', '.join(_ANCHOR_KEYS)}")
        if not _positive(r["tokens_per_s"]):
            raise ValueError(f"anchors.json: {r['system']}.tokens_per_s must be a positive "
                             f"number, not {r['tokens_per_s']!r}")
        for k in ("power_w", "j_per_token"):
            if r[k] is not None and not _positive(r[k]):
                raise ValueError(f"anchors.json: {r['system']}.{k} must be null or positive")
        if not r["source"] or not r["checked"]:
            raise ValueError(f"anchors.json: {r['system']} needs a source and a checked note")
    return rows


def gpu_bandwidth(gpu: str) -> tuple[float, str] | None:
    """Peak memory bandwidth (bytes/s) and its source for a GPU named in anchors.json."""
    for g in _read("anchors.json").get("gpus", []):
        if g.get("name") == gpu:
            return float(g["bytes_per_s"]), g["source"]
    return None
