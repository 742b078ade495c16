"""LLM engines behind one interface (core/interface.py): the torch CPU engine (cpu/), the ExLlamaV2 GPU engine (gpu/)
and OpenAI-compatible servers (remote/), obtained through factory.load_engine.

Importing the package changes nothing in the process: the environment an in-process engine wants (OpenMP spinning,
huge pages) is set by the entry points that run one, through process_env.configure_process_env()."""
