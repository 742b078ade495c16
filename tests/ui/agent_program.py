"""An agent program for the dashboard tests, run as its own process: it says hello, prints "agent <id>", then does
what its arguments say and prints the outcome.

    agent_program.py NAME generate N      one raw generation of N tokens (ignore_eos), then "done"
    agent_program.py NAME tool EXPR       one call of the calculate tool: "result <text>" or "error <code>"
    agent_program.py NAME idle            stays connected until its stdin closes
The kernel's address comes from AIOS_ADDRESS, as `aios run` gives it.
"""

import sys

from sdk import KernelError, connect


def main(name: str, mode: str, argument: str = "") -> None:
    with connect(name=name, timeout=900) as kernel:
        print(f"agent {kernel.agent_id}", flush=True)
        if mode == "generate":
            kernel.generate("Once upon a time", max_tokens=int(argument), ignore_eos=True, temperature=0)
            print("done", flush=True)
        elif mode == "tool":
            try:
                print(f"result {kernel.tools.call('calculate', {'expression': argument}).text.strip()}", flush=True)
            except KernelError as error:
                print(f"error {error.code}", flush=True)
        else:
            sys.stdin.read()


if __name__ == "__main__":
    main(*sys.argv[1:])
