"""Bi-Mamba in floats and in integers, in layers (``pyproject.toml``'s import-linter contracts
keep each package to the ones below it):

* :mod:`model.evaluate`, :mod:`model.generate`: accuracy of the golden model against the
  float one (SQNR per stage, bits per character) and text generation; the command lines
  ``python -m model.evaluate``, ``python -m model.evaluate.layer``, ``python -m model.generate``.
* :mod:`model.train`: training of the float teacher and the distilled Bi-Mamba student
  (``python -m model.train``).
* :mod:`model.golden`: the fixed-point, integer-only golden model: formats and tables, the
  export of a float layer or language model, accumulator bounds, the layer and the whole LM
  (``python -m model.golden`` prints its formats and widths).
* :mod:`model.reference`: the float PyTorch reference (FBI-Linear, mixer, block, LM) and its
  checkpoints; :mod:`model.data`: the Shakespeare corpus (``python -m model.data``).
* :mod:`model.config`, :mod:`model.progress`: shapes and presets, progress (bars on a
  terminal, lines in a log); :mod:`model.paths`: the repository's checkpoints and data root,
  resolved from the package; :mod:`model.cli`: what the command lines share (one-line errors
  with exit status 2, range checks, writable folders).
"""
