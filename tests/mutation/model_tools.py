"""One-line bugs planted in the model's newer code, one at a time: the checkpoint validator and
the sign packing (model/reference/), the corpus checks (model/data/), training's checks and its
divergence stop (model/train/), the sampler (model/generate/), the evaluation's calibration,
byte counts and gates (model/evaluate/), the golden LM's calibration stream (model/golden/),
the command-line helpers and the progress clock (model/cli.py, model/progress.py). The fast
tests of model/ must fail on each.

``python tests/mutation/model_tools.py`` runs them all and prints which were caught (the file
is restored after each) and the kill rate; ``python tests/mutation/model_tools.py WORDS...``
runs those whose name contains one of WORDS.
"""

import sys

from runner import run_mutants  # tests/mutation/runner.py (this folder is on the path)

# The fast tests of model/'s newer code, the quickest first (-x stops at the first failure).
TESTS = ["tests/test_validation_modes.py", "tests/test_checkpoint_packing.py",
         "tests/test_validation_checkpoint.py", "tests/test_validation_data.py",
         "tests/test_provenance.py", "tests/test_lm.py", "tests/test_generate.py",
         "tests/test_validation_train.py", "tests/test_lm_eval.py", "tests/test_train.py"]
MUTANTS = [
    # model/reference/lm_checkpoint.py: packing and the validator.
    ("checkpoint: -0.0 and 0.0 packed as -1", "model/reference/lm_checkpoint.py",
     "bits = (w.detach() >= 0).cpu().numpy()", "bits = (w.detach() > 0).cpu().numpy()"),
    ("checkpoint: big-endian bit order in a packed byte", "model/reference/lm_checkpoint.py",
     'np.packbits(bits, axis=-1, bitorder="little")', 'np.packbits(bits, axis=-1, bitorder="big")'),
    ("checkpoint: padding bits beyond d_in not checked", "model/reference/lm_checkpoint.py",
     "                        if pad:", "                        if pad and False:"),
    ("checkpoint: an unexpected key accepted", "model/reference/lm_checkpoint.py",
     "    unexpected = sorted(k for k in header if k not in want)",
     "    unexpected = []"),
    ("checkpoint: a tensor's dtype not checked", "model/reference/lm_checkpoint.py",
     '        if e["dtype"] != dt:', '        if e["dtype"] != dt and False:'),
    ("checkpoint: the packed table not compared with the config",
     "model/reference/lm_checkpoint.py",
     "        if packed.get(k) != want_packed.get(k):",
     "        if packed.get(k) != want_packed.get(k) and k not in packed:"),
    ("checkpoint: a header longer than the file taken", "model/reference/lm_checkpoint.py",
     "            if n > size - 8:", "            if n > size:"),
    ("checkpoint: a non-finite value only counted when NaN", "model/reference/checkpoint.py",
     "    bad = ~torch.isfinite(t)", "    bad = torch.isnan(t)"),
    # model/data/corpus.py: a split checked against split.json.
    ("corpus: a changed split's hash not compared", "model/data/corpus.py",
     '        if sha != rec["sha256"]:', '        if sha != rec["sha256"] and False:'),
    ("corpus: a truncated split's size not compared", "model/data/corpus.py",
     '        if rec is not None and path.stat().st_size != rec["bytes"]:',
     '        if rec is not None and path.stat().st_size > rec["bytes"]:'),
    # model/train: argument checks and the divergence stop.
    ("train: --lr 0 accepted", "model/train/__main__.py",
     '    check_float("--lr", a.lr, lo=0, lo_open=True)', '    check_float("--lr", a.lr, lo=0)'),
    ("train: --dropout 1 accepted", "model/train/__main__.py",
     '    check_float("--dropout", a.dropout, lo=0, hi=1, hi_open=True)',
     '    check_float("--dropout", a.dropout, lo=0, hi=1)'),
    ("train: --seq as long as a split accepted", "model/train/__main__.py",
     "        if len(data) < a.seq + 1:", "        if len(data) < a.seq:"),
    ("train: naive takes the training flags silently", "model/train/__main__.py",
     '    if a.model == "naive":\n        refuse_unused(',
     '    if a.model == "naive!":\n        refuse_unused('),
    ("train: a NaN loss does not stop training", "model/train/loop.py",
     "        if not bool(finite.all()):", "        if False:"),
    ("train: a shape flag not compared with the teacher's", "model/train/__main__.py",
     "        if name in given and given[name] != getattr(cfg, name):",
     "        if name in given and given[name] != getattr(cfg, name) and False:"),
    # model/generate: the sampler and its flags.
    ("sampler: top-k keeps one byte more", "model/generate/sampler.py",
     '        keep = np.argsort(-z, kind="stable")[:top_k]',
     '        keep = np.argsort(-z, kind="stable")[:top_k + 1]'),
    ("sampler: temperature multiplies the logits", "model/generate/sampler.py",
     "    z = z * scale / temperature", "    z = z * scale * temperature"),
    ("generate: greedy decoding takes --top-k silently", "model/generate/__main__.py",
     "    if args.temperature == 0:\n        refuse_unused(",
     "    if args.temperature == -1:\n        refuse_unused("),
    # model/evaluate/lm.py: what is scored and what it is calibrated on.
    ("evaluate: calibrated on the bytes after the first", "model/evaluate/lm.py",
     "    return student, export_lm(student, spec or QuantSpec(), train[:calib_bytes])",
     "    return student, export_lm(student, spec or QuantSpec(), train[1:calib_bytes + 1])"),
    ("evaluate: --max-bytes scores one byte fewer", "model/evaluate/lm.py",
     "        data = data[: max_bytes + 1]", "        data = data[: max_bytes]"),
    ("evaluate: a NaN golden bpc passes the gate", "model/evaluate/lm.py",
     '    if not bpc["golden"] <= GOLDEN_BPC_RATIO_MAX * bpc["student"]:',
     '    if bpc["golden"] > GOLDEN_BPC_RATIO_MAX * bpc["student"]:'),
    ("sqnr: a NaN stage passes its floor", "model/evaluate/sqnr.py",
     "    return [k for k, floor in floors.items() if not sq[k] >= floor]",
     "    return [k for k, floor in floors.items() if sq[k] < floor]"),
    # model/golden/lm.py: the calibration's float run.
    ("golden: the calibration drops every layer's state between chunks", "model/golden/lm.py",
     "                h, states[i] = layer(h, states[i])", "                h, states[i] = layer(h, None)"),
    # model/cli.py and model/progress.py.
    ("cli: a flag given in the wrong mode not refused", "model/cli.py",
     "        if getattr(args, flag.lstrip(\"-\").replace(\"-\", \"_\")) is not None:",
     "        if getattr(args, flag.lstrip(\"-\").replace(\"-\", \"_\")) not in (None, 0, False):"),
    ("cli: a range's lower bound open where it is closed", "model/cli.py",
     "        ok = ok and (value > lo if lo_open else value >= lo)",
     "        ok = ok and (value > lo)"),
    ("progress: log lines never written", "model/progress.py",
     "            if logs and now - max(_last_line, logs[0].t0) >= LOG_SECONDS:",
     "            if logs and now - max(_last_line, logs[0].t0) >= 1000 * LOG_SECONDS:"),
]

if __name__ == "__main__":
    sys.exit(run_mutants(MUTANTS, TESTS, sys.argv[1:]))
