"""``pgsl evaluate``: how well trained runs protect privacy and keep accuracy under attack, under
one protocol, side by side.

- :mod:`pgsl.evaluate.metrics`: reconstruction metrics (MSE, PSNR, SSIM, distance correlation,
  an independent classifier's accuracy);
- :mod:`pgsl.evaluate.inversion`: the model-inversion attacks (black-box decoder, UnSplit,
  white-box, gradient leakage);
- :mod:`pgsl.evaluate.robustness`: accuracy under JSMA, Carlini-Wagner L2, BIM and FGSM,
  transferred from the undefended model and adaptive (BPDA) against each defended one;
- :mod:`pgsl.evaluate.mu_sweep`: rpca's recovery error against mu (the paper's Figure 3);
- :mod:`pgsl.evaluate.report`: the protocol, ``report.json``, ``report.md`` and the figures.
"""

from .report import add_parser, evaluate

__all__ = ["add_parser", "evaluate"]
