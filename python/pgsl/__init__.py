"""pgsl: Proximal Gradient Split Learning end to end, on top of the pgsl_ext ops.

- :mod:`pgsl.data`: the datasets (mnist5k, MNIST IDX files, mini-MIAS), the one place data is loaded;
- :mod:`pgsl.models`: the paper's CNN cut after conv 2, the three server streams, the decision fusion, the surrogate;
- :mod:`pgsl.split`: the client and the server halves and the messages between them;
- :mod:`pgsl.transport`: one process, or torch.distributed point-to-point with bounded waits;
- :mod:`pgsl.train`: ``pgsl train``; :mod:`pgsl.evaluate`: ``pgsl evaluate``; :mod:`pgsl.cli`: the command.

It uses only pgsl_ext's public API (``pgsl_ext.ops``, ``pgsl_ext.attacks``, ``pgsl_ext.reference``).
"""

__version__ = "0.1.0"
