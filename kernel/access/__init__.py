"""Access control: who a caller is (a principal the kernel made from its connection), what it may do (capabilities),
and the audit log of privileged calls and denials.

Which capability each syscall needs is the syscall table's (ipc/syscalls.py); the kernel loop's dispatcher
(kernel/daemon/dispatch.py) checks it once per call, before any handler runs. Rights that depend on a call's
arguments (whose agent, whose space, which tool, which capabilities granted) are decided by the handler that reads
them. Every decision of either kind, and its audit record, goes through one helper, gate.py."""
