"""Per-space limits and usage, and the check that refuses a write before anything of it reaches the disk.

Contract:
- `Limits` are the manager's settings: versions kept per file, bytes per space (the sum of every kept version of
  every file: old versions take room too), files per space (paths with at least one version), bytes per file.
- `Usage` is a space's current use. The manager computes it by scanning the space the first time it touches it in a
  run (so it is right after a crash, whatever the last run did) and keeps it in step with each change after that.
- `check_write` raises TOO_LARGE or the quota error, with the numbers, when a write of `size` bytes would pass a
  limit once the versions it pushes out (`freed` bytes) are gone, and does nothing otherwise. Directories are not
  counted: each file has at most MAX_PATH_BYTES / 2 of them, so max_files bounds them too.
"""
from __future__ import annotations

import dataclasses

from kernel.storage.errors import bad_request, over_quota, too_large


@dataclasses.dataclass(frozen=True)
class Limits:
    keep_versions: int
    quota_bytes: int
    max_files: int
    max_file_bytes: int

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{field.name} must be a positive int, not {value!r}")


@dataclasses.dataclass
class Usage:
    bytes: int = 0
    files: int = 0
    versions: int = 0

    def as_dict(self, limits: Limits) -> dict:
        return {"bytes": self.bytes, "files": self.files, "versions": self.versions,
                "quota_bytes": limits.quota_bytes, "max_files": limits.max_files,
                "max_file_bytes": limits.max_file_bytes, "keep_versions": limits.keep_versions}


def check_size(size: int, limits: Limits) -> None:
    if size > limits.max_file_bytes:
        raise too_large(size, limits.max_file_bytes)


def check_version(version: object) -> int:
    """A version argument as an int >= 1; BAD_REQUEST for anything else (bool included)."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise bad_request(f"version must be an int >= 1, not {version!r}")
    return version


def check_write(usage: Usage, limits: Limits, *, size: int, freed: int, new_file: bool) -> None:
    """Refuse (before writing) a write of `size` bytes that frees `freed` bytes of old versions; see the contract."""
    check_size(size, limits)
    if new_file and usage.files + 1 > limits.max_files:
        raise over_quota(f"the space already holds {usage.files} files; the limit is {limits.max_files}")
    after = usage.bytes - freed + size
    if after > limits.quota_bytes:
        raise over_quota(f"writing {size} bytes would use {after} bytes of the space's quota of "
                         f"{limits.quota_bytes} (kept versions count; delete files or old versions to free room)")
