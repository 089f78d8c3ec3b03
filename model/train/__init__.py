"""Training of the float teacher, distillation of the Bi-Mamba student and the naive
binarised baseline (:mod:`.loop`; ``python -m model.train``)."""
