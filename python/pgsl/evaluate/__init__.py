"""``pgsl evaluate``: privacy (model inversion) and robustness of trained runs (placeholder;
see :mod:`pgsl.evaluate.inversion` and :mod:`pgsl.evaluate.metrics`)."""
