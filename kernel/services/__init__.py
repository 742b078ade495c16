"""The kernel's services beside the LLM loop: memory (kernel/memory/), files (kernel/storage/) and tools
(kernel/tools/), each run by a worker thread of its own (worker.py), reached through a handler per syscall
(syscalls.py: mem.*, fs.*, access.share; tools.py: tool.*) that the daemon's dispatcher calls on the kernel loop.
Which worker runs which syscall is the syscall table's (ipc/syscalls.py). Nothing here imports kernel.daemon: replies
go through kernel/replies.py, and authorization decisions through kernel/access/gate.py."""
