"""Is an LMDB data.mdb whole? Checked on opening, before any read through the map.

LMDB maps data.mdb, and its first read of a page past the end of a file cut short (a copy
stopped part way) kills the process with SIGBUS, without a word. A file shorter than its
pages is not always damage, though: pages a transaction allocated and freed again are
never written (a `store delete` leaves some). So a short file is refused only when a page
past its end is not on LMDB's free list, which is read here with pread, never the map.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import lmdb
import numpy as np

from arm_jax.store.base import CorruptValue

# LMDB's file layout (0.9, 64-bit), read with pread by `check_data_file` to walk the free
# list without touching the map: a page is a 16-byte header (pgno u64, pad u16, flags u16,
# lower u16, upper u16) and u16 offsets of its nodes; a node is lo u16, hi u16, flags u16,
# key size u16, key, data. A meta page holds the free list's tree (mm_dbs[0]) and txnid.
_PAGE_HEADER = 16
_P_BRANCH, _P_LEAF = 0x01, 0x02
_F_BIGDATA = 0x01                   # a leaf node whose data lies on overflow pages
_META_FREE_DEPTH, _META_FREE_ROOT, _META_LAST_PGNO, _META_TXNID = 46, 80, 136, 144
_NO_PAGE = 2**64 - 1                # an empty tree's root


class _Unverifiable(Exception):
    """The free list cannot be read whole: a page of it is past the end of the file, or
    is not a free-list page."""


def check_data_file(env: lmdb.Environment, path: Path, url: str) -> None:
    """CorruptValue naming data.mdb, the size its pages need and its size, unless the file
    holds every page a read can touch. Runs right after lmdb.open, which reads only the
    two meta pages: a read of a page past the end of the mapped file is SIGBUS, which
    kills the process without a word. A shorter file is not always damage: pages a
    transaction allocated and freed again are never written (a `store delete` leaves
    some), so it is refused only when a page past its end is not on the free list."""
    need = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    data = path / "data.mdb"
    have = data.stat().st_size
    if have >= need or _only_free_pages_past_end(env, data):
        return
    raise CorruptValue(f"{url}: {data} is truncated: {have} bytes, its pages need {need} "
                       "(a copy cut short?); copy the store again, or load it from a "
                       "backup")


def _only_free_pages_past_end(env: lmdb.Environment, data: Path) -> bool:
    """Whether every page from the end of `data` to the last page of the current snapshot
    is on its free list (read with pread, never through the map)."""
    psize = env.stat()["psize"]
    with env.begin() as txn, data.open("rb") as f:   # pinned: no writer reuses the pages
        fd, txnid = f.fileno(), txn.id()
        metas = [os.pread(fd, psize, i * psize) for i in range(2)]
        meta = next((m for m in metas if _u64(m, _META_TXNID) == txnid), None)
        pages = os.fstat(fd).st_size // psize     # whole pages: a partial one is cut
        if meta is None:
            return False
        try:
            free = _free_pages(fd, psize, pages, _u64(meta, _META_FREE_ROOT),
                               struct.unpack_from("=H", meta, _META_FREE_DEPTH)[0], set())
        except (_Unverifiable, struct.error, ValueError, IndexError):
            return False
    past_end = np.arange(pages, _u64(meta, _META_LAST_PGNO) + 1, dtype=np.uint64)
    return bool(np.isin(past_end, free).all())


def _u64(buf: bytes, offset: int) -> int:
    return struct.unpack_from("=Q", buf, offset)[0]


def _read_pages(fd: int, psize: int, pages: int, pgno: int, n: int) -> bytes:
    """Pages pgno..pgno+n-1 of the file; _Unverifiable if any lies past its end."""
    if pgno + n > pages:
        raise _Unverifiable(f"page {pgno + n - 1} is past the end")
    return os.pread(fd, n * psize, pgno * psize)


def _free_pages(fd: int, psize: int, pages: int, root: int, depth: int,
                seen: set[int]) -> np.ndarray:
    """The page numbers on the free list under `root` (a tree `depth` levels deep): its
    leaves map a txnid to [count, pgno...] (u64), inline or on overflow pages."""
    if root == _NO_PAGE:
        return np.zeros(0, np.uint64)
    if depth < 1 or root in seen:
        raise _Unverifiable(f"page {root}: a cycle, or deeper than the tree")
    seen.add(root)
    page = _read_pages(fd, psize, pages, root, 1)
    flags, lower = struct.unpack_from("=HH", page, 10)
    if not flags & (_P_BRANCH | _P_LEAF):
        raise _Unverifiable(f"page {root}: not a tree page (flags {flags:#x})")
    found = [np.zeros(0, np.uint64)]
    for i in range((lower - _PAGE_HEADER) // 2):
        node = struct.unpack_from("=H", page, _PAGE_HEADER + 2 * i)[0]
        lo, hi, node_flags, key_size = struct.unpack_from("=HHHH", page, node)
        if flags & _P_BRANCH:
            child = lo | hi << 16 | node_flags << 32
            found.append(_free_pages(fd, psize, pages, child, depth - 1, seen))
            continue
        size, start = lo | hi << 16, node + 8 + key_size
        if node_flags & _F_BIGDATA:
            n = -(-(_PAGE_HEADER + size) // psize)
            value = _read_pages(fd, psize, pages, _u64(page, start), n)[_PAGE_HEADER:]
        else:
            value = page[start:]
        ids = np.frombuffer(value[:size], np.uint64)
        found.append(ids[1:1 + int(ids[0])])
    return np.concatenate(found)
