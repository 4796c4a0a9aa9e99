"""nodebook.data.mnist: the real idx files, corrupt / truncated / missing files, crops, batches, the bundled fallback."""

import gzip
import importlib.util
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from nodebook.data import mnist
from nodebook.utils import REPO_ROOT

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]  # shared/data/mnist/README.md
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _real_dir() -> Path:
    for base in (os.environ.get("NODEBOOK_DATA"), REPO_ROOT.parent / "shared" / "data"):
        if base and (Path(base) / "mnist" / "raw" / "t10k-labels-idx1-ubyte.gz").exists():
            return Path(base) / "mnist" / "raw"
    pytest.skip("the original MNIST files are not on this machine (set NODEBOOK_DATA)")


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No NODEBOOK_DATA, an empty per-user cache: only what a test passes is found."""
    monkeypatch.delenv("NODEBOOK_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    mnist._CACHE.clear()
    yield tmp_path
    mnist._CACHE.clear()


def _copy_dir(src: Path, dst: Path) -> Path:
    """The four files in ``dst``: the small ones copied (to be damaged), the large ones linked."""
    dst.mkdir(parents=True)
    for name in mnist.FILES:
        if name.startswith("train-images"):
            (dst / name).symlink_to(src / name)
        else:
            shutil.copy(src / name, dst / name)
    return dst


def test_real_files_shapes_counts_and_md5():
    raw_dir = _real_dir()
    for name, (md5, size, _, _) in mnist.FILES.items():
        assert mnist.md5sum(raw_dir / name) == md5
        assert (raw_dir / name).stat().st_size == size
    raw = mnist.load_raw(raw_dir, download=False)
    assert raw["train_images"].shape == (60000, 28, 28) and raw["train_images"].dtype == torch.uint8
    assert raw["test_images"].shape == (10000, 28, 28)
    assert torch.bincount(raw["train_labels"].long(), minlength=10).tolist() == TRAIN_COUNTS
    assert torch.bincount(raw["test_labels"].long(), minlength=10).tolist() == TEST_COUNTS
    assert abs(raw["train_images"].float().mean().item() - 33.32) < 0.01
    assert mnist.load_raw(raw_dir, download=False) is raw  # cached in memory


def test_load_mnist_scales_and_subsets():
    data = mnist.load_mnist(_real_dir(), num_train=100, num_test=50, download=False)
    assert data.train_x.shape == (100, 1, 28, 28) and data.train_x.dtype == torch.float32
    assert data.test_y.shape == (50,) and data.test_y.dtype == torch.int64
    assert data.train_x.max().item() == 1.0 and data.train_x.min().item() == 0.0
    assert data.tag == "" and not data.is_subset


def test_corrupt_file_names_file_and_expected_md5(isolated):
    folder = _copy_dir(_real_dir(), isolated / "corrupt")
    path = folder / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(mnist.MNISTError) as error:
        mnist.load_raw(folder, download=False)
    message = str(error.value)
    assert "t10k-labels-idx1-ubyte.gz" in message and str(folder) in message
    assert "ec29112dd5afa0611ce80d1b7f02629c" in message and "corrupt" in message


def test_truncated_file(isolated):
    folder = _copy_dir(_real_dir(), isolated / "truncated")
    path = folder / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(mnist.MNISTError, match=r"train-labels-idx1-ubyte.gz .* truncated: .*1000 bytes.*"
                                               r"expected MD5 d53e105ee54ea40749a09fcbcd1e9432 \(28881 bytes\)"):
        mnist.load_raw(folder, download=False)


def test_missing_file_in_folder(isolated):
    folder = _copy_dir(_real_dir(), isolated / "partial")
    (folder / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(mnist.MNISTError, match="t10k-images-idx3-ubyte.gz: missing; expected it at .*partial"):
        mnist.load_raw(folder, download=False)


def test_missing_everywhere_lists_where_it_looked(isolated, monkeypatch):
    monkeypatch.setenv("NODEBOOK_DATA", str(isolated / "env-data"))
    nowhere = isolated / "nowhere"
    with pytest.raises(mnist.MNISTNotFound) as error:
        mnist.load_raw(nowhere, download=False)
    message = str(error.value)
    for place in (nowhere, isolated / "env-data" / "mnist" / "raw", isolated / "cache" / "nodebook" / "mnist" / "raw"):
        assert str(place) in message
    assert "train-images-idx3-ubyte.gz" in message


def test_search_order_argument_then_env_then_cache(isolated, monkeypatch):
    monkeypatch.setenv("NODEBOOK_DATA", "/env/data")
    assert mnist.candidate_dirs("/explicit") == [Path("/explicit"), Path("/env/data/mnist/raw"),
                                                  isolated / "cache" / "nodebook" / "mnist" / "raw"]


def test_parse_idx_checks_magic_and_shape():
    name = "t10k-labels-idx1-ubyte.gz"
    good = (0x801).to_bytes(4, "big") + (10000).to_bytes(4, "big") + bytes(10000)
    assert mnist.parse_idx(good, name).shape == (10000,)
    with pytest.raises(mnist.MNISTError, match="magic number 2051 is not the expected 0x00000801"):
        mnist.parse_idx((0x803).to_bytes(4, "big") + good[4:], name)
    with pytest.raises(mnist.MNISTError, match=r"header says shape \(9999,\), expected \(10000,\)"):
        mnist.parse_idx(good[:4] + (9999).to_bytes(4, "big") + bytes(9999), name)
    with pytest.raises(mnist.MNISTError, match="9999 data bytes after the header, expected 10000"):
        mnist.parse_idx(good[:-1], name)


def test_real_labels_parse_from_gzip():
    path = _real_dir() / "t10k-labels-idx1-ubyte.gz"
    labels = mnist.parse_idx(gzip.decompress(path.read_bytes()), path.name)
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]  # the first test digits of MNIST


def test_random_crop_is_a_shifted_window():
    torch.manual_seed(0)
    x = torch.rand(16, 1, 28, 28)
    out = mnist.random_crop(x, padding=4)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    shifts = set()
    for i in range(16):
        matches = [(dy, dx) for dy in range(9) for dx in range(9)
                   if torch.equal(out[i], padded[i, :, dy:dy + 28, dx:dx + 28])]
        assert matches, i
        shifts.add(matches[0])
    assert len(shifts) > 4  # offsets differ between images
    torch.manual_seed(0)
    torch.rand(16, 1, 28, 28)
    assert torch.equal(mnist.random_crop(x, padding=4), out)  # global generator: reproducible
    assert torch.equal(mnist.random_crop(x, padding=0), x)


def test_random_affine_moves_digits_but_keeps_their_mass():
    torch.manual_seed(0)
    x = torch.zeros(32, 1, 28, 28)
    x[:, :, 10:18, 12:16] = 1.0  # a bar in the middle, away from the border
    out = mnist.random_affine(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, x)
    mass = out.sum((1, 2, 3)) / x.sum((1, 2, 3))
    assert ((mass > 0.7) & (mass < 1.3)).all()  # zoom 0.9-1.1 changes the area by at most about 20%
    torch.manual_seed(0)
    assert torch.equal(mnist.random_affine(x), out)  # global generator: reproducible
    identity = mnist.random_affine(x, degrees=0.0, scale=(1.0, 1.0), shift=0.0)
    assert torch.allclose(identity, x, atol=1e-5)


def test_batches_name_their_augmentation():
    x, y = torch.rand(6, 1, 28, 28), torch.arange(6)
    assert mnist.Batches(x, y, 2, augment=True).augment is mnist.random_crop
    assert mnist.Batches(x, y, 2, augment="affine").augment is mnist.random_affine
    assert mnist.Batches(x, y, 2).augment is None
    with pytest.raises(ValueError, match="unknown augmentation 'blur'.*affine.*crop"):
        mnist.Batches(x, y, 2, augment="blur")


def test_validation_split_is_disjoint_and_fixed():
    x = torch.arange(100.0).view(100, 1, 1, 1)
    data = mnist.MNIST(x, torch.arange(100), x[:5], torch.arange(5), "toy")
    split = mnist.split_validation(data, 20, seed=0)
    assert len(split.train_y) == 80 and len(split.test_y) == 20 and "validation split of 20" in split.name
    assert set(split.train_y.tolist()).isdisjoint(split.test_y.tolist())
    assert torch.equal(mnist.split_validation(data, 20, seed=0).test_y, split.test_y)
    with pytest.raises(ValueError, match="num_val"):
        mnist.split_validation(data, 100)


def test_batches_cover_every_example_once():
    x, y = torch.arange(10.0).view(10, 1, 1, 1), torch.arange(10)
    batches = list(mnist.Batches(x, y, 4, shuffle=True))
    assert [len(b[1]) for b in batches] == [4, 4, 2] and len(mnist.Batches(x, y, 4)) == 3
    seen = torch.cat([b[1] for b in batches])
    assert sorted(seen.tolist()) == list(range(10)) and seen.tolist() != list(range(10))
    assert all(torch.equal(b[0].view(-1), b[1].float()) for b in batches)


def test_offline_fallback_is_loud_and_tagged(isolated):
    with pytest.warns(UserWarning, match="(?s)MNIST NOT FOUND.*5,000-image MNIST subset bundled with nodebook"):
        data = mnist.load_mnist(isolated / "nowhere", download=False)
    assert data.tag == " (5k offline subset)" and data.is_subset and "5k offline subset" in data.name
    assert data.train_x.shape == (4000, 1, 28, 28) and data.test_x.shape == (1000, 1, 28, 28)
    assert torch.bincount(data.train_y, minlength=10).tolist() == [400] * 10
    assert torch.bincount(data.test_y, minlength=10).tolist() == [100] * 10
    assert data.train_x.max().item() == 1.0 and data.train_x.min().item() == 0.0
    # shuffled: any prefix (the smoke profile's num_train=512) holds every digit
    with pytest.warns(UserWarning, match="MNIST NOT FOUND"):
        small = mnist.load_mnist(isolated / "nowhere", num_train=100, num_test=50, download=False)
    assert small.train_x.shape == (100, 1, 28, 28) and small.tag == " (5k offline subset)"
    assert set(small.train_y.tolist()) == set(range(10)) and set(small.test_y.tolist()) == set(range(10))
    with pytest.raises(mnist.MNISTNotFound):
        mnist.load_mnist(isolated / "nowhere", download=False, allow_offline_subset=False)


def test_offline_subset_is_drawn_from_the_original_files():
    """Every bundled image is the original image at its recorded index; train from train, test from test."""
    raw = mnist.load_raw(_real_dir(), download=False)
    assert mnist.sha256sum(mnist.SUBSET_FILE) == mnist.SUBSET_SHA256
    with np.load(mnist.SUBSET_FILE, allow_pickle=False) as archive:
        subset = {key: torch.from_numpy(archive[key]) for key in archive.files}
    for split, size in (("train", 4000), ("test", 1000)):
        index = subset[f"{split}_index"].long()
        assert len(index.unique()) == size == len(subset[f"{split}_labels"])
        assert torch.equal(subset[f"{split}_images"], raw[f"{split}_images"][index])
        assert torch.equal(subset[f"{split}_labels"], raw[f"{split}_labels"][index])
    offline = mnist.load_offline_subset()
    assert sorted(offline) == ["test_images", "test_labels", "train_images", "train_labels"]
    assert torch.equal(offline["train_images"], subset["train_images"])


def test_make_mnist_subset_script_remakes_the_shipped_file(tmp_path):
    spec = importlib.util.spec_from_file_location("make_mnist_subset", REPO_ROOT / "scripts" / "make_mnist_subset.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "mnist_subset.npz"
    assert script.main(["--raw-dir", str(_real_dir()), "--out", str(out)]) == 0
    assert out.read_bytes() == mnist.SUBSET_FILE.read_bytes()
    other = tmp_path / "seed1.npz"  # a different draw is a different file, which the loader refuses
    assert script.make_subset(other, _real_dir(), seed=1) != mnist.SUBSET_SHA256
    with pytest.raises(mnist.MNISTError, match="seed1.npz at .* is corrupt: SHA-256 .*, expected "
                                               + mnist.SUBSET_SHA256):
        mnist.load_offline_subset(other)


def test_corrupt_offline_subset_names_file_and_never_loads(isolated, monkeypatch):
    bad = isolated / "mnist_subset.npz"
    data = bytearray(mnist.SUBSET_FILE.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    monkeypatch.setattr(mnist, "SUBSET_FILE", bad)
    with pytest.raises(mnist.MNISTError) as error:
        mnist.load_mnist(isolated / "nowhere", download=False)
    message = str(error.value)
    assert f"mnist_subset.npz at {bad} is corrupt" in message and mnist.SUBSET_SHA256 in message
    assert "reinstall nodebook" in message and "scripts/make_mnist_subset.py" in message


def test_missing_offline_subset_says_reinstall(isolated, monkeypatch):
    monkeypatch.setattr(mnist, "SUBSET_FILE", isolated / "gone" / "mnist_subset.npz")
    with pytest.raises(mnist.MNISTError, match=r"mnist_subset.npz: the MNIST subset bundled with nodebook is "
                                               r"missing; expected it at .*gone.*reinstall nodebook"):
        mnist.load_mnist(isolated / "nowhere", download=False)


def test_corrupt_files_never_fall_back(isolated):
    folder = _copy_dir(_real_dir(), isolated / "bad")
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(b"version https://git-lfs.github.com/spec/v1\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(mnist.MNISTError, match="t10k-labels-idx1-ubyte.gz"):
            mnist.load_mnist(folder, download=False)
