"""One-line bugs planted in the whole-model engine (rtl/lm.py, the state slots of the scan and
conv units, the SSM state's bank multiplexer, the RAM's read-modify-write, the scan's state
write, the state port, the weight stream's demultiplexer, the cycle formula), one at a time;
tests/test_lm_engine.py (with the conv unit's tests of tests/test_layer_units.py, the
demultiplexer's of tests/test_layer.py, the RAM's of tests/test_bram.py and the scan's of
tests/test_ssm_scan.py) must fail on each.

``make mutate-lm`` runs it and prints which were caught (the file is restored after each);
``python tests/mutation/lm_engine.py WORDS...`` runs those whose name contains one of WORDS.
"""

import sys

from runner import run_mutants  # tests/mutation/runner.py (this folder is on the path)

MUTANTS = [
    ("scan: every layer's state in slot 0 (base never stepped)", "rtl/ssm_scan.py",
     "0,\n                                                base + H * P * K))",
     "0,\n                                                base))"),
    ("scan: the slot wraps one layer early", "rtl/ssm_scan.py",
     "base.eq(Mux(base == (S - 1) * H * P * K, 0,", "base.eq(Mux(base == (S - 2) * H * P * K, 0,"),
    ("conv: the slot wraps one layer early", "rtl/layer_units.py",
     "base.eq(Mux(base == (S - 1) * G, 0, base + G))", "base.eq(Mux(base == (S - 2) * G, 0, base + G))"),
    ("scan: h' written a cycle after its first at RW_WRITE (the next chunk's address)",
     "rtl/ssm_scan.py", "st_fresh.eq(adv & at[RW_WRITE - 1].valid)",
     "st_fresh.eq(adv & at[RW_WRITE].valid)"),
    ("scan: h' not written if its first cycle at RW_WRITE is stalled", "rtl/ssm_scan.py",
     "st_wen.eq(st_fresh)]", "st_wen.eq(st_fresh & adv)]"),
    ("scan: a layer's state written to the next layer's slot", "rtl/ssm_scan.py",
     "        m.d.comb += [st_waddr.eq(at[RW_WRITE].addr),",
     "        m.d.comb += [st_waddr.eq((at[RW_WRITE].addr + H * P * K) % depth),"),
    ("conv: state written to slot 0 whatever the layer", "rtl/layer_units.py",
     '        a1 = _reg(m, base + g, issue, "a1", range(max(S * G, 2)))',
     '        a1 = _reg(m, g, issue, "a1", range(max(S * G, 2)))'),
    ("sequencer: restore skipped (every layer pass starts a sequence)", "rtl/lm.py",
     "        start_now = Mux(from_emb, starts.r_data | fresh, tok_start)",
     "        start_now = Mux(from_emb, starts.r_data | fresh, 1)"),
    ("sequencer: after reset only layer 0 starts afresh", "rtl/lm.py",
     "                m.d.sync += [tok_start.eq(start_now), fresh.eq(0)]",
     "                m.d.sync += [tok_start.eq(starts.r_data), fresh.eq(0)]"),
    ("sequencer: the output of layer L-2 goes to the final norm", "rtl/lm.py",
     "        o_last = opass == L - 1",
     "        o_last = opass == L - 2"),
    ("head: activations released one row early", "rtl/lm.py",
     "                with m.If(r == V - 1):\n                    m.d.sync += a_full.eq(0)",
     "                with m.If(r == V - 2):\n                    m.d.sync += a_full.eq(0)"),
    ("head: row accumulator not cleared at a row's first beat", "rtl/lm.py",
     "                m.d.sync += acc.eq(Mux(mt.first, 0, acc) + total)",
     "                m.d.sync += acc.eq(acc + total)"),
    ("formula: head latency one short", "rtl/lm.py",
     "    return 4 + max(1, -(-levels // 2))",
     "    return 3 + max(1, -(-levels // 2))"),
    ("formula: final norm starts a cycle early", "rtl/lm.py",
     "            start = max(u_last + 1 + norm_lead_cycles(self.pe), mem_last + pace.gap(kn))",
     "            start = max(u_last + norm_lead_cycles(self.pe), mem_last + pace.gap(kn))"),
    # The weight stream's section demultiplexer (rtl/layer.py, in the layer and the top).
    ("demux: a section ends a beat late", "rtl/layer.py",
     "                with m.If(nb == b - 1):", "                with m.If(nb == b):"),
    ("demux: a section ends a beat early", "rtl/layer.py",
     "                with m.If(nb == b - 1):", "                with m.If(nb == max(b - 2, 0)):"),
    ("demux: the last section does not wrap to the first", "rtl/layer.py",
     "sec.eq((i + 1) % n)", "sec.eq(min(i + 1, n - 1))"),
    ("demux: the stream's ready from the first target whatever the section", "rtl/layer.py",
     "            m.d.comb += ready.eq(t.ready)", "            m.d.comb += ready.eq(targets[0].ready)"),
    # The SSM state's bank multiplexer, registered after its first level (rtl/bram.py).
    ("bank multiplexer: the second level selected by the unregistered bank", "rtl/bram.py",
     "    _select(m, out, sel_m, firsts)",
     "    _select(m, out, sel_q[bank_group(banks).bit_length() - 1:], firsts)"),
    ("bank multiplexer: the first level selected a register early", "rtl/bram.py",
     "        _select(m, w, sel_q[:gb], grp)", "        _select(m, w, sel_p[:gb], grp)"),
    ("bank multiplexer: groups start at two banks", "rtl/bram.py", "    g = 1\n", "    g = 2\n"),
    # The read-modify-write: each bank writes back from its own word (rtl/bram.py, the conv).
    ("read-modify-write: every bank writes back from the first bank's word", "rtl/bram.py",
     "        wd = data_for(q)\n", "        wd = data_for(words[0] if words else q)\n"),
    ("read-modify-write: every bank writes back from the multiplexer's word (the long path)",
     "rtl/bram.py", "        wd = data_for(q)\n", "        wd = data_for(out)\n"),
    # The state port (state="memory").
    ("state port: every layer's state saved to the last layer's slot", "rtl/lm.py",
     "                m.d.sync += [req_valid.eq(1), save.eq(load),",
     "                m.d.sync += [req_valid.eq(1), save.eq(save),"),
    ("state port: the restored words never written (a skipped restore)", "rtl/state_swap.py",
     "    m.d.sync += [w_en.eq(step), pend.eq(", "    m.d.sync += [w_en.eq(0), pend.eq("),
    ("state port: a restored word written to the next address", "rtl/state_swap.py",
     "        m.d.sync += [w_data.eq(restore.payload), w_addr.eq(addr)]",
     "        m.d.sync += [w_data.eq(restore.payload), w_addr.eq(addr + 1)]"),
    ("state port: the conv unit's restored words never written", "rtl/layer_units.py",
     '                         st["w_en"].eq((adv & v2) | swap.w_en)]',
     '                         st["w_en"].eq(adv & v2)]'),
    ("state port: the conv swap begins before the layer's last group is written",
     "rtl/layer_units.py", "idle=~in_token & ~v1 & ~v2,", "idle=~in_token,"),
    ("state port: the conv swap begins with the last group's state still in stage 2",
     "rtl/layer_units.py", "idle=~in_token & ~v1 & ~v2,", "idle=~in_token & ~v1,"),
    ("conv: a group's new state written a cycle early, from stage 1's address",
     "rtl/layer_units.py",
     '            m.d.comb += [st["w_addr"].eq(a2), st["w_en"].eq(adv & v2)]',
     '            m.d.comb += [st["w_addr"].eq(a1), st["w_en"].eq(adv & v2)]'),
    ("conv: the written state not zeroed where a sequence starts", "rtl/layer_units.py",
     "[Mux(z2, 0, o)[:xb] for o in", "[o[:xb] for o in"),
    ("state port: the next swap asked once the SSM words are in, the conv's not waited for",
     "rtl/lm.py", "            with m.If(ins[1][0] | ins[1][1]):",
     "            with m.If(1):"),
    ("state port: the swap begins before the layer's last state word is written",
     "rtl/ssm_scan.py", "at[1: RW_WRITE + 1])", "at[1: RW_WRITE])"),
    ("sequencer: a layer's weights not held for its state", "rtl/lm.py",
     "        gated = (togo == 0) & (left != 0) & ~layer.loaded",
     "        gated = (togo == 0) & (left != 0) & 0"),
    ("sequencer: the next swap asked a word early", "rtl/lm.py",
     "            last = port.valid & port.ready & (words == n - 1)",
     "            last = port.valid & port.ready & (words == n - 2)"),
    ("formula: a token's first beat a whole period after the last, rounded down", "rtl/layer.py",
     "            return -(-Fraction(self.period).numerator // Fraction(self.period).denominator)",
     "            return Fraction(self.period).numerator // Fraction(self.period).denominator"),
    ("memory model: the pace's remainder never carried (0.8 read as 1)", "cosim/bench.py",
     "    gap = Mux(first, q + (s != 0), q + (r + s >= d))",
     "    gap = Mux(first, q + (s != 0), q)"),
    ("formula: the conv free to swap a cycle later than its state write", "rtl/lm.py",
     '"conv", CONV_WRITE_STAGE + 1, Pace(conv_period)', '"conv", CONV_WRITE_STAGE + 2, Pace(conv_period)'),
    ("formula: the conv free to swap in its state write's cycle", "rtl/lm.py",
     '"conv", CONV_WRITE_STAGE + 1, Pace(conv_period)', '"conv", CONV_WRITE_STAGE, Pace(conv_period)'),
    ("formula: a swap's words one a cycle whatever the port", "rtl/lm.py",
     "                        ends[ch] = first + sp.span(0, words - 1)",
     "                        ends[ch] = first + (words - 1)"),
    # One memory for the weights and the state (shared).
    ("formula (shared): a swap's words before the weights before its layer are in", "rtl/lm.py",
     "                                    mem_last + 1 if shared else 0)",
     "                                    0)"),
    ("formula (shared): a layer's first beat after the last restored word, not the last saved",
     "rtl/lm.py", "                        mem_at = max(mem_at, max(ends[ch] + channels[ch][4]",
     "                        mem_at = max(mem_at, max(ends[ch]"),
    ("memory model (shared): state words move while the weights stream", "cosim/bench.py",
     "            turn = ~self.cfg.shared | (bi == load * Lb + E)",
     "            turn = 1"),
]

def main() -> int:
    return run_mutants(MUTANTS, ["-n", "2", "tests/test_bram.py",
                                 "tests/test_layer_units.py::test_conv_unit_state_port",
                                 "tests/test_layer.py::test_section_demux_routes_each_beat_to_its_section",
                                 "tests/test_layer_units.py::test_conv_unit",
                                 "tests/test_lm_engine.py", "tests/test_ssm_scan.py",
                                 "-k", "not lint"],
                       sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
