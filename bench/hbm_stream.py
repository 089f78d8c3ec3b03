"""Measured memory efficiency: the share of a GPU's peak HBM bandwidth that a streaming read
sustains.

``python -m bench.hbm_stream --out FILE`` times, with CUDA events, a read of every byte of a
large FP16 buffer (a Triton kernel that loads blocks and keeps a running sum, one block per
program, so each byte crosses the memory bus once) and a device-to-device copy
(``Tensor.copy_``: every byte read and written once), at several buffer sizes, each the median
of ``--repeats`` runs after a warm-up. The figure is the bytes moved over the time, and its
share of the datasheet's peak (:data:`bench.gpu_fast.HBM_BYTES_PER_S`). The read is what the
weight stream of a decoder does; the copy is what its state moves do.

This is the measured counterpart of the estimator's ``efficiency`` of a memory
(``energy/references/dram.json``: derived there from refresh alone). ``--device cpu`` times
the same code on the CPU with plain PyTorch and no peak (for tests); the default, ``cuda``,
stops with a one-line error when no CUDA GPU is visible.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # the CPU path needs neither
    triton = None

from bench.gpu_fast import HBM_BYTES_PER_S, HBM_SOURCE, _time_cuda
from model.cli import CliParser
from rtl.cli import int_in

__all__ = ["SCHEMA", "measure", "main"]

SCHEMA = "bimamba-hw/memory-stream/1"
SIZES_MIB = (256, 1024, 4096, 16384)
BLOCK = 8192  # FP16 elements a program reads (16 KiB)

if triton is not None:
    @triton.jit
    def _read_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
        pid = tl.program_id(0).to(tl.int64)  # offsets past 2**31 at 16 GiB
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        v = tl.load(x_ptr + offs, mask=offs < n, other=0.0)
        tl.store(out_ptr + pid, tl.sum(v.to(tl.float32), axis=0))


def _time(fn, device: str, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after two warm-ups (CUDA events on
    the GPU: :func:`bench.gpu_fast._time_cuda`)."""
    fn()
    if device == "cuda":
        return _time_cuda(fn, repeats)  # (its own warm call is the second)
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(size_mib: int, device: str, repeats: int) -> dict:
    """Read and copy bandwidth of a buffer of ``size_mib`` MiB on ``device``."""
    n = size_mib * 2**20 // 2
    x = torch.ones(n, dtype=torch.float16, device=device)
    y = torch.empty_like(x)
    nbytes = n * 2
    if device == "cuda":
        partial = torch.empty(triton.cdiv(n, BLOCK), dtype=torch.float32, device=device)

        def read() -> None:
            _read_kernel[(triton.cdiv(n, BLOCK),)](x, partial, n, BLOCK=BLOCK, num_warps=8)
    else:
        def read() -> None:
            x.sum(dtype=torch.float32)

    t_read = _time(read, device, repeats)
    t_copy = _time(lambda: y.copy_(x), device, repeats)
    if device == "cuda":  # every element is 1: the read saw every byte
        seen = int(partial.double().sum().item())
        if seen != n:
            raise RuntimeError(f"the read kernel summed {seen} of {n} elements")
    row = {"size_bytes": nbytes,
           "read_s": t_read, "read_bytes_per_s": nbytes / t_read,
           "copy_s": t_copy, "copy_bytes_per_s": 2 * nbytes / t_copy}
    if device == "cuda":
        row["read_fraction"] = row["read_bytes_per_s"] / HBM_BYTES_PER_S
        row["copy_fraction"] = row["copy_bytes_per_s"] / HBM_BYTES_PER_S
    return row


def main(argv: list[str] | None = None) -> int:
    ap = CliParser(prog="python -m bench.hbm_stream", description=__doc__,
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--size", action="append", type=int_in(1, 65536), metavar="MIB",
                    help=f"buffer size in MiB (repeatable; default "
                         f"{' '.join(map(str, SIZES_MIB))} on cuda, 16 on cpu)")
    ap.add_argument("--repeats", type=int_in(1, 1000), default=20, help="timed runs a size (default 20)")
    ap.add_argument("--out", metavar="FILE", help="write {\"records\": [...]} to FILE")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda needs a CUDA GPU, and none is visible; --device cpu times "
                 "the same code on the CPU")
    if args.device == "cuda" and triton is None:
        ap.error("--device cuda needs Triton (import triton failed)")
    if args.out is not None:
        out = Path(args.out)
        if out.is_dir() or not out.parent.is_dir():
            ap.error(f"--out must name a file in an existing folder, not {args.out!r}")
    sizes = args.size or (list(SIZES_MIB) if args.device == "cuda" else [16])
    rows = []
    for s in sizes:
        rows.append(measure(s, args.device, args.repeats))
        r = rows[-1]
        print(f"{s} MiB: read {r['read_bytes_per_s'] / 1e12:.3f} TB/s, copy "
              f"{r['copy_bytes_per_s'] / 1e12:.3f} TB/s", file=sys.stderr, flush=True)
    gpu = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"
    best = max(rows, key=lambda r: r["read_bytes_per_s"])
    rec = {
        "schema": SCHEMA, "kind": "measured", "gpu": gpu, "device": args.device,
        "command": " ".join(["python -m bench.hbm_stream", *(argv if argv is not None
                                                             else sys.argv[1:])]),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "method": (f"a Triton kernel reading every FP16 element of a buffer once ({BLOCK} a "
                   "program, a running sum kept), and Tensor.copy_ (every byte read and "
                   f"written), timed with CUDA events, the median of {args.repeats} runs "
                   "after two warm-ups, at each buffer size" if args.device == "cuda" else
                   "Tensor.sum and Tensor.copy_ on the CPU, wall clock"),
        "peak_bytes_per_s": HBM_BYTES_PER_S if args.device == "cuda" else None,
        "peak_source": HBM_SOURCE if args.device == "cuda" else None,
        "rows": rows,
        "read_fraction": best.get("read_fraction"),
        "copy_fraction": max(r.get("copy_fraction") or 0 for r in rows) or None,
        "software": {"torch": torch.__version__, "python": platform.python_version(),
                     **({"cuda": torch.version.cuda, "triton": triton.__version__}
                        if args.device == "cuda" else {})},
    }
    text = json.dumps({"records": [rec]}, indent=2) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
