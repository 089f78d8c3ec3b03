"""One-line bugs planted in the estimator, the report and the FPGA flow's parsers and area fit
(energy/estimator.py, energy/report.py, energy/roofline.py, energy/tables.py, fpga/*.py), one
at a time; the fast tests of those packages must fail on each.

``python tests/mutation/energy_fpga.py`` runs them all and prints which were caught (the file
is restored after each) and the kill rate; ``python tests/mutation/energy_fpga.py WORDS...``
runs those whose name contains one of WORDS. The tests run in one process, stopping at the
first failure; the two that simulate a unit against Verilator are left out (the mutants here
do not reach the RTL).
"""

import sys

from runner import run_mutants  # tests/mutation/runner.py (this folder is on the path)

# The fast tests of energy/ and fpga/, the quickest first (-x stops at the first failure).
TESTS = ["tests/test_fpga_reports.py", "tests/test_area_fit.py", "tests/test_report_shares.py",
         "tests/test_platforms.py",
         "tests/test_fpga.py", "tests/test_roofline.py", "tests/test_energy_tables.py",
         "tests/test_footprint.py", "tests/test_report_cli.py", "tests/test_memory_realism.py",
         "tests/test_energy.py"]
DESELECT = "not verilator"
MUTANTS = [
    # energy/estimator.py: the memory's paces and the engine sized to it.
    ("estimator: the token's cycles as if the memory delivered a beat every cycle",
     "energy/estimator.py",
     "cycles = lmc.schedule(period, lat, s_period, lat, c_period,",
     "cycles = lmc.schedule(1, lat, s_period, lat, c_period,"),
    ("estimator: a pace that does not fit 16 bits rounded down (faster than the memory)",
     "energy/estimator.py", "    return Fraction(math.ceil(x * den), den)",
     "    return Fraction(math.floor(x * den), den)"),
    ("estimator: a swap moves the state one way only", "energy/estimator.py",
     "moved = Fraction(2 * (ns * lmc.state_word_bits + nc * lmc.conv_word_bits), 8)",
     "moved = Fraction(ns * lmc.state_word_bits + nc * lmc.conv_word_bits, 8)"),
    ("estimator: the state port's word a cycle not a limit", "energy/estimator.py",
     "t = Fraction(max(moved / bytes_per_cycle(arch), ns, nc))",
     "t = Fraction(max(moved / bytes_per_cycle(arch), nc))"),
    ("estimator: a beat one size up when the bandwidth is a power of two", "energy/estimator.py",
     "    while beat < bytes_per_cycle:", "    while beat <= bytes_per_cycle:"),
    ("estimator: lanes sized to 80 % of the roofline, not 90 %", "energy/estimator.py",
     "if best.roofline_fraction(memory_period(best, arch)) >= 0.9:",
     "if best.roofline_fraction(memory_period(best, arch)) >= 0.8:"),
    ("estimator: compute-bound when the memory needs exactly a cycle a beat",
     "energy/estimator.py",
     "\n                        >= lc.in_proj.cycles_per_weight else \"compute\")",
     "\n                        > lc.in_proj.cycles_per_weight else \"compute\")"),
    ("estimator: an add above 8 bits interpolated over 32 bits, not 24", "energy/estimator.py",
     "e = a8 * bits / 8 if bits <= 8 else a8 + (bits - 8) * (a32 - a8) / 24",
     "e = a8 * bits / 8 if bits <= 8 else a8 + (bits - 8) * (a32 - a8) / 32"),
    ("estimator: a prefill's head rows streamed for every token", "energy/estimator.py",
     "head_bytes = (beats[\"norm_f\"] + beats[\"head\"]) * bb / tokens",
     "head_bytes = (beats[\"norm_f\"] + beats[\"head\"]) * bb"),
    # energy/report.py: the shares and the area view.
    ("report: the layer's share as if the memory delivered a beat every cycle",
     "energy/report.py", "\"layer_roofline_fraction\": float(lc.roofline_fraction(period)),",
     "\"layer_roofline_fraction\": float(lc.roofline_fraction(1)),"),
    ("report: the memory's busy share counts a beat a cycle", "energy/report.py",
     "\"memory_busy_fraction\": float(moved / (b.dram_bytes_per_s / b.clock_hz) / b.cycles)}",
     "\"memory_busy_fraction\": float(moved / lc.beat_bytes / b.cycles)}"),
    ("report: the share of the roofline over the FP16 roofline", "energy/report.py",
     "\"roofline_fraction\": b.tokens_per_s / roof[\"bimamba\"],",
     "\"roofline_fraction\": b.tokens_per_s / roof[\"fp16\"],"),
    ("report: --area with simd and pe swapped", "energy/report.py",
     "**area_estimate(d[\"simd\"], d[\"pe\"], d[\"lanes\"], area)}",
     "**area_estimate(d[\"pe\"], d[\"simd\"], d[\"lanes\"], area)}"),
    # energy/roofline.py and energy/tables.py.
    ("roofline: conv state of K inputs a channel, not K - 1", "energy/roofline.py",
     "\"conv_state\": 0.0 if state_on_chip else L * 2 * C * (K - 1) * db / 8,",
     "\"conv_state\": 0.0 if state_on_chip else L * 2 * C * K * db / 8,"),
    ("tables: an entry of 0 accepted", "energy/tables.py",
     "or e[\"value\"] <= 0:", "or e[\"value\"] < 0:"),
    # fpga/area.py.
    ("area: the largest measured size counted as extrapolation", "fpga/area.py",
     "not min(p[t] for p in pts) <= v <= max(p[t] for p in pts)",
     "not min(p[t] for p in pts) <= v < max(p[t] for p in pts)"),
    ("area: only the first term checked for extrapolation", "fpga/area.py",
     "        for t, v in x.items():\n            out[\"extrapolated\"]",
     "        for t, v in list(x.items())[:1]:\n            out[\"extrapolated\"]"),
    ("area: DSPs rounded to the nearest, not up", "fpga/area.py",
     "est[k] = math.ceil(v - 1e-6) if k == \"dsp\" else round(v)", "est[k] = round(v)"),
    ("area: block RAMs of the nearest point on a linear scale", "fpga/area.py",
     "near = min(pts, key=lambda p: abs(math.log(p[first]) - math.log(x[first])))",
     "near = min(pts, key=lambda p: abs(p[first] - x[first]))"),
    ("area: the worst relative residual over the fitted values", "fpga/area.py",
     "(np.abs(resid) / np.maximum(np.abs(y), 1)).max()",
     "(np.abs(resid) / np.maximum(np.abs(a @ coef), 1)).max()"),
    # fpga/parse.py and fpga/flow.py.
    ("parse: a memory with one registered read port of two taken as registered", "fpga/parse.py",
     "sync_read=rd > 0 and set(bits) == {\"1\"}", "sync_read=rd > 0 and \"1\" in bits"),
    ("parse: Fmax of the fastest clock", "fpga/parse.py",
     "clk = min(fmax.values(), key=lambda v: v[\"achieved\"])",
     "clk = max(fmax.values(), key=lambda v: v[\"achieved\"])"),
    ("parse: a clock's own paths only from rising edge to rising edge", "fpga/parse.py",
     "own = [p for p in paths if _clock(p.get(\"from\")) == _clock(p.get(\"to\")) == clk]",
     "own = [p for p in paths if p.get(\"from\") == p.get(\"to\") == f\"posedge {clk}\"]"),
    ("flow: the ECP5's ALU54B left out of the DSPs", "fpga/flow.py",
     "dsp=used.get(\"MULT18X18D\", 0) + used.get(\"ALU54B\", 0),",
     "dsp=used.get(\"MULT18X18D\", 0),"),
    ("flow: the iCE40's fit ignores the flip-flops", "fpga/flow.py",
     "    if max(lut, ff) > cap[\"lc\"]:", "    if lut > cap[\"lc\"]:"),
    # energy/platforms.py and the report's --platform: the machine an estimate is tied to.
    ("platforms: an FPGA clock ten times below its measured Fmax", "energy/platforms.py",
     'clock_hz, source = build["fmax_mhz"] * 1e6, "measured"',
     'clock_hz, source = build["fmax_mhz"] * 1e5, "measured"'),
    ("platforms: the rest of the whole engine not grown with pe", "energy/platforms.py",
     "need = {k: math.ceil(est[\"total\"][k] + per_pe[k] * pe - 1e-9) for k in RESOURCES}",
     "need = {k: math.ceil(est[\"total\"][k] + per_pe[k] * 4 - 1e-9) for k in RESOURCES}"),
    ("platforms: the state in DRAM not counted against the memory", "energy/platforms.py",
     "+ (0 if arch.state_on_chip else report[\"state_bytes\"]))", "+ 0)"),
    ("report: an FPGA engine twice the device taken", "energy/report.py",
     "        if all(need[k] <= p.resources[k] for k in need):",
     "        if all(need[k] <= 2 * p.resources[k] for k in need):"),
    ("report: --set beside --platform silently overridden", "energy/report.py",
     "    clash = [k for k in PLATFORM_FIELDS if k in given]", "    clash = []"),
    # The memory's behaviour, the head's rows and the strongest baseline.
    ("estimator: the memory's efficiency left out of its bytes a cycle", "energy/estimator.py",
     "    return peak * Fraction(repr(float(arch.dram_efficiency))) / Fraction(",
     "    return peak / Fraction("),
    ("estimator: the latency rounded down to whole cycles", "energy/estimator.py",
     "    return math.ceil(ns * Fraction(repr(float(arch.clock_hz))) / 10**9)",
     "    return math.floor(ns * Fraction(repr(float(arch.clock_hz))) / 10**9)"),
    ("estimator: the 1-bit step at latency 0", "energy/estimator.py",
     "cycles = lmc.schedule(period, lat, s_period, lat, c_period,",
     "cycles = lmc.schedule(period, 0, s_period, 0, c_period,"),
    ("estimator: the greedy step ends at the last logit, not the cycle after",
     "energy/estimator.py", "                                  shared=True).last_logit + 1",
     "                                  shared=True).last_logit"),
    ("estimator: the FP16 step hides the row's latency", "energy/estimator.py",
     "        cycles += lat / tokens  # the token's embedding row",
     "        cycles += 0 / tokens  # the token's embedding row"),
    ("estimator: the memory's background power left out", "energy/estimator.py",
     '        est.energy_j["dram_background"] = arch.dram_background_w / est.tokens_per_s',
     '        est.energy_j["dram_background"] = 0.0'),
    ("report: --memory keeps the default efficiency", "energy/report.py",
     "                   dram_efficiency=m.efficiency, dram_latency_ns=m.latency_ns,",
     "                   dram_latency_ns=m.latency_ns,"),
    ("report: a GPU record set against the estimate of another head size", "energy/report.py",
     '        if r["preset"] != name or record_vocab(r) != vocab:',
     '        if r["preset"] != name:'),
    ("report: the measured 1-bit GPU not a candidate of the strongest baseline",
     "energy/report.py", '    if gpus and "1-bit" in gpus:', "    if False:"),
    ("report: the head at Bi-Mamba's 32,000 rows by default", "energy/report.py",
     "DEFAULT_VOCAB = MAMBA2_VOCAB", "DEFAULT_VOCAB = 32000"),
    ("platforms: a platform's memory at its peak", "energy/platforms.py",
     "                   dram_pj_per_bit=p.pj_per_bit, dram_efficiency=p.efficiency,",
     "                   dram_pj_per_bit=p.pj_per_bit, dram_efficiency=1.0,"),
    ("report: the ASIC clock table at one clock", "energy/report.py",
     '            e = estimate(cfg, replace(arch, clock_hz=hz), "bimamba")',
     '            e = estimate(cfg, replace(arch), "bimamba")'),
]


def main() -> int:
    return run_mutants(MUTANTS, [*TESTS, "-k", DESELECT], sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
