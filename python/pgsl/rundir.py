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

import json
import os
import platform
import subprocess
from typing import Optional, Tuple

import torch

import pgsl_ext

from .config import RESUMABLE, Config
from .errors import RunError

__all__ = [
    "checkpoint",
    "git_commit",
    "load_checkpoint",
    "load_config_and_metrics",
    "marker",
    "prepare",
    "save",
    "versions",
    "write_json",
]


def _atomic_write(path: str, write) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    write(tmp)
    os.replace(tmp, path)


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
    try:
        with open(path) as f:
            return int(json.load(f)["epoch"])
    except (ValueError, KeyError, TypeError, json.JSONDecodeError):
        raise RunError(f"{path}: not a checkpoint marker (expected {{\"epoch\": N}})") from None


def checkpoint(out: str, half: str, epoch: int, state: dict) -> None:
    save(state, os.path.join(out, f"{half}_epoch{epoch}.pt"))
    write_json({"epoch": epoch}, os.path.join(out, f"{half}.json"))
    old = os.path.join(out, f"{half}_epoch{epoch - 2}.pt")
    if os.path.exists(old):
        os.remove(old)


def load_checkpoint(out: str, half: str, epoch: int) -> dict:
    path = os.path.join(out, f"{half}_epoch{epoch}.pt")
    try:
        return torch.load(path, weights_only=True)
    except FileNotFoundError:
        raise RunError(f"--resume: {path} is missing (the {half} half of epoch {epoch})") from None
    except Exception as e:  # a truncated or foreign file
        raise RunError(f"--resume: {path} cannot be loaded ({type(e).__name__}: {e})") from None


def prepare(cfg: Config) -> None:
    """Create ``cfg.out`` and write ``config.json``; with ``--resume`` the options that fix the
    run must match the saved ones, without it the folder must not hold a run."""
    os.makedirs(cfg.out, exist_ok=True)
    path = os.path.join(cfg.out, "config.json")
    mine = {k: v for k, v in cfg.to_json().items() if k not in RESUMABLE}
    if cfg.resume and os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        for key, value in mine.items():
            if key in saved and saved[key] != value:
                option = key.replace("_", "-")
                raise RunError(f"--resume: --{option} is {value!r}, but the run in {cfg.out} used {saved[key]!r}")
    elif not cfg.resume and any(os.path.exists(os.path.join(cfg.out, f)) for f in ("client.json", "server.json")):
        raise RunError(f"--out {cfg.out}: holds an earlier run's checkpoints; pass --resume to continue it or choose another folder")
    write_json(cfg.to_json(), path)


def load_config_and_metrics(folder: str) -> Tuple[Config, dict]:
    """The config and metrics of a finished ``pgsl train`` folder."""
    for name in ("config.json", "metrics.json", "client.json", "server.json"):
        if not os.path.isfile(os.path.join(folder, name)):
            raise RunError(f"--run {folder}: not a finished pgsl train folder ({name} is missing)")
    with open(os.path.join(folder, "config.json")) as f:
        cfg = Config.from_json(json.load(f))
    with open(os.path.join(folder, "metrics.json")) as f:
        metrics = json.load(f)
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
