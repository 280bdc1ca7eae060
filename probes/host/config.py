"""Settings of the host probe: which parts to read and which mounts and interfaces to keep."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Literal

from pydantic import Field, field_validator

from probes.base import ProbeConfig

HostPart = Literal["cpu", "memory", "swap", "disk", "net", "system", "time"]
ALL_PARTS: tuple[HostPart, ...] = ("cpu", "memory", "swap", "disk", "net", "system", "time")

#: Filesystems that hold no operator data: kernel views, memory-backed and read-only images.
PSEUDO_FSTYPES: tuple[str, ...] = (
    "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs", "devpts", "devtmpfs",
    "efivarfs", "fuse.gvfsd-fuse", "fuse.lxcfs", "fuse.portal", "fusectl", "hugetlbfs", "iso9660", "mqueue",
    "nsfs", "proc", "pstore", "ramfs", "rpc_pipefs", "securityfs", "squashfs", "sysfs", "tmpfs", "tracefs",
)  # fmt: skip


class GlobFilter(ProbeConfig):
    """Names kept: those matching an ``include`` glob and no ``exclude`` glob (case-sensitive)."""

    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()

    @field_validator("include", "exclude")
    @classmethod
    def _no_empty(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if any(not g for g in v):
            raise ValueError("a glob cannot be empty; use '*' to match everything")
        return v

    def matches(self, name: str) -> bool:
        return any(fnmatchcase(name, g) for g in self.include) and not any(fnmatchcase(name, g) for g in self.exclude)


class HostConfig(ProbeConfig):
    include: tuple[HostPart, ...] = Field(ALL_PARTS, min_length=1, description="parts to read")
    per_cpu: bool = Field(False, description="also one host_cpu Sample per logical CPU")
    mounts: GlobFilter = Field(default_factory=GlobFilter, description="mount points to report")
    ignore_fstypes: tuple[str, ...] = Field(PSEUDO_FSTYPES, description="filesystem types never reported")
    interfaces: GlobFilter = Field(default_factory=lambda: GlobFilter(exclude=("lo",)))

    @field_validator("include")
    @classmethod
    def _unique(cls, v: tuple[HostPart, ...]) -> tuple[HostPart, ...]:
        return tuple(dict.fromkeys(v))
