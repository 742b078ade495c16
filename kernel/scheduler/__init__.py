"""Scheduling policies: pure functions of the kernel's request table and the engine's capacity (see base.py)."""
