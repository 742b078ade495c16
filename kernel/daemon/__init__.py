"""aiosd, the kernel process: an I/O thread around one kernel loop that owns the engine.

io_thread.py (ZeroMQ ROUTER, decode) → inbox → loop.py (dispatch.py by syscall type; llm.py schedules LLM calls onto
the engine through the context manager) → outbox → io_thread.py. agents.py and requests.py are the kernel's tables.
"""
