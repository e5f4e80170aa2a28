"""``pgsl evaluate``: how well trained runs protect privacy and keep accuracy under attack, under
one protocol, side by side.

- :mod:`pgsl.evaluate.metrics`: reconstruction metrics (MSE, PSNR, SSIM, distance correlation,
  an independent classifier's accuracy);
- :mod:`pgsl.evaluate.inversion`: the model-inversion attacks (black-box decoder, UnSplit,
  white-box, gradient leakage);
- :mod:`pgsl.evaluate.robustness`: accuracy under JSMA, Carlini-Wagner L2, BIM and FGSM,
  transferred from the undefended model and adaptive (BPDA) against each defended one;
- :mod:`pgsl.evaluate.mu_sweep`: rpca's recovery error against mu (the paper's Figure 3);
- :mod:`pgsl.evaluate.report`: the protocol, ``report.json``, ``report.md``;
  :mod:`pgsl.evaluate.figures`: its PNG figures;
- :mod:`pgsl.evaluate.settings`: the one style of every evaluation's settings;
- :mod:`pgsl.evaluate.command`: the ``pgsl evaluate`` command line.

It talks to trained runs only through :class:`pgsl.runs.Run`.
"""

from .report import evaluate

__all__ = ["evaluate"]
