"""CPU time and peak memory of local processes, read from /proc.

CPU time is what the kernel charged a process (utime + stime) plus what it
charged the children it has reaped (cutime + cstime), plus, for a process
tree, the same for every live descendant. The difference of two readings is
then the CPU the tree used in between, even when children came and went:
a backend that exits moves its time into its parent's cutime. PostgreSQL is
one such tree (the postmaster and its backends and workers).

Parsing is kept apart from reading, so it is tested on text.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/<pid>/stat that CPU accounting needs; times in clock ticks."""

    pid: int
    ppid: int
    utime: int
    stime: int
    cutime: int
    cstime: int

    @property
    def own_ticks(self) -> int:
        """CPU of the process itself, without any child."""
        return self.utime + self.stime

    @property
    def with_reaped_ticks(self) -> int:
        """CPU of the process and of the children it has waited for."""
        return self.utime + self.stime + self.cutime + self.cstime


@dataclass(frozen=True)
class CpuRoot:
    """A process to account for; `tree` adds its live descendants and reaped children."""

    pid: int
    tree: bool = True


def parse_stat(text: str) -> ProcStat:
    """A /proc/<pid>/stat line; ValueError when it is not one."""
    # Field 2 (comm) is in parentheses and may itself hold spaces and ')'.
    open_paren, close_paren = text.find("("), text.rfind(")")
    if open_paren < 1 or close_paren < open_paren:
        raise ValueError(f"not a /proc/<pid>/stat line: {text[:80]!r}")
    pid = int(text[:open_paren])
    # rest[0] is field 3 (state); field k is rest[k - 3].
    rest = text[close_paren + 1 :].split()
    if len(rest) < 15:
        raise ValueError(f"/proc/{pid}/stat has too few fields")
    return ProcStat(
        pid=pid,
        ppid=int(rest[1]),
        utime=int(rest[11]),
        stime=int(rest[12]),
        cutime=int(rest[13]),
        cstime=int(rest[14]),
    )


def parse_vmhwm(status: str) -> int | None:
    """Peak resident set size in KiB (VmHWM) from /proc/<pid>/status text; None without it."""
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            parts = line.split()
            # "VmHWM:   123456 kB"
            return int(parts[1]) if len(parts) >= 2 else None
    return None


def descendants(root: int, stats: Mapping[int, ProcStat]) -> list[int]:
    """Every live descendant of `root` in `stats`, nearest first."""
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    found: list[int] = []
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop(0)
        if pid in found or pid == root:
            continue
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_ticks(root: CpuRoot, stats: Mapping[int, ProcStat]) -> int | None:
    """CPU ticks charged to `root` (and its tree, if asked); None when it is not running."""
    stat = stats.get(root.pid)
    if stat is None:
        return None
    if not root.tree:
        return stat.own_ticks
    return stat.with_reaped_ticks + sum(
        stats[pid].with_reaped_ticks for pid in descendants(root.pid, stats)
    )


def read_stats(proc: Path = PROC) -> dict[int, ProcStat]:
    """/proc/<pid>/stat of every process; processes that vanish while read are left out."""
    stats: dict[int, ProcStat] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError):
            stat = parse_stat((entry / "stat").read_text())
            stats[stat.pid] = stat
    return stats


def cpu_seconds(roots: Mapping[str, CpuRoot], proc: Path = PROC) -> dict[str, float | None]:
    """CPU seconds of each named root, from one reading of /proc; None for one not running."""
    stats = read_stats(proc)
    seconds: dict[str, float | None] = {}
    for name, root in roots.items():
        ticks = cpu_ticks(root, stats)
        seconds[name] = None if ticks is None else ticks / CLOCK_TICKS_PER_SECOND
    return seconds


def peak_rss_kib(pid: int, proc: Path = PROC) -> int | None:
    """VmHWM of `pid` in KiB; None when it cannot be read."""
    try:
        return parse_vmhwm((proc / str(pid) / "status").read_text())
    except (OSError, ValueError):
        return None


def tree_peak_rss_kib(root: int, proc: Path = PROC) -> dict[str, int | None]:
    """Peak RSS of a process tree: the root, its largest descendant, their sum and count.

    The sum overstates real use when processes share memory (PostgreSQL's
    shared buffers are counted in every backend that touched them).
    """
    stats = read_stats(proc)
    children = [kib for pid in descendants(root, stats) if (kib := peak_rss_kib(pid, proc))]
    own = peak_rss_kib(root, proc)
    return {
        "root": own,
        "max_child": max(children, default=None),
        "sum": (own or 0) + sum(children) if own is not None else None,
        "processes": 1 + len(children) if own is not None else 0,
    }


def postmaster_pid(data_dir: Path) -> int | None:
    """The postmaster's pid from `data_dir`/postmaster.pid (its first line); None if absent."""
    try:
        first = (data_dir / "postmaster.pid").read_text().splitlines()[0]
        return int(first.strip())
    except (OSError, IndexError, ValueError):
        return None


def delta(
    before: Mapping[str, float | None], after: Mapping[str, float | None]
) -> dict[str, float | None]:
    """after - before per name; None where either reading is missing or the process restarted
    in between (its CPU went backwards)."""
    result: dict[str, float | None] = {}
    for name in _names(before, after):
        start, end = before.get(name), after.get(name)
        result[name] = None if start is None or end is None or end < start else end - start
    return result


def _names(*mappings: Mapping[str, object]) -> Iterable[str]:
    seen: dict[str, None] = {}
    for mapping in mappings:
        seen.update(dict.fromkeys(mapping))
    return list(seen)
