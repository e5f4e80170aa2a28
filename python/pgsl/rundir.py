"""The run folder (``--out``): what ``pgsl train`` writes and what :mod:`pgsl.runs` reads back.

- ``config.json``: the run's :class:`~pgsl.config.Config`;
- ``client_epoch{E}.pt`` / ``server_epoch{E}.pt``: each half's checkpoint after epoch E, written
  atomically (temporary file, then rename), the last two kept; ``client.json`` / ``server.json``
  (``{"epoch": E}``) name each half's last complete epoch;
- ``client{k}_attack.pt``: client k's JSMA surrogate and attacked images (fixed before training);
- ``metrics.json`` and ``training.png``: written by client 1 after every epoch.

Checkpoints load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import pickle
import platform
import subprocess
import uuid
from typing import Callable, Dict, Optional, Tuple

import torch

import pgsl_ext

from .config import RESUMABLE, Config
from .errors import ConfigError, RunError

__all__ = [
    "checkpoint",
    "git_commit",
    "load_cache",
    "load_half",
    "load_checkpoint",
    "load_config_and_metrics",
    "lock",
    "marker",
    "prepare",
    "read_json",
    "run_id",
    "save",
    "versions",
    "write_json",
]


def _atomic_write(path: str, write) -> None:
    """``write(tmp)`` then rename onto ``path``: a reader sees the old file or the new one, never a
    part. A failure (a full disk, a read-only folder) leaves no temporary file and names the file."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write as a RuntimeError
        with contextlib.suppress(OSError):
            os.remove(tmp)
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
        raise RunError(f"{path}: cannot be written ({reason}; is the disk full or the folder read-only?)") from None


def save(obj, path: str) -> None:
    _atomic_write(path, lambda tmp: torch.save(obj, tmp))


def write_json(obj, path: str) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")

    _atomic_write(path, write)


def marker(out: str, half: str) -> int:
    """The last epoch (1-based) the ``half`` ('client' or 'server') completed, 0 if none."""
    path = os.path.join(out, f"{half}.json")
    if not os.path.exists(path):
        return 0
    epoch = read_json(path, "a checkpoint marker").get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise RunError(f"{path}: not a checkpoint marker (expected {{\"epoch\": N}} with N >= 1, got {epoch!r})")
    return epoch


def checkpoint(out: str, half: str, epoch: int, state: dict) -> None:
    """Save ``half``'s state after ``epoch`` (with this run's identity), then its marker."""
    save(dict(state, epoch=epoch, run_id=run_id(out)), os.path.join(out, f"{half}_epoch{epoch}.pt"))
    write_json({"epoch": epoch}, os.path.join(out, f"{half}.json"))
    old = os.path.join(out, f"{half}_epoch{epoch - 2}.pt")
    if os.path.exists(old):
        os.remove(old)


def _load_failure(e: Exception) -> str:
    """Why ``torch.load(..., weights_only=True)`` refused a file, in a few words. A file that
    holds objects other than tensors and plain containers is refused as such: torch's own message
    goes on to suggest ``weights_only=False``, which would run whatever code the file holds."""
    if isinstance(e, pickle.UnpicklingError) or "Weights only load failed" in str(e):
        return "it holds objects other than tensors and plain containers, which pgsl never writes; refused without running any of it"
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def load_checkpoint(out: str, half: str, epoch: int) -> dict:
    """``half``'s checkpoint after ``epoch``, checked to be that and to belong to this run."""
    path = os.path.join(out, f"{half}_epoch{epoch}.pt")
    try:
        state = torch.load(path, weights_only=True)
    except FileNotFoundError:
        raise RunError(f"--resume: {path} is missing (the {half} half of epoch {epoch})") from None
    except Exception as e:  # a truncated, foreign or malicious file (weights_only refuses to run code)
        raise RunError(f"{path}: cannot be loaded as a checkpoint ({_load_failure(e)})") from None
    if not isinstance(state, dict) or not isinstance(state.get(half), dict) or state.get("epoch") != epoch:
        raise RunError(f"{path}: not the {half} half of epoch {epoch} (expected a dict with '{half}' and 'epoch': {epoch})")
    expected = run_id(out)
    if expected is not None and state.get("run_id") != expected:
        raise RunError(f"{path}: belongs to another run (run id {state.get('run_id')!r}; this folder's run is {expected!r})")
    return state


def load_half(state: dict, loaders: Dict[str, Callable], who: str, net) -> None:
    """Load a saved half into its objects (``loaders``: key of ``state`` -> the load function) and
    check its network's weights are finite; a state that does not fit, or a diverged one, is a
    :class:`RunError` naming ``who``."""
    from .models import finite_weights

    try:
        for key, load in loaders.items():
            load(state[key])
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        raise RunError(f"{who}: the saved state does not fit this run ({str(e).splitlines()[0]})") from None
    if not finite_weights(net):
        raise RunError(f"{who}: the saved state holds non-finite weights (a diverged run)")


def load_cache(path: str) -> dict:
    """A client's cached surrogate and attacked images (``client{k}_attack.pt``), checked."""
    try:
        cache = torch.load(path, weights_only=True)
    except Exception as e:
        raise RunError(f"{path}: cannot be loaded as the client's attack cache ({_load_failure(e)})") from None
    if not isinstance(cache, dict) or not isinstance(cache.get("surrogate"), dict) or not isinstance(cache.get("attacked"), dict):
        raise RunError(f"{path}: not a client's attack cache (expected a dict with 'surrogate' and 'attacked')")
    return cache


_LOCKS = {}  # run folder -> the open lock file this process holds for its lifetime


def lock(out: str) -> None:
    """Hold ``out/.lock`` for the rest of this process: a second writer is refused, not mixed in."""
    if out in _LOCKS:
        return
    path = os.path.join(out, ".lock")
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise RunError(f"--out {out}: another pgsl train ({holder}) is writing to this run folder") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}")
    f.flush()
    _LOCKS[out] = f


def prepare(cfg: Config) -> None:
    """Make ``cfg.out`` this run's folder: create it, lock it, and write ``config.json``. Without
    ``--resume`` the folder must hold nothing; with it, a run whose fixed options match. Call it
    after everything else is checked: a refused command changes nothing on disk."""
    out = cfg.out
    if os.path.exists(out) and not os.path.isdir(out):
        raise RunError(f"--out {out}: is a file; expected a folder")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise RunError(f"--out {out}: cannot be created ({e.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise RunError(f"--out {out}: is not writable")
    lock(out)
    path = os.path.join(out, "config.json")
    mine = cfg.to_json()
    if cfg.resume:
        if not os.path.exists(path):
            raise RunError(f"--resume: {out} holds no run (no config.json); leave out --resume to start one there")
        saved = read_json(path, "a run's options")
        for key, value in mine.items():
            if key not in RESUMABLE and key in saved and saved[key] != value:
                option = key.replace("_", "-")
                raise RunError(f"--resume: --{option} is {value!r}, but the run in {out} used {saved[key]!r}")
        for name in os.listdir(out):  # left by a process killed while writing
            if ".tmp" in name:
                os.remove(os.path.join(out, name))
        if cfg.epochs <= int(saved.get("epochs", 0)):
            return  # config.json keeps the longest run asked for
        mine["run_id"] = saved.get("run_id")
    else:
        held = sorted(n for n in os.listdir(out) if n != ".lock")
        if held:
            shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
            hint = "pass --resume to continue it" if "config.json" in held else "choose an empty or a new folder"
            raise RunError(f"--out {out}: not empty (holds {shown}); {hint}")
        mine["run_id"] = uuid.uuid4().hex
    write_json(mine, path)


def run_id(out: str) -> Optional[str]:
    """The identity ``prepare`` gave the run in ``out`` (None for folders from before it did)."""
    return read_json(os.path.join(out, "config.json"), "a run's options").get("run_id")


def read_json(path: str, what: str) -> dict:
    """A JSON object from ``path``, or a :class:`RunError` naming the file and ``what`` it should hold."""
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError) as e:
        raise RunError(f"{path}: cannot be read as {what} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(value, dict):
        raise RunError(f"{path}: expected {what} (a JSON object), got a {type(value).__name__}")
    return value


METRICS_KEYS = ("test_accuracy", "val_accuracy", "epochs", "defense", "data", "history")


def load_config_and_metrics(folder: str) -> Tuple[Config, dict]:
    """The config and metrics of a finished ``pgsl train`` folder, checked."""
    for name in ("config.json", "metrics.json", "client.json", "server.json"):
        if not os.path.isfile(os.path.join(folder, name)):
            raise RunError(f"--run {folder}: not a finished pgsl train folder ({name} is missing)")
    path = os.path.join(folder, "config.json")
    try:
        cfg = Config.from_json(read_json(path, "a run's options"))
        dataclasses.replace(cfg, device="cpu").check()  # the device it ran on need not be here
    except (TypeError, ConfigError) as e:
        raise RunError(f"{path}: not a valid pgsl train config ({e})") from None
    path = os.path.join(folder, "metrics.json")
    metrics = read_json(path, "a run's metrics")
    missing = [k for k in METRICS_KEYS if k not in metrics]
    if missing:
        raise RunError(f"{path}: not a pgsl train metrics file (no {', '.join(missing)})")
    return cfg, metrics


def git_commit() -> Optional[str]:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def versions() -> dict:
    return {"pgsl_ext": pgsl_ext.__version__, "torch": torch.__version__, "python": platform.python_version()}
