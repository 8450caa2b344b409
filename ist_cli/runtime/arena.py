"""One shared-memory segment holding every array a run shares between processes.

A single segment (rather than one per array) means one name to unlink, so cleanup after
Ctrl-C or a crash is one call, and a leak is easy to spot in /dev/shm (prefix ``ist_``).
Workers attach by the picklable ``ArenaLayout``; arrays are numpy views, never copies.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np

from ist_cli.errors import UserError
from ist_cli.runtime.budget import check_space, free_space, human_bytes
from ist_cli.runtime.processes import process_alive

SEGMENT_PREFIX = "ist_"
SHM_DIR = "/dev/shm"
_ALIGN = 64  # cache-line alignment keeps workers' regions from sharing lines at their edges


@dataclass(frozen=True)
class ArrayField:
    name: str
    shape: tuple[int, ...]
    dtype: str
    offset: int

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class ArenaLayout:
    """Where each array lives inside the segment; small and picklable, sent to workers."""

    segment: str
    size: int
    fields: tuple[ArrayField, ...]


ArraySpec = Mapping[str, tuple[tuple[int, ...], str]]


def plan_layout(specs: ArraySpec, segment: str) -> ArenaLayout:
    fields = []
    offset = 0
    for name, (shape, dtype) in specs.items():
        shape = tuple(int(s) for s in shape)
        field = ArrayField(name, shape, np.dtype(dtype).str, offset)
        fields.append(field)
        offset += -(-max(field.nbytes, 1) // _ALIGN) * _ALIGN
    return ArenaLayout(segment, max(offset, _ALIGN), tuple(fields))


class Arena:
    """Named numpy arrays over one shared-memory segment.

    The coordinator ``create``s (and alone ``unlink``s) it; workers ``attach``.
    """

    def __init__(self, shm: shared_memory.SharedMemory | None, layout: ArenaLayout, owner: bool) -> None:
        self._shm = shm
        self.layout = layout
        self.owner = owner
        self.arrays: dict[str, np.ndarray] = {
            f.name: (np.zeros(f.shape, dtype=np.dtype(f.dtype)) if shm is None else
                     np.ndarray(f.shape, dtype=np.dtype(f.dtype), buffer=shm.buf, offset=f.offset))
            for f in layout.fields
        }

    @classmethod
    def create(cls, specs: ArraySpec, tag: str = "", shared: bool = True) -> Arena:
        """A new, zeroed segment whose every page is already reserved.

        ``ftruncate`` alone makes a sparse segment: the first write to a page that
        ``/dev/shm`` has no room for kills the process with SIGBUS. Reserving the whole
        size up front (``posix_fallocate``) turns a shortage into an error here.
        Not ``shared`` (no other process will attach: MPI ranks): no segment, the arrays are
        this process's own zeroed memory, whose pages cost nothing until written (the rank
        reserves only what it uses; the memory check before the run sizes it per process).
        """
        if not shared:
            return cls(None, plan_layout(specs, ""), owner=False)
        name = f"{SEGMENT_PREFIX}{tag + '_' if tag else ''}{os.getpid()}_{secrets.token_hex(4)}"
        layout = plan_layout(specs, name)
        if not os.path.isdir(SHM_DIR):  # no /dev/shm to reserve in (not Linux): plain POSIX segment
            shm = shared_memory.SharedMemory(name=name, create=True, size=layout.size)
            arena = cls(shm, layout, owner=True)
            for array in arena.arrays.values():
                array.fill(0)
            return arena
        check_space(SHM_DIR, layout.size, "the run's shared-memory arena")
        _reserve_segment(os.path.join(SHM_DIR, name), layout.size)
        try:
            shm = shared_memory.SharedMemory(name=name, create=False)
        except BaseException:
            os.unlink(os.path.join(SHM_DIR, name))
            raise
        return cls(shm, layout, owner=True)  # reserved tmpfs pages read as zeros

    @classmethod
    def attach(cls, layout: ArenaLayout) -> Arena:
        # Spawned workers share the coordinator's resource tracker, so the registration
        # that attaching makes (before Python 3.13) is the same entry the coordinator
        # made: it must not be unregistered here, or a killed coordinator would leak.
        shm = shared_memory.SharedMemory(name=layout.segment, create=False)
        return cls(shm, layout, owner=False)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    @property
    def name(self) -> str:
        return self.layout.segment

    def close(self) -> None:
        """Drop the views and the mapping; the owner also unlinks the segment."""
        self.arrays = {}
        if self._shm is None:
            return
        try:
            self._shm.close()
        except BufferError:  # a view still alive somewhere; the unlink below still frees the name
            pass
        if self.owner:
            try:
                self._shm.unlink()
            except FileNotFoundError:
                pass
            self.owner = False

    def __enter__(self) -> Arena:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reserve_segment(path: str, size: int) -> None:
    """Create the segment file ``path`` exclusively with ``size`` bytes allocated, or raise
    a one-line ``UserError`` (and leave nothing) when ``/dev/shm`` cannot hold it."""
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EFBIG, errno.ENOMEM):
                raise
            free = free_space(SHM_DIR)
            shown = "unknown" if free is None else human_bytes(free)
            raise UserError(f"the run's shared-memory arena needs {human_bytes(size)} in {SHM_DIR}; "
                            f"only {shown} could be reserved ({exc.strerror})") from None
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)


def segment_owner(name: str) -> int | None:
    """The coordinator pid embedded in an arena name (ist_[tag_]<pid>_<random>), if any."""
    if not name.startswith(SEGMENT_PREFIX):
        return None
    parts = name.split("_")
    try:
        return int(parts[-2])
    except (IndexError, ValueError):
        return None


def reclaim_orphaned_segments(directory: str = SHM_DIR) -> list[str]:
    """Unlink arenas whose coordinator is dead; return their names.

    A coordinator killed together with its resource tracker (SIGKILL of a whole process
    group, e.g. a killed sweep) cannot unlink its segment. Every new run calls this, so
    such a leak lasts only until the next run on the machine.
    """
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    reclaimed = []
    for name in names:
        pid = segment_owner(name)
        if pid is None or pid == os.getpid() or process_alive(pid):
            continue
        try:
            os.unlink(os.path.join(directory, name))
            reclaimed.append(name)
        except OSError:
            pass
    return reclaimed
