"""What the client and the server say to each other, and in which order.

Requests go from a client to the server (rank 0; clients are ranks 1..K), one reply each, of the
same kind; client weights go from client to client:

=============  =========================================  =========================================
kind           sent                                       reply
=============  =========================================  =========================================
hello          client -> server: [its last complete       [the epoch everyone starts from]
               epoch; -1 for clients 2..K]
train          client -> server: [cut activations (after  [d loss_fusion / d activations, per-stream
               the defence), labels]                      mean loss, per-stream correct count]
turn_end       client -> server: []                       [] (the next client's turn)
score          client -> server: [cut activations]        [per-stream softmax (B, S, K)]
fit_fusion     client -> server: [validation softmax      [fusion weights (S,)]
               (N, S, K), labels]
epoch_end      client 1 -> server: [epoch]                [summary (images, rpca mean iterations,
                                                          converged fraction, rpca seconds, server
                                                          seconds), per-stream mean loss and
                                                          accuracy of the epoch, per-batch losses]
state          client k -> client k+1 (K -> 1): [the      none (not a request)
               client half's state as bytes: conv 1-2,
               Adam, schedule, noise generator]
error          server -> client, instead of the reply:    none: the client raises PeerError
               [] (handling the request failed)
=============  =========================================  =========================================

What crosses to the server is only cut-layer activations (after the client's defence), labels,
and the server's own scores back for fitting the fusion; what comes back is gradients w.r.t.
those activations, losses, scores and fusion weights. No image and no weight of either half
goes to the other half.

The order of a run is :func:`schedule`: the same steps drive one process, each distributed
client and the server's receive loop.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor

__all__ = ["KINDS", "Step", "schedule", "state_bytes", "state_from_bytes"]

KINDS = ("hello", "train", "turn_end", "score", "fit_fusion", "epoch_end", "state", "error")


@dataclass(frozen=True)
class Step:
    """``client`` (1..K) takes its training ``turn`` of ``epoch``, or client 1 ends the epoch
    (``"end_epoch"``: evaluate, let the server fit the fusion and checkpoint, record metrics)."""

    epoch: int
    client: int
    kind: str


def schedule(clients: int, start: int, epochs: int) -> Iterator[Step]:
    """Sequential split learning: per epoch, clients 1..K take their turns, then client 1 ends it."""
    for epoch in range(start, epochs):
        for k in range(1, clients + 1):
            yield Step(epoch, k, "turn")
        yield Step(epoch, 1, "end_epoch")


def state_bytes(obj) -> Tensor:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)


def state_from_bytes(blob: Tensor):
    return torch.load(io.BytesIO(blob.numpy().tobytes()), weights_only=True)
