"""Access control: who a caller is (a principal the kernel made from its connection), what it may do (capabilities),
and the audit log of privileged calls and denials. Checked once, at the syscall boundary (kernel/daemon/dispatch.py)."""
