"""The kernel's services beside the LLM loop: memory (kernel/memory/) and files (kernel/storage/), each run by a worker
thread of its own (worker.py) and reached through syscalls routed by kernel/services/syscalls.py."""
