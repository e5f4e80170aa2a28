"""pgsl: Proximal Gradient Split Learning end to end, on top of the pgsl_ext ops.

- :mod:`pgsl.config`: every option of ``pgsl train``, once (the CLI is built from it);
- :mod:`pgsl.data`: the datasets (mnist5k, MNIST IDX files, mini-MIAS), the one place data is loaded;
- :mod:`pgsl.models`: the paper's CNN cut after conv 2, the three server streams, the decision fusion, the surrogate;
- :mod:`pgsl.defenses`: PGSL's operations, Laplacian noise, NoPeek's distance correlation;
- :mod:`pgsl.client` / :mod:`pgsl.server`: the two halves, each with its role in the run;
- :mod:`pgsl.protocol`: the messages between them and the order of a run;
- :mod:`pgsl.transport`: one process, or torch.distributed point-to-point with bounded waits;
- :mod:`pgsl.rundir`: the run folder (config, checkpoints, metrics);
- :mod:`pgsl.train`: ``pgsl train``; :mod:`pgsl.runs`: a finished run, restored;
  :mod:`pgsl.evaluate`: ``pgsl evaluate`` (on :mod:`pgsl.runs`, beside training);
- :mod:`pgsl.errors`: the errors a user can fix; :mod:`pgsl.cli`: the command.

It uses only pgsl_ext's public API (``pgsl_ext.ops``, ``pgsl_ext.attacks``, ``pgsl_ext.reference``).
"""

__version__ = "0.1.0"
