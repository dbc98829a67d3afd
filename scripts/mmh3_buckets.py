#!/usr/bin/env python3
"""Regenerate tests/data/mmh3_buckets.tsv, the fixture that pins graygate's bucket
formula to an independent MurmurHash3 implementation (Python's `mmh3`).

    bucket = mmh3.hash(salt + key, 0, signed=False) % 1000   (UTF-8 bytes)

The ids are deterministic (fixed seed), so rerunning this script reproduces the
committed file byte for byte:

    pip install mmh3
    python3 scripts/mmh3_buckets.py            # writes tests/data/mmh3_buckets.tsv

The Rust test `routing::tests::bucket_agrees_with_python_mmh3_fixture` reads it.
"""

import os
import random
import sys
import uuid

import mmh3

SEED = 20240601
ROWS = 10_000
# Three salts, including the empty one (the spec's default).
SALTS = ["", "canary-2024", "灰度-β"]
UNICODE_STEMS = ["用户", "josé", "Ünïcødé", "пользователь", "🚀", "ユーザー", "مستخدم", "ß"]


def ids(rng):
    out = []
    # Numeric ids: the spec's example, small sequential ones and large random ones.
    out.append("42")
    out.extend(str(i) for i in range(1, 2000))
    out.extend(str(rng.randrange(10**6, 10**12)) for _ in range(2000))
    # UUIDs drawn from the seeded generator (not uuid4(), which is not reproducible).
    out.extend(str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(4000))
    # Unicode ids of assorted lengths (1..4 UTF-8 bytes per character).
    while len(out) < ROWS:
        stem = rng.choice(UNICODE_STEMS)
        out.append(f"{stem}-{rng.randrange(10**6)}")
    assert len(out) == ROWS
    for key in out:
        # Keys travel in a header in the Rust test and are columns here.
        assert key and "\t" not in key and "\n" not in key and key == key.strip()
    return out


def main():
    rng = random.Random(SEED)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(root, "tests", "data", "mmh3_buckets.tsv")
    if len(sys.argv) > 1:
        path = sys.argv[1]
    lines = ["salt\tkey\tbucket"]
    for i, key in enumerate(ids(rng)):
        salt = SALTS[i % len(SALTS)]
        bucket = mmh3.hash((salt + key).encode("utf-8"), 0, signed=False) % 1000
        lines.append(f"{salt}\t{key}\t{bucket}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {len(lines) - 1} rows to {path}")


if __name__ == "__main__":
    main()
