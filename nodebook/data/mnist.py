"""MNIST from the four original idx files, verified, in memory (chapter ``03_mnist``).

Where the files are looked for, in order:

1. the ``directory`` argument of :func:`load_raw` / :func:`load_mnist`;
2. ``$NODEBOOK_DATA/mnist/raw`` (the Makefile points it at the shared copy);
3. the per-user cache ``$XDG_CACHE_HOME/nodebook/mnist/raw`` (default
   ``~/.cache/nodebook/mnist/raw``); with internet and no files anywhere, the
   four files are downloaded there and verified.

Each file's MD5 is checked before it is parsed, then the idx magic number and
shape. A missing, truncated or corrupt file raises :class:`MNISTError` naming
the file, what was expected and where the loader looked. Parsed tensors are
cached in memory for the rest of the process.

Offline with no files anywhere, :func:`load_mnist` falls back (loudly) to the
5,000-image MNIST subset shipped inside the package (``mnist_subset.npz``:
4,000 training images drawn from MNIST's training file and 1,000 test images
from its test file, 500 per digit, SHA-256-checked on load; made by
``scripts/make_mnist_subset.py``), and says so in ``MNIST.name`` and
``MNIST.tag`` so every result row can be marked.

Batches are built by indexing tensors in memory (:class:`Batches`); random
crop with 4-pixel zero padding (:func:`random_crop`) runs in plain torch on
any device.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# name -> (MD5 of the .gz file, size in bytes, idx magic number, shape)
FILES = {
    "train-images-idx3-ubyte.gz": ("f68b3c2dcbeaaa9fbdd348bbdeb94873", 9912422, 0x00000803, (60000, 28, 28)),
    "train-labels-idx1-ubyte.gz": ("d53e105ee54ea40749a09fcbcd1e9432", 28881, 0x00000801, (60000,)),
    "t10k-images-idx3-ubyte.gz": ("9fb629c4189551a2d022fa330f9573f3", 1648877, 0x00000803, (10000, 28, 28)),
    "t10k-labels-idx1-ubyte.gz": ("ec29112dd5afa0611ce80d1b7f02629c", 4542, 0x00000801, (10000,)),
}
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
           "https://storage.googleapis.com/cvdf-datasets/mnist/")
SUBSET_TAG = " (5k offline subset)"
# The bundled offline subset (package data) and the SHA-256 of the file scripts/make_mnist_subset.py writes.
SUBSET_FILE = Path(__file__).with_name("mnist_subset.npz")
SUBSET_SHA256 = "70043b739f5956c36f5711e919e97309e497e74eabdbc0a5b87a73abf7d92697"


class MNISTError(RuntimeError):
    """A missing, truncated or corrupt MNIST file (the message says which and where)."""


class MNISTNotFound(MNISTError):
    """No MNIST files in any of the places looked (and no download possible)."""


def cache_dir() -> Path:
    """The per-user cache: ``$XDG_CACHE_HOME/nodebook/mnist/raw`` or ``~/.cache/nodebook/mnist/raw``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nodebook" / "mnist" / "raw"


def candidate_dirs(directory=None) -> list[Path]:
    """The folders looked in, in order: the argument, ``$NODEBOOK_DATA/mnist/raw``, the user cache."""
    dirs = []
    if directory is not None:
        dirs.append(Path(directory))
    if os.environ.get("NODEBOOK_DATA"):
        dirs.append(Path(os.environ["NODEBOOK_DATA"]) / "mnist" / "raw")
    dirs.append(cache_dir())
    return dirs


def _file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def md5sum(path: Path) -> str:
    return _file_digest(path, "md5")


def sha256sum(path: Path) -> str:
    return _file_digest(path, "sha256")


def verify_file(path: Path) -> None:
    """Raise :class:`MNISTError` unless ``path`` exists and has the MD5 of the README's table."""
    path = Path(path)
    md5, size, _, _ = FILES[path.name]
    if not path.is_file():
        raise MNISTError(f"{path.name}: missing; expected it at {path} (MD5 {md5}, {size} bytes)")
    actual_size = path.stat().st_size
    actual = md5sum(path)
    if actual != md5:
        what = "truncated" if actual_size < size else "corrupt"
        raise MNISTError(
            f"{path.name} at {path} is {what}: MD5 {actual} ({actual_size} bytes), expected MD5 {md5} "
            f"({size} bytes). Delete it and fetch the original file again.")


def parse_idx(data: bytes, name: str) -> np.ndarray:
    """Parse the gunzipped bytes of idx file ``name``: check magic number and shape, return uint8 array."""
    _, _, magic, shape = FILES[name]
    if len(data) < 4 or int.from_bytes(data[:4], "big") != magic:
        found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
        raise MNISTError(f"{name}: magic number {found!r:} is not the expected {magic:#010x}")
    ndim = magic & 0xFF
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if dims != shape:
        raise MNISTError(f"{name}: header says shape {dims}, expected {shape}")
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise MNISTError(f"{name}: {body.size} data bytes after the header, expected {int(np.prod(shape))}")
    return body.reshape(shape)


def _download(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        target = directory / name
        if target.is_file() and md5sum(target) == FILES[name][0]:
            continue
        errors = []
        for mirror in MIRRORS:
            try:
                tmp = target.with_name(name + ".part")
                with urllib.request.urlopen(mirror + name, timeout=20) as response, open(tmp, "wb") as f:
                    f.write(response.read())
                os.replace(tmp, target)
                verify_file(target)
                break
            except Exception as error:  # network errors, bad files: try the next mirror
                errors.append(f"{mirror}{name}: {error}")
        else:
            raise MNISTNotFound("could not download MNIST: " + "; ".join(errors))


def find_raw_dir(directory=None, download: bool = True) -> Path:
    """The first folder (see :func:`candidate_dirs`) holding any of the four files; else download.

    A folder holding some but not all files is an error (it names the missing one).
    """
    looked = candidate_dirs(directory)
    for folder in looked:
        if any((folder / name).exists() for name in FILES):
            return folder
    where = ", ".join(str(d) for d in looked)
    if download:
        try:
            _download(cache_dir())
            return cache_dir()
        except MNISTNotFound as error:
            raise MNISTNotFound(f"no MNIST files ({', '.join(FILES)}) in any of: {where}; {error}") from None
    raise MNISTNotFound(f"no MNIST files ({', '.join(FILES)}) in any of: {where} (download disabled)")


_CACHE: dict = {}


def load_raw(directory=None, download: bool = True) -> dict[str, torch.Tensor]:
    """The four arrays as uint8 tensors: ``train_images (60000, 28, 28)``, ``train_labels (60000,)``,
    ``test_images (10000, 28, 28)``, ``test_labels (10000,)``. Verified, then cached in memory."""
    folder = find_raw_dir(directory, download).resolve()
    if folder in _CACHE:
        return _CACHE[folder]
    arrays = {}
    for name in FILES:
        path = folder / name
        verify_file(path)
        arrays[name] = torch.from_numpy(parse_idx(gzip.decompress(path.read_bytes()), name).copy())
    out = {"train_images": arrays["train-images-idx3-ubyte.gz"], "train_labels": arrays["train-labels-idx1-ubyte.gz"],
           "test_images": arrays["t10k-images-idx3-ubyte.gz"], "test_labels": arrays["t10k-labels-idx1-ubyte.gz"]}
    _CACHE[folder] = out
    return out


def load_offline_subset(path=None) -> dict[str, torch.Tensor]:
    """The 5,000-image MNIST subset bundled with nodebook, as uint8 tensors: ``train_images (4000, 28, 28)``,
    ``train_labels (4000,)`` (drawn from MNIST's training file), ``test_images (1000, 28, 28)``,
    ``test_labels (1000,)`` (from its test file); 500 images per digit in all.

    Reads ``path`` (default :data:`SUBSET_FILE`, installed with the package) after checking its SHA-256
    against :data:`SUBSET_SHA256`; a missing or altered file raises :class:`MNISTError` naming it.
    Needs no network and no package beyond numpy and torch.
    """
    path = Path(path) if path is not None else SUBSET_FILE
    remedy = ("reinstall nodebook (pip install .), or regenerate the file from the original MNIST files "
              "with scripts/make_mnist_subset.py")
    if not path.is_file():
        raise MNISTError(f"{path.name}: the MNIST subset bundled with nodebook is missing; expected it at "
                         f"{path}. To fix it, {remedy}.")
    actual = sha256sum(path)
    if actual != SUBSET_SHA256:
        raise MNISTError(f"{path.name} at {path} is corrupt: SHA-256 {actual}, expected {SUBSET_SHA256}. "
                         f"To fix it, {remedy}.")
    with np.load(path, allow_pickle=False) as archive:
        return {key: torch.from_numpy(archive[key])
                for key in ("train_images", "train_labels", "test_images", "test_labels")}


@dataclass
class MNIST:
    """Images as float tensors in [0, 1] of shape ``(N, 1, 28, 28)``, labels int64 ``(N,)``.

    ``name`` says what the data is; ``tag`` is ``""`` for the real MNIST and
    ``" (5k offline subset)"`` for the fallback: append it to every result row name.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    name: str
    tag: str = ""

    @property
    def is_subset(self) -> bool:
        return bool(self.tag)

    def __repr__(self) -> str:
        return f"{self.name}: {len(self.train_y)} training and {len(self.test_y)} test images"


def load_mnist(directory=None, *, num_train: int | None = None, num_test: int | None = None,
               device="cpu", download: bool = True, allow_offline_subset: bool = True) -> MNIST:
    """MNIST as in-memory tensors on ``device``; optionally only the first ``num_train``/``num_test`` images.

    With no files anywhere and no download possible, and ``allow_offline_subset``,
    warns loudly and returns the bundled 5k subset (:func:`load_offline_subset`),
    tagged ``(5k offline subset)``.
    Corrupt or truncated files always raise: they are never silently replaced.
    """
    try:
        raw = load_raw(directory, download)
        name, tag = "MNIST (original idx files, MD5-verified)", ""
    except MNISTNotFound as error:
        if not allow_offline_subset:
            raise
        raw = load_offline_subset()
        message = (f"\n{'!' * 78}\nMNIST NOT FOUND: {error}\nFalling back to the 5,000-image MNIST subset "
                   f"bundled with nodebook (4,000 train / 1,000 test, 500 per digit).\nEvery number from this "
                   f"run is on that subset, NOT on MNIST's 60,000/10,000 split.\n{'!' * 78}")
        warnings.warn(message, stacklevel=2)
        name, tag = "MNIST 5k offline subset (bundled with nodebook, 500 per digit)", SUBSET_TAG
    def prep(images, labels, n):
        images, labels = images[:n], labels[:n]
        return (images.to(device=device, dtype=torch.float32).unsqueeze(1) / 255.0,
                labels.to(device=device, dtype=torch.int64))
    train_x, train_y = prep(raw["train_images"], raw["train_labels"], num_train)
    test_x, test_y = prep(raw["test_images"], raw["test_labels"], num_test)
    if len(test_y) < len(raw["test_labels"]):  # runs evaluated on fewer test images are other runs
        name += f", first {len(test_y)} test images"
    return MNIST(train_x, train_y, test_x, test_y, name, tag)


def random_crop(x: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """Random crop of each image after zero padding: ``(B, C, H, W) -> (B, C, H, W)``.

    Offsets come from torch's global generator (on the CPU), so a resumed run
    draws the same crops. Equivalent to torchvision's ``RandomCrop(H, padding)``.
    """
    B, C, H, W = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    offsets = torch.randint(0, 2 * padding + 1, (2, B)).to(x.device)
    rows = (offsets[0][:, None] + torch.arange(H, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
    cols = (offsets[1][:, None] + torch.arange(W, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
    batch = torch.arange(B, device=x.device)[:, None, None, None]
    channel = torch.arange(C, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def random_affine(x: torch.Tensor, degrees: float = 10.0, scale=(0.9, 1.1), shift: float = 2.0) -> torch.Tensor:
    """Random rotation (±``degrees``), zoom (``scale``) and shift (±``shift`` pixels) of each image.

    ``(B, C, H, W) -> (B, C, H, W)``, bilinear, zero outside. The draws come
    from torch's global generator on the CPU, so a resumed run draws the same
    transforms on any device. The chapter ``03_mnist`` trains its
    convolutional models with it.
    """
    B, C, H, W = x.shape
    draws = torch.rand(4, B)
    angle = (2 * draws[0] - 1) * degrees * torch.pi / 180
    zoom = scale[0] + (scale[1] - scale[0]) * draws[1]
    tx, ty = (2 * draws[2] - 1) * shift * 2 / W, (2 * draws[3] - 1) * shift * 2 / H
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = torch.nn.functional.affine_grid(theta.to(x), (B, C, H, W), align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


AUGMENTATIONS = {"crop": random_crop, "affine": random_affine}


def split_validation(data: MNIST, num_val: int = 5000, seed: int = 0) -> MNIST:
    """Hold out ``num_val`` training images (a fixed random draw) as the evaluation set.

    Returns an :class:`MNIST` whose ``test_x``/``test_y`` are the held-out
    images and whose train set is the rest: recipes are tuned on this, never
    on the test set.
    """
    if not 0 < num_val < len(data.train_y):
        raise ValueError(f"num_val must be between 1 and {len(data.train_y) - 1}, got {num_val}")
    perm = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(seed)).to(data.train_x.device)
    val, train = perm[:num_val], perm[num_val:]
    return MNIST(data.train_x[train], data.train_y[train], data.train_x[val], data.train_y[val],
                 f"{data.name}, validation split of {num_val} (seed {seed})", data.tag)


class Batches:
    """Minibatches by indexing in-memory tensors: ``for x, y in Batches(X, Y, 128, shuffle=True, augment=True)``.

    Shuffling uses torch's global generator; ``augment`` names an entry of
    :data:`AUGMENTATIONS` (``True`` means ``"crop"``, :func:`random_crop`).
    The last, smaller batch is kept.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, *, shuffle: bool = False,
                 augment: bool = False):
        if augment is True:
            augment = "crop"
        if augment and augment not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {augment!r}; choose one of {sorted(AUGMENTATIONS)}")
        self.x, self.y, self.batch_size, self.shuffle = x, y, batch_size, shuffle
        self.augment = AUGMENTATIONS[augment] if augment else None

    def __len__(self) -> int:
        return -(-len(self.y) // self.batch_size)

    def __iter__(self):
        n = len(self.y)
        order = torch.randperm(n).to(self.x.device) if self.shuffle else None
        for start in range(0, n, self.batch_size):
            if order is None:
                xb, yb = self.x[start:start + self.batch_size], self.y[start:start + self.batch_size]
            else:
                idx = order[start:start + self.batch_size]
                xb, yb = self.x[idx], self.y[idx]
            yield (self.augment(xb) if self.augment is not None else xb), yb
