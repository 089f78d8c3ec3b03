"""Shipped language-model checkpoints: safetensors with the Bi-Mamba key names.

Format (one ``.safetensors`` file per model):

* Every tensor is stored under its Bi-Mamba key (``backbone.embedding.weight``,
  ``backbone.layers.{i}.mixer.*``, ``backbone.norm_f.weight``) in FP16, except:
* for a Bi-Mamba (binary) model, each FBI-Linear latent weight ``...{in,out}_proj.weight``
  of shape (d_out, d_in) is replaced by its sign bits under ``...{in,out}_proj.weight.signs``:
  uint8 of shape (d_out, ceil(d_in / 8)); column j of row i is bit ``j % 8`` (least
  significant first, "little" bit order) of byte ``[i, j // 8]``; bit 1 means +1, bit 0
  means -1, and padding bits are 0. A latent weight of exactly zero (either sign of zero)
  counts as +1, as :func:`model.reference.layer.binarize_ste` does. The latent magnitudes are not
  stored: inference only uses the signs, alpha (``wscale``) and beta (``wbias``).
* The safetensors metadata (string to string) holds ``format`` (``bimamba-lm/1``),
  ``binary`` (``true``/``false``), ``config`` (JSON of the :class:`BiMambaConfig` fields),
  ``packed`` (JSON: signs key -> [d_out, d_in]), ``dtype`` (``float16``) and any extra
  entries the caller passes (training summary, command line).

:func:`load_lm` returns float32 tensors under the original keys, the binary weights as the
±1 sign matrix, so :func:`model.reference.checkpoint.load_block` reads a layer of a student directly and
a loaded model computes exactly what the saved one computed with FP16-rounded parameters.

Every reader of a checkpoint (:func:`load_lm`, :func:`load_lm_model`, :func:`check_lm`,
:func:`read_metadata`, and through them every command line) checks the file first: readable,
a safetensors file whose header agrees with its size (a truncated, empty or random file is
named as such), the metadata entries parsed (an error names the entry), exactly the keys the
config implies with their dtypes and shapes (packed signs of the right length), every value
finite. A failure is a :class:`~model.reference.checkpoint.CheckpointError`, one line::

    ckpt/student.safetensors: key 'backbone.layers.3.mixer.D' (layer 3): expected finite
    values, found 1 non-finite (NaN), the first at index (5,)
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from model.config import BiMambaConfig
from model.reference.checkpoint import (
    CheckpointError, key_label, model_key_shapes, nonfinite_problem,
)
from model.reference.lm import BiMambaLM, binary_keys

__all__ = [
    "FORMAT",
    "SIGNS_SUFFIX",
    "pack_signs",
    "unpack_signs",
    "save_lm",
    "load_lm",
    "check_lm",
    "read_metadata",
    "load_lm_model",
    "expected_tensors",
    "config_from_json",
    "checkpoint_bytes",
]

FORMAT = "bimamba-lm/1"
SIGNS_SUFFIX = ".signs"
_STORE_DTYPE = torch.float16


def pack_signs(w: Tensor) -> Tensor:
    """Sign bits of ``w`` packed along its last dimension.

    Parameters
    ----------
    w : Tensor, shape (d_out, d_in)
        Latent weight; ``w >= 0`` (including -0.0) is +1.

    Returns
    -------
    Tensor of uint8, shape (d_out, ceil(d_in / 8))
        Little bit order along d_in, bit 1 = +1, padding bits 0.
    """
    if w.dim() != 2:
        raise ValueError(f"w must be 2-D (d_out, d_in), not shape {tuple(w.shape)}")
    bits = (w.detach() >= 0).cpu().numpy()
    return torch.from_numpy(np.packbits(bits, axis=-1, bitorder="little"))


def unpack_signs(packed: Tensor, d_in: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Inverse of :func:`pack_signs`: the ±1 matrix of shape (d_out, d_in) in ``dtype``.

    Raises
    ------
    ValueError
        If ``packed`` is not uint8 of shape (d_out, ceil(d_in / 8)).
    """
    if packed.dtype != torch.uint8 or packed.dim() != 2 or packed.shape[1] != -(-d_in // 8):
        raise ValueError(f"packed must be uint8 of shape (d_out, {-(-d_in // 8)}) for "
                         f"d_in = {d_in}, not {packed.dtype} {tuple(packed.shape)}")
    bits = np.unpackbits(packed.numpy(), axis=-1, count=d_in, bitorder="little")
    return torch.from_numpy(bits.astype(np.float32) * 2 - 1).to(dtype)


def save_lm(model: BiMambaLM, path: Path | str,
            metadata: Mapping[str, str] | None = None) -> int:
    """Write ``model`` to ``path`` in the format of this module; return the file size in bytes.

    The model's ``binary`` flag decides the format (latent weights packed as sign bits for a
    Bi-Mamba model, FP16 for a float one).

    Parameters
    ----------
    model : BiMambaLM
    path : path-like
    metadata : mapping of str -> str, optional
        Extra metadata entries (must not reuse the format's own names).

    Raises
    ------
    ValueError
        If an extra metadata entry reuses a reserved name or is not a string.
    """
    cfg = model.cfg
    sd = model.state_dict()
    packed_keys = set(binary_keys(cfg)) if model.binary else set()
    tensors: dict[str, Tensor] = {}
    packed: dict[str, list[int]] = {}
    for key, t in sd.items():
        if key in packed_keys:
            tensors[key + SIGNS_SUFFIX] = pack_signs(t).contiguous()
            packed[key + SIGNS_SUFFIX] = list(t.shape)
        else:
            tensors[key] = t.detach().to("cpu", _STORE_DTYPE).contiguous()
    meta = {
        "format": FORMAT,
        "binary": "true" if model.binary else "false",
        "config": json.dumps(asdict(cfg)),
        "packed": json.dumps(packed),
        "dtype": "float16",
    }
    for k, v in (metadata or {}).items():
        if k in meta or not isinstance(v, str):
            raise ValueError(f"metadata entry {k!r} must be a str under a name other than "
                             f"{', '.join(meta)}, not {type(v).__name__}")
        meta[k] = v
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)
    return path.stat().st_size


# -- reading and validation -------------------------------------------------------------------

# Bytes per element of every safetensors dtype, and the names the errors use.
_ST_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2,
             "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_ST_NAMES = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "F8_E5M2": "float8_e5m2",
             "F8_E4M3": "float8_e4m3", "I16": "int16", "U16": "uint16", "F16": "float16",
             "BF16": "bfloat16", "I32": "int32", "U32": "uint32", "F32": "float32",
             "I64": "int64", "U64": "uint64", "F64": "float64"}
# safetensors refuses larger headers; a random file's first 8 bytes usually exceed this.
_MAX_HEADER = 100_000_000
_CONFIG_REQUIRED = ("d_model", "n_layer")
_LAYER_KEY = re.compile(r"backbone\.layers\.(\d+)\.")


def _role(binary: bool) -> str:
    return "Bi-Mamba student" if binary else "float model"


def expected_tensors(cfg: BiMambaConfig, binary: bool) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Key -> (safetensors dtype, shape) of every tensor :func:`save_lm` writes for a model of
    shape ``cfg`` (a Bi-Mamba model if ``binary``): FP16 tensors, ``uint8`` packed signs."""
    packed = set(binary_keys(cfg)) if binary else set()
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    for key, shape in model_key_shapes(cfg).items():
        if not binary and key.endswith((".wscale", ".wbias")):
            continue  # a float projection has no FBI alpha and beta
        if key in packed:
            d_out, d_in = shape
            out[key + SIGNS_SUFFIX] = ("U8", (d_out, -(-d_in // 8)))
        else:
            out[key] = ("F16", shape)
    return out


def config_from_json(text: str) -> BiMambaConfig:
    """The :class:`BiMambaConfig` of a checkpoint's ``config`` metadata entry.

    Raises
    ------
    ValueError
        One line saying what is wrong: not JSON, not an object, an unknown or missing field,
        a value the config refuses.
    """
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"expected JSON, found text that is not ({e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"expected a JSON object of BiMambaConfig fields, found a JSON "
                         f"{type(d).__name__}")
    names = [f.name for f in fields(BiMambaConfig)]
    unknown = [k for k in d if k not in names]
    if unknown:
        raise ValueError(f"expected only the fields {', '.join(names)}, found the unknown "
                         f"field {unknown[0]!r}")
    missing = [k for k in _CONFIG_REQUIRED if k not in d]
    if missing:
        raise ValueError(f"expected the fields {', '.join(_CONFIG_REQUIRED)}, found no "
                         f"{missing[0]!r}")
    try:
        return BiMambaConfig(**d)
    except (TypeError, ValueError) as e:
        raise ValueError(str(e)) from None


def _fail(path: Path | str, message: str) -> CheckpointError:
    return CheckpointError(f"{path}: {message}")


def _read_header(path: Path | str) -> tuple[dict[str, dict], dict | None]:
    """The tensor entries and metadata of a safetensors file, every entry checked against the
    file's size (so a truncated file is named here, not by a reader deep in a load)."""
    p = Path(path)
    if not p.exists():
        raise _fail(path, "not found (expected a .safetensors checkpoint file)")
    if p.is_dir():
        raise _fail(path, "is a folder, not a checkpoint file")
    try:
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) < 8:
                raise _fail(path, f"not a safetensors file: expected an 8-byte header length "
                                  f"and a JSON header, found a file of {size} bytes")
            n = int.from_bytes(head, "little")
            if n > _MAX_HEADER:
                raise _fail(path, f"not a safetensors file: expected a header length of at "
                                  f"most {_MAX_HEADER:,} bytes in the first 8, found {n:,}")
            if n > size - 8:
                raise _fail(path, f"truncated (or not a safetensors file): its first 8 bytes "
                                  f"announce a header of {n:,} bytes, the file holds "
                                  f"{size - 8:,} after them")
            if n == 0:
                raise _fail(path, "not a safetensors file: expected a JSON header, found a "
                                  "header length of 0")
            raw = f.read(n)
    except OSError as e:
        raise _fail(path, f"cannot be read ({e.strerror or e})") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _fail(path, f"not a safetensors file: expected a JSON header of {n:,} bytes, "
                          f"found bytes that are not JSON") from None
    if not isinstance(header, dict):
        raise _fail(path, f"not a safetensors file: expected a JSON object as header, found "
                          f"a JSON {type(header).__name__}")
    meta = header.pop("__metadata__", None)
    if meta is not None and not (isinstance(meta, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in meta.items())):
        raise _fail(path, "not a safetensors file: expected '__metadata__' to map strings to "
                          "strings")
    data = size - 8 - n
    spans = []
    for key, e in header.items():
        where = f"not a safetensors file: tensor {key!r}"
        if not (isinstance(e, dict) and {"dtype", "shape", "data_offsets"} <= set(e)):
            raise _fail(path, f"{where}: expected an entry with dtype, shape and data_offsets, "
                              f"found {json.dumps(e)[:80]}")
        dtype, shape, offs = e["dtype"], e["shape"], e["data_offsets"]
        if dtype not in _ST_BYTES:
            raise _fail(path, f"{where}: expected a safetensors dtype, found {dtype!r}")
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise _fail(path, f"{where}: expected a shape of sizes >= 0, found {shape!r}")
        if not (isinstance(offs, list) and len(offs) == 2 and all(
                isinstance(o, int) for o in offs) and 0 <= offs[0] <= offs[1]):
            raise _fail(path, f"{where}: expected data_offsets [begin, end], found {offs!r}")
        need = math.prod(shape) * _ST_BYTES[dtype]
        if offs[1] - offs[0] != need:
            raise _fail(path, f"{where}: expected {need:,} bytes for {_ST_NAMES[dtype]} of "
                              f"shape {tuple(shape)}, found data_offsets {offs} ("
                              f"{offs[1] - offs[0]:,} bytes)")
        spans.append((offs[0], offs[1], key))
    end = max((b for _, b, _ in spans), default=0)
    if end > data:
        raise _fail(path, f"truncated: expected a file of {8 + n + end:,} bytes (its header "
                          f"places tensor data up to byte {end:,} after it), found "
                          f"{size:,} bytes")
    at = 0
    for a, b, key in sorted(spans):
        if a != at:
            raise _fail(path, f"not a safetensors file: tensor {key!r}: expected its data at "
                              f"byte {at:,} (tensors packed back to back), found {a:,}")
        at = b
    if at != data:
        raise _fail(path, f"not a safetensors file: expected {at:,} bytes of tensor data after "
                          f"the header, found {data:,}")
    return header, meta


def _parse_metadata(path: Path | str, meta: dict | None, binary: bool | None
                    ) -> tuple[BiMambaConfig, bool, dict]:
    """The config, the binary flag and the ``packed`` table of a checkpoint's metadata, each
    entry checked (the flag against the caller's ``binary``, when given)."""
    if not meta or meta.get("format") != FORMAT:
        found = "no metadata" if not meta else (
            f"{meta['format']!r}" if "format" in meta else "no 'format' entry")
        raise _fail(path, f"is not a {FORMAT} checkpoint (metadata 'format': expected "
                          f"{FORMAT!r}, found {found})")

    def entry(name: str) -> str:
        if name not in meta:
            raise _fail(path, f"metadata: expected a {name!r} entry, found none (entries: "
                              f"{', '.join(sorted(meta))})")
        return meta[name]

    flag = entry("binary")
    if flag not in ("true", "false"):
        raise _fail(path, f"metadata 'binary': expected 'true' or 'false', found {flag!r}")
    is_binary = flag == "true"
    if binary is not None and is_binary != binary:
        raise _fail(path, f"metadata 'binary': expected {'true' if binary else 'false'!r} "
                          f"(a {_role(binary)} is needed here), found {flag!r} (a "
                          f"{_role(is_binary)})")
    if entry("dtype") != "float16":
        raise _fail(path, f"metadata 'dtype': expected 'float16', found {meta['dtype']!r}")
    try:
        file_cfg = config_from_json(entry("config"))
    except ValueError as e:
        raise _fail(path, f"metadata 'config': {e}") from None
    try:
        packed = json.loads(entry("packed"))
    except json.JSONDecodeError as e:
        raise _fail(path, f"metadata 'packed': expected JSON, found text that is not ({e})"
                    ) from None
    if not isinstance(packed, dict):
        raise _fail(path, f"metadata 'packed': expected a JSON object (signs key -> [d_out, "
                          f"d_in]), found a JSON {type(packed).__name__}")
    return file_cfg, is_binary, packed


def _layer_hint(key: str, cfg: BiMambaConfig, missing: list[str] | None = None,
                want: Mapping[str, object] | None = None) -> str:
    """``; the metadata config has n_layer = 5`` when ``key`` belongs to a layer the config
    does not have, or to a layer whose keys (of ``want``) are all ``missing``."""
    m = _LAYER_KEY.match(key)
    if not m:
        return ""
    prefix = m.group(0)
    whole = missing is not None and want is not None and set(
        k for k in want if k.startswith(prefix)) <= set(missing)
    if int(m.group(1)) >= cfg.n_layer or whole:
        return f"; the metadata config has n_layer = {cfg.n_layer}"
    return ""


def _check_tensor_table(path: Path | str, header: dict[str, dict], cfg: BiMambaConfig,
                        binary: bool, packed: dict) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Every expected key present with its dtype and shape, no other key, and the ``packed``
    metadata equal to what the config implies."""
    want = expected_tensors(cfg, binary)
    missing = [k for k in want if k not in header]
    if missing:
        k = missing[0]
        dt, shape = want[k]
        more = f"; {len(missing)} keys missing in all" if len(missing) > 1 else ""
        hint = _layer_hint(k, cfg, missing, want)
        raise _fail(path, f"{key_label(k)}: missing (expected {_ST_NAMES[dt]} of shape {shape} "
                          f"in a {_role(binary)} of this config{more}{hint})")
    unexpected = sorted(k for k in header if k not in want)
    if unexpected:
        k = unexpected[0]
        e = header[k]
        raise _fail(path, f"{key_label(k)}: unexpected (expected only the {len(want)} keys of "
                          f"a {_role(binary)} of this config, found this one too, "
                          f"{_ST_NAMES[e['dtype']]} of shape {tuple(e['shape'])}"
                          f"{_layer_hint(k, cfg)})")
    for k, (dt, shape) in want.items():
        e = header[k]
        if e["dtype"] != dt:
            raise _fail(path, f"{key_label(k)}: expected {_ST_NAMES[dt]}, found "
                              f"{_ST_NAMES[e['dtype']]}")
        got = tuple(e["shape"])
        if got != shape:
            if k.endswith(SIGNS_SUFFIX):
                d_out, d_in = model_key_shapes(cfg, cfg.n_layer)[k[: -len(SIGNS_SUFFIX)]]
                why = f"the packed sign bits of a {d_out} x {d_in} weight, 8 a byte"
            else:
                why = (f"from the metadata config: d_model {cfg.d_model}, d_state "
                       f"{cfg.d_state}, headdim {cfg.headdim}, vocab_size {cfg.vocab_size}")
            raise _fail(path, f"{key_label(k)}: expected shape {shape} ({why}), found {got}")
    want_packed = {k: list(model_key_shapes(cfg)[k[: -len(SIGNS_SUFFIX)]])
                   for k in want if k.endswith(SIGNS_SUFFIX)}
    for k in sorted(set(want_packed) | set(packed)):
        if packed.get(k) != want_packed.get(k):
            raise _fail(path, f"metadata 'packed': entry {k!r}: expected "
                              f"{want_packed.get(k, 'no entry')} (from the config), found "
                              f"{packed.get(k, 'no entry')}")
    return want


def _read_lm(path: Path | str, binary: bool | None, cfg: BiMambaConfig | None,
             cfg_source: str) -> tuple[BiMambaConfig, bool, dict[str, Tensor]]:
    """Validate the whole file and read it (see :func:`load_lm`)."""
    header, meta = _read_header(path)
    file_cfg, is_binary, packed = _parse_metadata(path, meta, binary)
    want = _check_tensor_table(path, header, file_cfg, is_binary, packed)
    # The file agrees with itself; now with the shape the caller needs.
    if cfg is not None and file_cfg != cfg:
        name = next(f.name for f in fields(BiMambaConfig)
                    if getattr(file_cfg, f.name) != getattr(cfg, f.name))
        raise _fail(path, f"metadata 'config': {name} expected {getattr(cfg, name)!r}"
                          f"{' (' + cfg_source + ')' if cfg_source else ''}, found "
                          f"{getattr(file_cfg, name)!r}")
    sd: dict[str, Tensor] = {}
    try:
        with safe_open(str(path), framework="pt") as f:
            for key in want:
                t = f.get_tensor(key)
                if key.endswith(SIGNS_SUFFIX):
                    d_out, d_in = packed[key]
                    if d_in % 8:
                        pad = int((t[:, -1] >> (d_in % 8)).count_nonzero())
                        if pad:
                            raise _fail(path, f"{key_label(key)}: expected padding bits 0 "
                                              f"beyond column {d_in} of each row, found "
                                              f"{pad} rows with padding bits set")
                    sd[key[: -len(SIGNS_SUFFIX)]] = unpack_signs(t, d_in)
                else:
                    t = t.to(torch.float32)  # exact; and isfinite is fast in float32
                    problem = nonfinite_problem(key, t)
                    if problem:
                        raise _fail(path, problem)
                    sd[key] = t
    except (SafetensorError, OSError) as e:
        raise _fail(path, f"not a valid safetensors file ({e})") from None
    return file_cfg, is_binary, sd


def read_metadata(path: Path | str) -> dict[str, str]:
    """The safetensors metadata of a checkpoint written by :func:`save_lm`.

    The file's header and the format's own entries (format, binary, dtype, config, packed)
    are checked; the tensors are not read (:func:`load_lm` checks them).

    Raises
    ------
    CheckpointError
        (a ValueError) If the file is missing, unreadable, not a safetensors file, or not in
        this module's format; one line naming the file and the entry.
    """
    _, meta = _read_header(path)
    _parse_metadata(path, meta, None)
    return dict(meta)


def load_lm(path: Path | str, binary: bool | None = None, cfg: BiMambaConfig | None = None,
            cfg_source: str = "") -> tuple[BiMambaConfig, dict[str, Tensor]]:
    """Read a checkpoint written by :func:`save_lm`, checking all of it first.

    This is the one reader of the format: every loader of the project goes through it. The
    file must be a readable safetensors file whose header agrees with its size; the metadata
    must be this format's, its ``config`` a valid :class:`BiMambaConfig` with no unknown
    field; the file must hold exactly the keys a model of that config has
    (:func:`expected_tensors`), each with its dtype and shape (packed signs of the right
    length, padding bits 0), and every value must be finite. Nothing else is computed before
    these checks, so a bad file fails at once, naming the file and the key.

    Parameters
    ----------
    path : path-like
    binary : bool, optional
        The model the caller needs: True for a Bi-Mamba student, False for a float teacher
        (checked against the ``binary`` metadata), None for either.
    cfg : BiMambaConfig, optional
        The shape the caller needs (checked against the ``config`` metadata).
    cfg_source : str
        Where ``cfg`` comes from, for the message (``"as the teacher, teacher.safetensors"``).

    Returns
    -------
    cfg : BiMambaConfig
        From the metadata.
    state_dict : dict of str -> Tensor
        float32 tensors under the Bi-Mamba keys; a binary model's ``in_proj.weight`` and
        ``out_proj.weight`` are the ±1 sign matrices (d_out, d_in).

    Raises
    ------
    CheckpointError
        (a ValueError) One line, ``<file>: <key or metadata entry>: expected ..., found ...``.
    """
    file_cfg, _, sd = _read_lm(path, binary, cfg, cfg_source)
    return file_cfg, sd


def check_lm(path: Path | str, binary: bool | None = None, cfg: BiMambaConfig | None = None,
             cfg_source: str = "") -> BiMambaConfig:
    """Check a checkpoint as :func:`load_lm` does (all of it, values included) and return its
    config; for command lines that refuse a bad file before any long work."""
    return load_lm(path, binary, cfg, cfg_source)[0]


def load_lm_model(path: Path | str, dtype: torch.dtype = torch.float32,
                  dropout: float = 0.0, binary: bool | None = None,
                  cfg: BiMambaConfig | None = None, cfg_source: str = "") -> BiMambaLM:
    """A :class:`BiMambaLM` (in eval mode) built from a checkpoint written by :func:`save_lm`,
    checked by :func:`load_lm` (``binary``, ``cfg`` and ``cfg_source`` as there)."""
    file_cfg, is_binary, sd = _read_lm(path, binary, cfg, cfg_source)
    model = BiMambaLM(file_cfg, binary=is_binary, dropout=dropout)
    model.load_state_dict(sd)
    return model.to(dtype).eval()


def checkpoint_bytes(cfg: BiMambaConfig, binary: bool) -> int:
    """Tensor bytes :func:`save_lm` writes for ``cfg`` (excluding the small header).

    FP16 for every tensor, except one bit per latent weight (rows padded to whole bytes)
    for the binary projections of a Bi-Mamba model.
    """
    model = BiMambaLM(cfg, binary)
    packed = set(binary_keys(cfg)) if binary else set()
    total = 0
    for key, t in model.state_dict().items():
        if key in packed:
            total += t.shape[0] * -(-t.shape[1] // 8)
        else:
            total += t.numel() * 2
    return total
