"""aiosd, the kernel process: an I/O thread around one kernel loop that owns the engine.

io_thread.py (ZeroMQ ROUTER, decode) → inbox (the LLM family through preprocess.py first) → loop.py (dispatch.py: the
syscall table's door, then a handler per syscall; llm.py schedules LLM calls onto the engine through the context
manager) → outbox (kernel/replies.py) → io_thread.py. agents.py and requests.py are the kernel's tables. Which syscalls
exist, who may make them and which thread runs them is the syscall table's (ipc/syscalls.py); the services' handlers
(kernel/services/) are plugged into the dispatcher, and import nothing from here.
"""
