#!/usr/bin/env python3
"""Rebuild the embedded demo subsets from the official MNIST and CIFAR-10 files.

Usage: python3 make_subset.py [SOURCE_DIR]   (default: ../../../../shared/data,
i.e. /work/shared/data when run from this directory's repository checkout)

SOURCE_DIR must hold mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] and
cifar10/{data_batch_1,test_batch}.bin[.gz]. Each source file is decompressed and its
SHA-256 is checked against the official value before anything is written, so the
subsets are provably cut from the official data. The outputs keep the official formats
(IDX with adjusted counts, CIFAR binary records) and are compressed with
gzip.compress(data, 9, mtime=0), so rerunning the script reproduces them byte for byte.

Only the Python standard library is used.
"""

import gzip
import hashlib
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

MNIST_TRAIN = 1600
MNIST_TEST = 400
CIFAR_TRAIN = 1600
CIFAR_TEST = 400
CIFAR_RECORD = 1 + 3 * 32 * 32

# SHA-256 of the decompressed official files (see /work/shared/data/README.md).
OFFICIAL_SHA256 = {
    "mnist/train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "mnist/train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "mnist/t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "mnist/t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    "cifar10/data_batch_1.bin": "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5",
    "cifar10/test_batch.bin": "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b",
}


def read_official(source, name):
    """Return the decompressed bytes of an official file, verified by SHA-256."""
    for candidate in (name, name + ".gz"):
        path = os.path.join(source, candidate)
        if os.path.exists(path):
            with open(path, "rb") as f:
                data = f.read()
            if data[:2] == b"\x1f\x8b":
                data = gzip.decompress(data)
            digest = hashlib.sha256(data).hexdigest()
            if digest != OFFICIAL_SHA256[name]:
                sys.exit(f"{path}: sha256 {digest} is not the official {OFFICIAL_SHA256[name]}")
            return data
    sys.exit(f"{os.path.join(source, name)}[.gz] not found")


def idx_images(data, count):
    magic, total, rows, cols = struct.unpack(">IIII", data[:16])
    assert magic == 0x00000803 and (rows, cols) == (28, 28) and count <= total
    return struct.pack(">IIII", magic, count, rows, cols) + data[16 : 16 + count * rows * cols]


def idx_labels(data, count):
    magic, total = struct.unpack(">II", data[:8])
    assert magic == 0x00000801 and count <= total
    return struct.pack(">II", magic, count) + data[8 : 8 + count]


def cifar_records(data, count):
    assert len(data) % CIFAR_RECORD == 0 and count <= len(data) // CIFAR_RECORD
    return data[: count * CIFAR_RECORD]


def write(name, data):
    path = os.path.join(HERE, name + ".gz")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    packed = gzip.compress(data, 9, mtime=0)
    with open(path, "wb") as f:
        f.write(packed)
    print(f"{name}.gz  {len(packed):>9} bytes  sha256(raw) {hashlib.sha256(data).hexdigest()}")


def main():
    default = os.path.join(HERE, "..", "..", "..", "..", "shared", "data")
    source = sys.argv[1] if len(sys.argv) > 1 else default
    jobs = [
        ("mnist/train-images-idx3-ubyte", lambda d: idx_images(d, MNIST_TRAIN)),
        ("mnist/train-labels-idx1-ubyte", lambda d: idx_labels(d, MNIST_TRAIN)),
        ("mnist/t10k-images-idx3-ubyte", lambda d: idx_images(d, MNIST_TEST)),
        ("mnist/t10k-labels-idx1-ubyte", lambda d: idx_labels(d, MNIST_TEST)),
        ("cifar10/data_batch_1.bin", lambda d: cifar_records(d, CIFAR_TRAIN)),
        ("cifar10/test_batch.bin", lambda d: cifar_records(d, CIFAR_TEST)),
    ]
    for name, cut in jobs:
        write(name, cut(read_official(source, name)))


if __name__ == "__main__":
    main()
