"""How the client and the server talk: in one process, or over torch.distributed point-to-point.

The training code sees two things:

- a :class:`Link` to a peer rank, with ``send(dst, kind, tensors)`` and ``recv(src) -> (kind,
  tensors)``: the server is rank 0, clients are ranks 1..K;
- nothing else: what a message means is :mod:`pgsl.protocol`'s business.

:class:`LocalHub` / :class:`LocalLink` carry messages in one process (the default): a request
to the server runs its handler at once, other messages wait in queues; every tensor is detached
and copied, as a wire would. :class:`DistributedLink` sends a small header
(kind, shapes, dtypes) and then each tensor with ``torch.distributed.isend`` / ``irecv`` (gloo on
CPU, NCCL when every rank has a GPU). While it waits it watches the peer's heartbeat, a counter
each process bumps in the rendezvous store every second from a background thread: a peer whose
counter has not moved for ``timeout`` seconds (hung, stopped) or whose connection broke (died)
ends the wait with :class:`PeerError` naming the rank. Nothing ever waits without a bound.
"""

from __future__ import annotations

import collections
import datetime
import os
import re
import threading
import time
from typing import Callable, Deque, Dict, List, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import Tensor

from .errors import PeerError
from .protocol import KINDS

__all__ = ["DistributedLink", "Link", "LocalHub", "LocalLink", "init_from_env", "role"]

_DTYPES = (torch.float32, torch.float64, torch.int64, torch.bool, torch.uint8, torch.float16, torch.bfloat16, torch.int32)
_HEADER = 3  # kind, number of tensors, length of the shape list


def role(rank: int) -> str:
    return "the server (rank 0)" if rank == 0 else f"client {rank} (rank {rank})"


class Link:
    rank: int

    def send(self, dst: int, kind: str, tensors: Sequence[Tensor] = ()) -> None:
        raise NotImplementedError

    def recv(self, src: int) -> Tuple[str, List[Tensor]]:
        raise NotImplementedError

    def call(self, dst: int, kind: str, tensors: Sequence[Tensor] = ()) -> List[Tensor]:
        """Send a request and wait for the reply of the same kind."""
        self.send(dst, kind, tensors)
        reply_kind, reply = self.recv(dst)
        if reply_kind == "error":
            raise PeerError(f"{role(dst)} failed to handle '{kind}'")
        if reply_kind != kind:
            raise PeerError(f"protocol error: asked {role(dst)} for '{kind}', got '{reply_kind}'")
        return reply

    def close(self) -> None:
        pass


class LocalHub:
    """The in-process wire: a queue per (src, dst) pair, and the ranks that serve requests at
    once (the server: its handler runs inside the sender's ``send``)."""

    def __init__(self):
        self.queues: Dict[Tuple[int, int], Deque] = collections.defaultdict(collections.deque)
        self.handlers: Dict[int, Callable[[int, str, List[Tensor]], List[Tensor]]] = {}

    def link(self, rank: int) -> "LocalLink":
        return LocalLink(rank, self)


class LocalLink(Link):
    """One rank's view of a :class:`LocalHub`. Tensors are detached and copied, as a wire would."""

    def __init__(self, rank: int, hub: LocalHub):
        self.rank, self.hub = rank, hub

    def send(self, dst: int, kind: str, tensors: Sequence[Tensor] = ()) -> None:
        tensors = [t.detach().clone() for t in tensors]
        handler = self.hub.handlers.get(dst)
        if handler is None:
            self.hub.queues[(self.rank, dst)].append((kind, tensors))
        else:
            reply = handler(self.rank, kind, tensors)
            self.hub.queues[(dst, self.rank)].append((kind, [t.detach().clone() for t in reply]))

    def recv(self, src: int) -> Tuple[str, List[Tensor]]:
        queue = self.hub.queues[(src, self.rank)]
        if not queue:
            raise PeerError(f"protocol error: rank {self.rank} waits for {role(src)}, which sent nothing (one process)")
        return queue.popleft()


class DistributedLink(Link):
    """torch.distributed point-to-point with bounded waits (see the module docstring)."""

    def __init__(self, *, timeout: float, device: torch.device, heartbeat_interval: float = 1.0):
        if not dist.is_initialized():
            raise RuntimeError("DistributedLink needs torch.distributed initialised (see pgsl.transport.init_from_env)")
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.timeout = float(timeout)
        self.device = device
        self._store = _STORE
        self._stop = threading.Event()
        # The peers' heartbeat counters as last read, and when the store last answered: the store
        # lives in rank 0, so a stopped (not dead) server blocks every store call; reading it from
        # a thread of its own lets a wait notice that instead of blocking with it.
        self._counts: Dict[int, int] = {}
        self._store_answered = time.monotonic()
        self._store_error: List[Exception] = []
        self._beat = threading.Thread(target=self._heartbeat, args=(heartbeat_interval,), daemon=True)
        self._beat.start()
        self._monitor = threading.Thread(target=self._read_heartbeats, daemon=True)
        self._monitor.start()

    # -- liveness
    def _key(self, rank: int) -> str:
        return f"pgsl/heartbeat/{rank}"

    def _heartbeat(self, interval: float) -> None:
        while not self._stop.is_set():
            try:
                self._store.add(self._key(self.rank), 1)
            except Exception:  # the store's host (rank 0) is gone; waits on it report that
                return
            self._stop.wait(interval)

    def _read_heartbeats(self) -> None:
        peers = [r for r in range(self.world_size) if r != self.rank]
        while not self._stop.is_set():
            try:
                counts = {p: self._store.add(self._key(p), 0) for p in peers}
            except Exception as e:  # the store's host (rank 0) is gone
                self._store_error.append(e)
                return
            self._counts.update(counts)
            self._store_answered = time.monotonic()
            self._stop.wait(0.25)

    def _wait(self, work, peer: int, what: str) -> None:
        """Wait for one send/receive while watching ``peer``'s heartbeat. gloo's work objects
        report completion only from ``wait()``, so a helper thread waits and this one watches."""
        done, failure = threading.Event(), []

        def waiter():
            try:
                work.wait()
            except Exception as e:  # a broken connection: the peer died
                failure.append(e)
            finally:
                done.set()

        threading.Thread(target=waiter, daemon=True).start()
        last_count, last_change = None, time.monotonic()
        while not done.wait(0.25):
            now = time.monotonic()
            if self._store_error:
                raise self._server_gone(peer, what, self._store_error[0])
            if now - self._store_answered > self.timeout:
                raise PeerError(
                    f"{role(0)}, which holds the rendezvous store, stopped answering: no reply for {self.timeout:g} s "
                    f"while waiting for {what}"
                )
            count = self._counts.get(peer)
            if count != last_count:
                last_count, last_change = count, now
            # a peer is silent only while the store still answers: once the store (in the server)
            # stops, no heartbeat can be read, and the check above names the server instead
            elif self._store_answered - last_change > self.timeout:
                raise PeerError(f"{role(peer)} stopped answering: no heartbeat for {self.timeout:g} s while waiting for {what}")
        if failure:
            raise self._gone(peer, what, failure[0])

    def _server_gone(self, peer: int, what: str, e: Exception) -> PeerError:
        waited = "" if peer == 0 else f" for {role(peer)}"
        return PeerError(f"{role(0)}, which holds the rendezvous store, is gone (while waiting{waited} for {what}): {_reason(e)}")

    def _gone(self, peer: int, what: str, e: Exception) -> PeerError:
        """The error for a connection ``peer`` broke. A client also ends when the server dies, so
        a client that lost another client first asks the store (in the server) whether it is
        still there: the server's death, or its silence, is the cause to name, not the client it
        took down."""
        if peer != 0:
            asked, deadline = time.monotonic(), time.monotonic() + min(self.timeout, 5.0)
            while time.monotonic() < deadline and not self._store_error and self._store_answered <= asked:
                time.sleep(0.05)
            if self._store_error:
                return self._server_gone(peer, what, self._store_error[0])
            if self._store_answered <= asked:  # stopped, not dead: the client ended on its own wait for it
                return PeerError(f"{role(0)}, which holds the rendezvous store, stopped answering (no reply for "
                                 f"{time.monotonic() - asked:.0f} s after {role(peer)} was gone while waiting for {what})")
        return PeerError(f"{role(peer)} is gone (while waiting for {what}): {_reason(e)}")

    # -- messages
    def _start(self, op, tensor: Tensor, peer: int, what: str):
        """Post a send or receive; a connection the peer already broke fails here, not in wait."""
        try:
            return op(tensor, peer)
        except Exception as e:
            raise self._gone(peer, what, e) from None

    def send(self, dst: int, kind: str, tensors: Sequence[Tensor] = ()) -> None:
        shapes: List[int] = []
        for t in tensors:
            shapes += [_DTYPES.index(t.dtype), t.dim(), *t.shape]
        header = torch.tensor([KINDS.index(kind), len(tensors), len(shapes)], dtype=torch.int64)
        payload = [header, torch.tensor(shapes, dtype=torch.int64)] + [t.detach().contiguous() for t in tensors]
        works = [self._start(dist.isend, p.to(self.device), dst, f"it to receive '{kind}'") for p in payload if p.numel()]
        for w in works:
            self._wait(w, dst, f"it to receive '{kind}'")

    def _recv_one(self, shape, dtype, src: int, what: str) -> Tensor:
        t = torch.empty(shape, dtype=dtype, device=self.device)
        if t.numel():
            self._wait(self._start(dist.irecv, t, src, what), src, what)
        return t

    def recv(self, src: int) -> Tuple[str, List[Tensor]]:
        header = self._recv_one((_HEADER,), torch.int64, src, "a message")
        kind_id, count, length = header.tolist()
        if not 0 <= kind_id < len(KINDS):
            raise PeerError(f"protocol error: {role(src)} sent message kind {kind_id}")
        kind = KINDS[kind_id]
        shapes = self._recv_one((length,), torch.int64, src, f"'{kind}'").tolist()
        tensors, i = [], 0
        for _ in range(count):
            dtype, ndim = _DTYPES[shapes[i]], shapes[i + 1]
            shape = shapes[i + 2 : i + 2 + ndim]
            i += 2 + ndim
            tensors.append(self._recv_one(shape, dtype, src, f"'{kind}'").cpu())
        return kind, tensors

    def close(self) -> None:
        self._stop.set()


def _reason(e: Exception) -> str:
    """A transport error in a few words: its first line without gloo's ``[file:line]`` prefix
    and its advice to read the other rank's log (this error is that reading)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    text = re.sub(r"^\[[^\]]*\]\s*", "", text)
    return text.split(". This is typically")[0].rstrip(".")


_STORE = None


def init_from_env(*, timeout: float, backend: str) -> Tuple[int, int]:
    """Join the process group described by torchrun's variables (RANK, WORLD_SIZE, MASTER_ADDR,
    MASTER_PORT); returns (rank, world size). The store's own operations time out after
    ``timeout`` seconds as well, so a dead rank 0 ends every wait."""
    global _STORE
    missing = [v for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise RuntimeError(f"--distributed under a launcher needs the environment variables {', '.join(missing)} (torchrun sets them)")
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    delta = datetime.timedelta(seconds=timeout)
    address = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    try:
        _STORE = dist.TCPStore(
            os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size, is_master=rank == 0, timeout=delta
        )
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise PeerError(f"rank {rank}: the {world_size} ranks did not all meet at {address} within {timeout:g} s ({first})") from None
    # Point-to-point waits are bounded by the heartbeats, not by the process group's timeout
    # (a peer may rightly be busy for longer, e.g. during another client's turn).
    dist.init_process_group(backend, store=_STORE, rank=rank, world_size=world_size, timeout=datetime.timedelta(days=7))
    return rank, world_size
