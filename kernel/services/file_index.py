"""The file index: what makes files searchable (fs.search) through the memory service.

Each text file written is indexed, after its write returned, in the memory space "<space>#files" (index_of) under its
path: the first MAX_MEMORY_CHARS characters, replacing the entries of its earlier versions; a delete drops them, a
rollback indexes the version it restored. Indexing is follow-up work queued on the memory worker in the writer's own
lane (so a writer's backlog delays only itself); a saturated memory service skips it (the file is stored, just not
indexed now). Runs on the storage worker's thread (after) and the memory worker's (reindex); holds no state of its
own beyond the memory worker it queues on.
"""

from __future__ import annotations

from ipc.errors import ProtocolError
from ipc.service_messages import MAX_MEMORY_CHARS, FsVersion
from kernel.services.worker import Job, ServiceWorker

FILE_INDEX_SUFFIX = "#files"
MAX_INDEXED = 100_000  # entries scanned when a file's old index entries are replaced


def index_of(space: str) -> str:
    """The memory space holding a file space's index."""
    return space + FILE_INDEX_SUFFIX


class FileIndex:
    def __init__(self, memory: ServiceWorker | None):
        self.memory = memory  # None: no memory service, nothing is indexed

    def rolled_back(self, owner: bytes, storage, space: str, path: str, version: int) -> FsVersion:
        """Roll the file back (a new version with an old one's content) and index what it now holds."""
        new_version = storage.rollback(space, path, version)
        data, _ = storage.read(space, path, new_version)
        return self.after(owner, space, path, new_version, data)

    def after(self, owner: bytes, space: str, path: str, version, data: bytes | None) -> FsVersion | None:
        """After a write (or a delete: data None) returned, replace the path's entries in the file index; the write's
        reply (its version), None for a delete."""
        text = None
        if data is not None:
            try:
                text = data.decode("utf-8")[:MAX_MEMORY_CHARS]
            except UnicodeDecodeError:
                text = None  # not text: nothing to search, but its old index entries still go
        if self.memory is not None:
            try:
                self.memory.submit(
                    Job(None, None, lambda m: reindex(m, index_of(space), path, version, text), owner=owner)
                )
            except ProtocolError:
                pass  # the memory service is saturated: the file is stored, just not indexed now
        return FsVersion(version=version) if version is not None else None


def reindex(memory, index_space: str, path: str, version, text: str | None) -> None:
    stale = [r.id for r in memory.list(index_space, 0, MAX_INDEXED, filter={"path": path})]
    for record_id in stale:
        memory.delete(index_space, record_id)
    if text and text.strip():
        memory.add(index_space, [text], [{"path": path, "version": version}])
