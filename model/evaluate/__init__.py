"""Accuracy of the golden model against the float reference: per-stage SQNR and its floors
(:mod:`.sqnr`), bits per character of the language models (:mod:`.lm`), and their command
lines (``python -m model.evaluate``, ``python -m model.evaluate.layer``)."""
