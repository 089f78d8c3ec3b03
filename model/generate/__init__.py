"""Text from the shipped student, through the integer golden model or the float model
(:mod:`.sampling`; ``python -m model.generate``)."""
