"""The operator's terminal views of a running kernel: `aios top` (kernel/console/top.py)."""
