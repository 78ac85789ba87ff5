"""Fuzz the loader: thousands of damaged `.ir` files (byte-level and msgpack-level mutations of
valid programs). Only IRFormatError may escape, no decode may hang, memory stays bounded, and
whatever is accepted can be written again."""

from __future__ import annotations

import collections
import math
import random
import time
import tracemalloc

import msgpack

from tinyc.ir.codec import decode_program, encode_program
from tinyc.ir.errors import IRFormatError

from .graphgen import random_program

SEED = 20240611
ITERATIONS = 3500
TRACE_EVERY = 10
HANG_S = 5.0  # a hang guard, not a speed test: a decode takes milliseconds of CPU (CPU time: load elsewhere does not count)
PEAK_BYTES = 32 * 2**20

WEIRD = [
    None, True, False, 0, -1, 1, 7, 2**31, 2**63 - 1, -(2**63), 2**64 - 1, 0.5, -0.0, math.nan, math.inf,
    "", "B", "f32", "x" * 300, "%0", "0", b"", b"\x00" * 9, [], {}, [1, 2], ["B", -1], {"rule": "normal"},
    {"dtype": "f32", "shape": [2**31]}, {"dtype": "bool", "shape": [3], "data": b"\x02\x00\x01"},
    msgpack.ExtType(7, b"x"),
]


def _deep(rng: random.Random):
    value: object = rng.choice([[], {}, 0])
    for _ in range(rng.randrange(20, 400)):
        value = [value] if rng.random() < 0.5 else {"k": value}
    return value


def _containers(doc) -> list:
    """Every (container, key) slot in the document tree."""
    slots, stack = [], [doc]
    while stack:
        c = stack.pop()
        keys = list(c) if isinstance(c, dict) else range(len(c))
        for k in keys:
            slots.append((c, k))
            if isinstance(c[k], (dict, list)):
                stack.append(c[k])
    return slots


def _structural(rng: random.Random, blob: bytes) -> bytes:
    doc = msgpack.unpackb(blob, raw=False)
    for _ in range(rng.randint(1, 3)):
        c, k = rng.choice(_containers(doc))
        action = rng.random()
        if action < 0.55:
            c[k] = _deep(rng) if rng.random() < 0.05 else rng.choice(WEIRD)
        elif action < 0.7:
            del c[k]
            break
        elif action < 0.8 and isinstance(c, dict):
            c[rng.choice(["extra", "type", "out", "shape", "x"])] = rng.choice(WEIRD)
        elif action < 0.9 and isinstance(c, list):
            c.append(c[k])  # duplicate an entry, node, dim ...
        elif isinstance(c[k], str) and c[k].isdigit():
            c[k] = str(int(c[k]) + rng.choice([-2, -1, 1, 50]))  # point a reference elsewhere
        elif isinstance(c[k], int) and not isinstance(c[k], bool):
            c[k] = c[k] + rng.choice([-1, 1, 2**32, -(2**31)])
    return msgpack.packb(doc, use_bin_type=True)


def _bytes(rng: random.Random, blob: bytes, other: bytes) -> bytes:
    b = bytearray(blob)
    kind = rng.randrange(7)
    if kind == 0:  # bit flips
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    elif kind == 1:  # insert random bytes
        i = rng.randrange(len(b) + 1)
        b[i:i] = rng.randbytes(rng.randint(1, 16))
    elif kind == 2:  # delete a span
        i = rng.randrange(len(b))
        del b[i : i + rng.randint(1, 32)]
    elif kind == 3:  # truncate
        del b[rng.randrange(len(b)):]
    elif kind == 4:  # splice two files
        return bytes(b[: rng.randrange(len(b))]) + other[rng.randrange(len(other)):]
    elif kind == 5:  # overwrite with a hostile msgpack header: huge array/map/str/bin, ext, nesting
        i = rng.randrange(len(b))
        b[i : i + 5] = rng.choice([b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xdb\x7f\xff\xff\xff",
                                   b"\xc6\xff\xff\xff\xff", b"\xc7\x05\x01", b"\xd4\xff", b"\x91" * 5, b"\xc1"])
    else:  # duplicate a span
        i = rng.randrange(len(b))
        b[i:i] = b[i : i + rng.randint(1, 64)]
    return bytes(b)


def test_only_ir_format_errors_escape():
    rng = random.Random(SEED)
    valid = [encode_program(random_program(seed, steps)) for seed, steps in ((1, 6), (2, 12), (3, 18), (4, 25))]
    outcomes: collections.Counter = collections.Counter()
    for i in range(ITERATIONS):
        blob = rng.choice(valid)
        structural = rng.random() < 0.5
        blob = _structural(rng, blob) if structural else _bytes(rng, blob, rng.choice(valid))
        traced = i % TRACE_EVERY == 0  # tracemalloc slows Python ~10x, so measure a sample
        if traced:
            tracemalloc.start()
        start = time.process_time()
        try:
            program = decode_program(blob)
        except IRFormatError as e:
            assert "internal error" not in e.message, f"iteration {i}: {e}"
            outcomes["refused", structural] += 1
        else:
            outcomes["accepted", structural] += 1
            again = encode_program(program)  # what we accept we can write, and read back the same
            assert encode_program(decode_program(again)) == again
        finally:
            elapsed = time.process_time() - start
            if traced:
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                assert peak < PEAK_BYTES, f"iteration {i}: decode peaked at {peak / 2**20:.1f} MiB"
        assert elapsed < HANG_S, f"iteration {i}: decode took {elapsed:.1f}s"
    # the mutations must actually reach the checks: most are refused, by both kinds of mutation
    assert outcomes["refused", True] > ITERATIONS // 5 and outcomes["refused", False] > ITERATIONS // 5, outcomes


def test_every_prefix_and_single_byte_deletion_is_refused():
    blob = encode_program(random_program(5, 8))
    for end in range(len(blob)):
        try:
            decode_program(blob[:end])
        except IRFormatError as e:
            assert "internal error" not in e.message
        else:
            raise AssertionError(f"a prefix of {end} bytes was accepted")
