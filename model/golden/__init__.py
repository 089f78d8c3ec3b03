"""The bit-exact, integer-only golden model (docs/fixed_point.md): fixed-point primitives and
tables (:mod:`.fixedpoint`), the export of a float layer into integers (:mod:`.quantize`),
accumulator bounds (:mod:`.bounds`), one layer (:mod:`.layer`) and the whole language model
(:mod:`.lm`). It imports the float reference (to export it) and never the evaluation code."""
