"""The operator's view: accounting per agent and principal, token quotas, the kernel.top snapshot, kernel.metrics."""
