"""The storage service: per-space versioned files with atomic writes and quotas (manager.py has the contract).

Modules: paths (what a path may be), fsops (symlink-proof, atomic file operations), versions (a file's versions from
its node's names), tree (walking a space), quota (limits and usage), owners (whose each space is, for the bound on
spaces per principal), errors (the refusals), manager (the API).
"""

from kernel.storage.manager import StorageManager
from kernel.storage.paths import PrefixMatch
from kernel.storage.versions import FileInfo, VersionInfo

__all__ = ["StorageManager", "FileInfo", "VersionInfo", "PrefixMatch"]
