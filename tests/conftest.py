"""The whole suite's setup: the process environment aiosd's entry point sets for an engine, set here before any test
module imports torch, so in-process engines and the aiosd children the tests start (they inherit it) run as aiosd
does."""

from kernel.engine.process_env import configure_process_env

configure_process_env()
