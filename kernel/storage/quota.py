"""Per-space limits and usage, and the check that refuses a write before anything of it reaches the disk.

Contract:
- `Limits` are the manager's settings: versions kept per file, bytes per space (the sum of every kept version of
  every file: old versions take room too), files per space (paths with at least one version), bytes per file.
- `Usage` is a space's current use. The manager computes it by scanning the space the first time it touches it in a
  run (so it is right after a crash, whatever the last run did) and keeps it in step with each change after that.
- Directories are charged: a directory below the space costs `dir_bytes` of quota_bytes and one inode of max_files
  unless it is a file's own node with no subdirectory (then it *is* that file, counted once as the file). So a flat
  space is charged its file bytes only, while "a/b/c/f" also pays for "a", "a/b" and "a/b/c", and a file "a" that
  gains "a/x" pays for "a" as a directory too. `Usage.dirs` counts the charged directories; `Usage.bytes` is the
  bytes of kept versions (what usage() reports as "bytes"); `charged_bytes` is bytes + dirs x dir_bytes, and
  files + dirs is the inode count.
- `check_write` raises TOO_LARGE or the quota error, with the numbers, when a write of `size` bytes that adds
  `new_dirs` charged directories (negative when it turns an empty directory into a file) would pass a limit once the
  versions it pushes out (`freed` bytes) are gone, and does nothing otherwise. Deletes only ever lower the charge.
- Paths are at most `max_depth` components deep (BAD_REQUEST past it), so one write adds at most max_depth charged
  directories, checked before any is made.
- `max_spaces` bounds the file spaces per principal (owners.py says whose a space is: ephemeral ones count with
  their principal's while they exist): the first write of a space not on disk yet is refused with the quota error
  when its principal already holds max_spaces. It is counted from disk (each space directory holds its id), so it
  holds across restarts.

The disk a space can hold is bounded: charged_bytes <= quota_bytes and files + dirs <= max_files, so besides the
quota the disk holds at most max_files file nodes (one directory each) and keep_versions x max_files version inodes:
about quota_bytes + max_files x (keep_versions + 1) x 4 KiB (block rounding), plus 8 KiB for the space's directory
and its marker. A principal's disk is bounded by max_spaces times that: with the kernel's defaults
(kernel/services/factory.py: quota_bytes 256 MiB, max_files 10,000, keep_versions 10; max_spaces 64) at most
64 x (256 MiB + 10,000 x 11 x 4 KiB + 8 KiB) = 64 x ~686 MiB, about 43 GiB. Spaces made by a build before markers
count only once a write names them (owners.py), so an upgraded store may hold more until those are dropped.
"""

from __future__ import annotations

import dataclasses

from kernel.storage.errors import bad_request, over_quota, too_large

DIR_BYTES = 4096  # what one directory takes on ext4/xfs: its block
MAX_DEPTH = 16  # components in a path
MAX_SPACES = 64  # file spaces per principal: the 64 agents the memory bound holds (kernel/memory)


@dataclasses.dataclass(frozen=True)
class Limits:
    keep_versions: int
    quota_bytes: int
    max_files: int
    max_file_bytes: int
    dir_bytes: int = DIR_BYTES
    max_depth: int = MAX_DEPTH
    max_spaces: int = MAX_SPACES

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            least = 0 if field.name == "dir_bytes" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{field.name} must be an int >= {least}, not {value!r}")


@dataclasses.dataclass
class Usage:
    bytes: int = 0
    files: int = 0
    versions: int = 0
    dirs: int = 0  # charged directories (see the contract)

    def charged_bytes(self, limits: Limits) -> int:
        return self.bytes + self.dirs * limits.dir_bytes

    def as_dict(self, limits: Limits) -> dict:
        return {
            "bytes": self.bytes,
            "files": self.files,
            "versions": self.versions,
            "quota_bytes": limits.quota_bytes,
            "max_files": limits.max_files,
            "max_file_bytes": limits.max_file_bytes,
            "keep_versions": limits.keep_versions,
        }


def check_size(size: int, limits: Limits) -> None:
    if size > limits.max_file_bytes:
        raise too_large(size, limits.max_file_bytes)


def check_version(version: object) -> int:
    """A version argument as an int >= 1; BAD_REQUEST for anything else (bool included)."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise bad_request(f"version must be an int >= 1, not {version!r}")
    return version


def check_depth(parts: list[str], path: str, limits: Limits) -> None:
    if len(parts) > limits.max_depth:
        raise bad_request(f"path {path[:60]!r} is {len(parts)} components deep; the limit is {limits.max_depth}")


def check_write(usage: Usage, limits: Limits, *, size: int, freed: int, new_file: bool, new_dirs: int = 0) -> None:
    """Refuse (before writing) a write of `size` bytes that frees `freed` bytes of old versions and adds `new_dirs`
    charged directories; see the contract."""
    check_size(size, limits)
    inodes = usage.files + usage.dirs + (1 if new_file else 0) + new_dirs
    if (new_file or new_dirs > 0) and inodes > limits.max_files:
        raise over_quota(
            f"the space already holds {usage.files} files and {usage.dirs} directories; this write "
            f"needs {inodes} and the limit is {limits.max_files} (files and directories)"
        )
    data_after = usage.bytes - freed + size
    after = data_after + (usage.dirs + new_dirs) * limits.dir_bytes
    if after > limits.quota_bytes:
        raise over_quota(
            f"writing {size} bytes would use {data_after} bytes of files"
            + (
                f" and {usage.dirs + new_dirs} directories ({limits.dir_bytes} bytes each), {after} bytes in all,"
                if usage.dirs + new_dirs
                else ""
            )
            + f" of the space's quota of {limits.quota_bytes} (kept versions count; delete files, "
            f"directories or old versions to free room)"
        )
