"""Make the MNIST subset bundled with nodebook: ``python scripts/make_mnist_subset.py [--raw-dir DIR]``.

``nodebook/data/mnist_subset.npz`` is the offline fallback of
:func:`nodebook.data.mnist.load_mnist` (tag ``" (5k offline subset)"``). The
shipped file was made by this script with its defaults, as follows:

* **source**: the four original MNIST idx files, MD5-verified by
  :func:`nodebook.data.mnist.load_raw` (looked for in ``--raw-dir``, then
  ``$NODEBOOK_DATA/mnist/raw``, then the per-user cache, where they are
  downloaded if they are nowhere else);
* **draw**: class-balanced, without replacement, from one
  ``numpy.random.default_rng(0)``: for each digit 0, 1, ..., 9 in turn, 400
  images of the training file, then the whole training draw is shuffled by the
  same generator; then likewise 100 images per digit of the test file. That is
  4,000 training and 1,000 test images, 500 per digit; training images come
  only from MNIST's training file and test images only from its test file;
* **shuffled** so that any prefix (``load_mnist(num_train=512)``) mixes the digits;
* **stored** as ``train_images`` (4000, 28, 28) and ``test_images`` (1000, 28, 28)
  uint8 pixels, ``train_labels`` / ``test_labels`` uint8, and ``train_index`` /
  ``test_index`` int32, the position of each image in its original file, so
  anyone holding the original files can check every image
  (``tests/test_mnist_data.py`` does);
* **written** as an ``.npz`` (zip, deflate level 9) with fixed member
  timestamps, so the same inputs give the same bytes. The script prints the
  file's SHA-256, which must equal ``SUBSET_SHA256`` in
  ``nodebook/data/mnist.py`` (the loader refuses a file that does not match).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import zipfile
from pathlib import Path

import numpy as np

from nodebook.data import mnist

SEED = 0
PER_CLASS_TRAIN = 400
PER_CLASS_TEST = 100
_TIMESTAMP = (1980, 1, 1, 0, 0, 0)  # the zip format's earliest date: reproducible bytes


def balanced_draw(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """``per_class`` indices of each digit 0..9 (in that order, without replacement), then shuffled."""
    picks = []
    for digit in range(10):
        members = np.flatnonzero(labels == digit)
        if len(members) < per_class:
            raise ValueError(f"only {len(members)} images of digit {digit}, cannot draw {per_class}")
        picks.append(rng.choice(members, per_class, replace=False))
    index = np.concatenate(picks)
    return index[rng.permutation(len(index))]


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An ``np.load``-able ``.npz`` whose bytes depend only on ``arrays`` (fixed timestamps and order)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with zipfile.ZipFile(tmp, "w") as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), version=(1, 0), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=_TIMESTAMP)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, buffer.getvalue(), compresslevel=9)
    os.replace(tmp, path)


def make_subset(out: Path = mnist.SUBSET_FILE, raw_dir=None, *, seed: int = SEED,
                per_class_train: int = PER_CLASS_TRAIN, per_class_test: int = PER_CLASS_TEST) -> str:
    """Write the subset to ``out`` from the original files (see the module docstring); return its SHA-256."""
    raw = {k: v.numpy() for k, v in mnist.load_raw(raw_dir).items()}
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, per_class in (("train", per_class_train), ("test", per_class_test)):
        index = balanced_draw(raw[f"{split}_labels"], per_class, rng)
        arrays[f"{split}_images"] = raw[f"{split}_images"][index]
        arrays[f"{split}_labels"] = raw[f"{split}_labels"][index]
        arrays[f"{split}_index"] = index.astype(np.int32)
    write_npz(out, arrays)
    return mnist.sha256sum(Path(out))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw-dir", default=None,
                        help="folder holding the four original .gz files (default: $NODEBOOK_DATA/mnist/raw, "
                             "then the per-user cache, downloading there)")
    parser.add_argument("--out", type=Path, default=mnist.SUBSET_FILE, help=f"default: {mnist.SUBSET_FILE}")
    args = parser.parse_args(argv)
    try:
        digest = make_subset(args.out, args.raw_dir)
    except mnist.MNISTError as error:
        print(f"cannot make the subset: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes), SHA-256 {digest}")
    if digest != mnist.SUBSET_SHA256:
        print(f"this differs from SUBSET_SHA256 = {mnist.SUBSET_SHA256} in nodebook/data/mnist.py: "
              f"set it to {digest} if the new file is intended", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
