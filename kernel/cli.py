"""aios: the command line for a running kernel — run agents as processes, list, kill and renice them, read stats.

The CLI is the operator's: it presents the admin token the kernel left in its private runtime directory, so ps shows
every agent and kill/renice act on any. `aios run --grant CAP` hands the agent it starts a grant token instead (and
never the admin token).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

from ipc import runtime_dir
from ipc.address import ADDRESS_ENV, admin_token_path, check_address, default_address
from ipc.curve import CLIENT_KEY_ENV, SERVER_KEY_ENV, KeyStore
from kernel.access.capabilities import Capability
from sdk import KernelError, connect
from sdk.client import TOKEN_ENV


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # the bench suite, a program of its own with its own options: run, never imported
        return subprocess.call([sys.executable, "-m", "bench", *argv[1:]])
    args = _parser().parse_args(argv)
    try:
        args.address = check_address(args.address or default_address())
        return args.command(args)
    except KernelError as error:
        print(f"aios: {error}", file=sys.stderr)
        return 1
    except ValueError as error:
        print(f"aios: {error}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aios", description=__doc__)
    parser.add_argument("--address", help=f"kernel address (default: ${ADDRESS_ENV}, else the local kernel)")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="run an agent program as its own process, wired to the kernel")
    run.add_argument(
        "--grant",
        action="append",
        default=[],
        metavar="CAP",
        help="a capability for the agent, repeatable: " + ", ".join(c.value for c in Capability) + ", tool:NAME",
    )
    run.add_argument("agent", help="the agent's Python file")
    run.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the agent")
    run.set_defaults(command=_run)
    commands.add_parser("ps", help="list agents and their requests").set_defaults(command=_ps)
    kill = commands.add_parser("kill", help="kill an agent: abort its requests, free its KV")
    kill.add_argument("agent_id")
    kill.set_defaults(command=_kill)
    renice = commands.add_parser("renice", help="set an agent's priority (higher runs first)")
    renice.add_argument("agent_id")
    renice.add_argument("priority", type=int)
    renice.set_defaults(command=_renice)
    commands.add_parser("stats", help="engine capacity, scheduler, counts, context manager").set_defaults(
        command=_stats
    )
    top = commands.add_parser("top", help="a live view of agents, requests, queue, KV, tools, approvals and rates")
    top.add_argument("--interval", type=float, default=1.0, metavar="SECONDS", help="refresh every SECONDS (1)")
    top.add_argument("--once", action="store_true", help="print one frame and exit")
    top.add_argument("--rows", type=int, default=20, help="rows per table (20)")
    top.add_argument("--width", type=int, default=None, help="columns (default: the terminal's; 160 when piped)")
    top.set_defaults(command=_top)
    commands.add_parser("bench", help="run the benchmark suite (python -m bench --help)")
    _add_keys_parser(commands)
    _add_gateway_parser(commands)
    mem = commands.add_parser("mem", help="an agent's memory, as the operator").add_subparsers(
        required=True, metavar="ACTION"
    )
    search = mem.add_parser("search", help="memories of AGENT most like QUERY")
    search.add_argument("agent", help='an agent name (of this user) or a space "<principal>/<name>"')
    search.add_argument("query")
    search.add_argument("-k", type=int, default=5)
    search.set_defaults(command=_mem_search)
    fs = commands.add_parser("fs", help="an agent's files, as the operator").add_subparsers(
        required=True, metavar="ACTION"
    )
    ls = fs.add_parser("ls", help="AGENT's files (latest versions)")
    ls.add_argument("agent", help='an agent name (of this user) or a space "<principal>/<name>"')
    ls.add_argument("prefix", nargs="?", default="")
    ls.set_defaults(command=_fs_ls)
    tools = commands.add_parser("tools", help="the kernel's tools: list them, or call one for testing")
    tools.add_argument("name", nargs="?", help="a tool to call")
    tools.add_argument("arguments", nargs="?", default="{}", help="its arguments as a JSON object")
    tools.set_defaults(command=_tools)
    commands.add_parser("approvals", help="tool calls waiting for the operator").set_defaults(command=_approvals)
    for verb in ("approve", "deny"):
        decide = commands.add_parser(verb, help=f"{verb} a held call of an irreversible tool")
        decide.add_argument("approval_id")
        decide.set_defaults(command=_decide, allow=verb == "approve")
    return parser


def _run(args) -> int:
    if not os.path.isfile(args.agent):
        raise ValueError(f"no agent file {args.agent!r}")
    env = {key: value for key, value in os.environ.items() if key != TOKEN_ENV}  # never pass a token on unasked
    if args.grant:
        with _operator(args, "aios run") as kernel:
            env[TOKEN_ENV] = kernel.grant(args.grant)
    child = subprocess.Popen([sys.executable, args.agent, *args.args], env={**env, ADDRESS_ENV: args.address})
    for signum in (signal.SIGINT, signal.SIGTERM):  # the agent decides how to stop; we wait for it
        signal.signal(signum, lambda number, _frame: child.send_signal(number))
    return child.wait()


def _operator(args, name: str):
    """A connection holding the operator's admin token when this user can read it (else as a plain agent)."""
    try:
        token = runtime_dir.read_secret(admin_token_path(args.address)).decode()
    except FileNotFoundError:
        token = None
    except OSError as error:  # unsafe (not ours, readable by others): refuse to use it, say why
        print(f"aios: not using the admin token: {error}", file=sys.stderr)
        token = None
    return connect(args.address, name=name, token=token)


def _space(agent: str) -> str:
    return agent if "/" in agent else f"uid:{os.getuid()}/{agent}"


def _mem_search(args) -> int:
    with _operator(args, "aios mem") as kernel:
        hits = kernel.memory.search(args.query, k=args.k, space=_space(args.agent))
    for hit in hits:
        print(f"{hit.score:6.3f}  {hit.id}  {hit.text[:100]!r}  {hit.metadata or ''}")
    return 0


def _fs_ls(args) -> int:
    with _operator(args, "aios fs") as kernel:
        files = kernel.fs.list(args.prefix, space=_space(args.agent))
    for info in files:
        print(
            f"{info.size:>10}  v{info.version:<5} {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(info.modified))}"
            f"  {info.path}"
        )
    return 0


def _tools(args) -> int:
    with _operator(args, "aios tools") as kernel:
        if args.name is None:
            for tool in kernel.tools.list():
                flag = " (irreversible: needs approval)" if tool.irreversible else ""
                print(f"{tool.name:<20} {tool.description.splitlines()[0] if tool.description else ''}{flag}")
                print(f"{'':<20} {json.dumps(tool.input_schema.get('properties', {}))}")
            return 0
        try:
            arguments = json.loads(args.arguments)
        except ValueError as error:
            raise ValueError(f"arguments must be a JSON object: {error}") from None
        output = kernel.tools.call(args.name, arguments)
    print(output.text + ("\n[truncated]" if output.truncated else ""))
    return 1 if output.is_error else 0


def _approvals(args) -> int:
    with _operator(args, "aios approvals") as kernel:
        for held in kernel.tools.pending():
            print(
                f"{held.approval_id:<12} {held.agent_id:<6} {held.agent_name[:16]:<17} {held.tool:<16} "
                f"{held.waiting_s:>6.0f}s  {held.arguments}"
            )
    return 0


def _decide(args) -> int:
    with _operator(args, "aios approve") as kernel:
        kernel.tools.approve(args.approval_id, allow=args.allow)
    return 0


def _ps(args) -> int:
    with _operator(args, "aios ps") as kernel:
        agents = kernel.ps()
    print(
        f"{'AGENT':<8}{'NAME':<20}{'PID':>8}{'PRIO':>6}{'SERVED':>9}  REQUESTS (id:state prio=P tokens=prompt+output)"
    )
    for agent in agents:
        requests = (
            " ".join(
                f"{r.request_id}:{r.state} prio={r.priority} tokens={r.prompt_tokens}+{r.output_tokens}"
                for r in agent.requests
            )
            or "-"
        )
        print(
            f"{agent.agent_id:<8}{agent.name[:19]:<20}{agent.pid or '-':>8}{agent.priority:>6}"
            f"{agent.service_tokens:>9}  {requests}"
        )
    return 0


def _top(args) -> int:
    from rich.console import Console

    from kernel.console.top import run

    if args.rows < 1:
        raise ValueError(f"--rows must be at least 1, got {args.rows}")
    console = Console(width=args.width or (None if sys.stdout.isatty() else 160))
    with _operator(args, "aios top") as kernel:
        return run(kernel, args.interval, args.once, console, args.rows)


def _kill(args) -> int:
    with _operator(args, "aios kill") as kernel:
        kernel.kill(args.agent_id)
    return 0


def _renice(args) -> int:
    with _operator(args, "aios renice") as kernel:
        kernel.renice(args.agent_id, args.priority)
    return 0


def _stats(args) -> int:
    with _operator(args, "aios stats") as kernel:
        stats = kernel.stats()
    width = max(map(len, stats))
    for name, value in stats.items():
        print(f"{name:<{width}}  {value}")
    return 0


def _add_keys_parser(commands) -> None:
    keys = commands.add_parser("keys", help="CurveZMQ keys for tcp:// kernels: make, list, revoke client keys")
    keys.add_argument(
        "--keys-dir",
        default=None,
        help="key directory (default: $AIOS_KEYS_DIR, else ~/.config/aios/keys; the same as aiosd's)",
    )
    actions = keys.add_subparsers(required=True, metavar="ACTION")
    new = actions.add_parser("new", help="make a client key pair and authorize its public key")
    new.add_argument("name", help="the client's name: its identity at the kernel is key:NAME")
    new.set_defaults(command=_keys_new)
    actions.add_parser("list", help="list the authorized client keys").set_defaults(command=_keys_list)
    revoke = actions.add_parser("revoke", help="remove a client's authorization (new connections are refused)")
    revoke.add_argument("name")
    revoke.set_defaults(command=_keys_revoke)
    actions.add_parser("server", help="the kernel's public key, for AIOS_SERVER_KEY on other hosts").set_defaults(
        command=_keys_server
    )


def _keys_new(args) -> int:
    authorized, secret = KeyStore(args.keys_dir).new_client(args.name)
    print(f"authorized {args.name}: {authorized}")
    print(f"secret key: {secret}  (keep it private; the agent's environment: {CLIENT_KEY_ENV}={secret})")
    return 0


def _keys_list(args) -> int:
    for name, public_key in KeyStore(args.keys_dir).authorized().items():
        print(f"{name:<24}{public_key.decode('ascii')}")
    return 0


def _keys_revoke(args) -> int:
    if not KeyStore(args.keys_dir).revoke(args.name):
        print(f"aios: no authorized key named {args.name!r}", file=sys.stderr)
        return 1
    print(f"revoked {args.name}: new connections with its key are refused; one already open stays until it closes")
    return 0


def _keys_server(args) -> int:
    store = KeyStore(args.keys_dir)
    public_key, _ = store.server_keys()  # made now if no tcp:// kernel has started yet: the kernel will use it
    print(f"{store.server_public}\n{SERVER_KEY_ENV}={public_key.decode('ascii')}")
    return 0


def _add_gateway_parser(commands) -> None:
    gateway = commands.add_parser("gateway", help="an OpenAI-compatible HTTP gateway to the kernel (its own process)")
    gateway.add_argument(
        "--listen",
        default="127.0.0.1:8000",
        metavar="HOST:PORT",
        help="where to serve HTTP (port 0: any free port, named in the ready line)",
    )
    gateway.add_argument(
        "--keys",
        default=None,
        metavar="FILE",
        help="API keys file (default: ~/.config/aios/"
        "gateway-keys.json if it exists; without one: no authentication, loopback only)",
    )
    gateway.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    gateway.add_argument(
        "--ui-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how often the dashboard (/ui) refreshes its kernel snapshot (default: $AIOS_UI_INTERVAL_S, else 1)",
    )
    gateway.set_defaults(command=_gateway)
    keys = gateway.add_subparsers(metavar="keys").add_parser("keys", help="API keys: add, list, revoke")
    actions = keys.add_subparsers(required=True, metavar="ACTION")
    add = actions.add_parser("add", help="make a key for an agent (the key is shown once)")
    add.add_argument("agent", help="the kernel agent name requests with this key run as")
    add.add_argument("--priority", type=int, default=0, help="the agent's priority")
    add.add_argument(
        "--max-priority",
        type=int,
        default=None,
        help="the highest x-aios-priority the key may ask for (default: --priority)",
    )
    add.add_argument("--grant", action="append", default=[], metavar="CAP", help="a capability for the agent")
    add.add_argument(
        "--tokens-per-minute", type=int, default=None, metavar="N", help="a token quota per minute for this key"
    )
    add.add_argument("--max-tokens-total", type=int, default=None, metavar="N", help="a total token quota for this key")
    add.set_defaults(command=_gateway_keys_add)
    actions.add_parser("list", help="the keys (ids, agents, priorities; never the keys)").set_defaults(
        command=_gateway_keys_list
    )
    revoke = actions.add_parser("revoke", help="remove a key by its id")
    revoke.add_argument("key_id")
    revoke.set_defaults(command=_gateway_keys_revoke)
    for action in (add, revoke, actions.choices["list"]):
        action.add_argument(
            "--file",
            default=None,
            metavar="FILE",
            help="the keys file (default: --keys, else ~/.config/aios/gateway-keys.json)",
        )


def _gateway_keys_path(args) -> str:
    from kernel.gateway.server import default_keys_path

    return getattr(args, "file", None) or args.keys or default_keys_path()


def _gateway(args) -> int:
    from kernel.gateway.server import default_keys_path, serve

    keys = args.keys or (default_keys_path() if os.path.exists(default_keys_path()) else None)
    try:
        return serve(args.address, args.listen, keys, args.log_level, args.ui_interval)
    except OSError as error:
        print(f"aios gateway: cannot listen on {args.listen}: {error.strerror}", file=sys.stderr)
        return 1


def _gateway_keys_add(args) -> int:
    from kernel.gateway import keys

    path = _gateway_keys_path(args)
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    key = keys.add(
        path,
        args.agent,
        args.priority,
        args.max_priority,
        args.grant,
        tokens_per_minute=args.tokens_per_minute,
        max_tokens_total=args.max_tokens_total,
    )
    print(
        f"{key}\n(agent {args.agent!r}, priority {args.priority}; kept hashed in {path}: this is the only time the "
        f"key is shown)"
    )
    return 0


def _gateway_keys_list(args) -> int:
    from kernel.gateway import keys

    for entry in keys.load(_gateway_keys_path(args)):
        print(
            f"{entry.id:<10} {entry.agent[:24]:<25} priority={entry.priority} max={entry.max_priority} "
            f"grants={','.join(entry.grants) or '-'}  {time.strftime('%Y-%m-%d', time.localtime(entry.created))}"
        )
    return 0


def _gateway_keys_revoke(args) -> int:
    from kernel.gateway import keys

    if not keys.revoke(_gateway_keys_path(args), args.key_id):
        print(f"aios: no key with id {args.key_id!r}", file=sys.stderr)
        return 1
    print(f"revoked {args.key_id}: a running gateway refuses it from its next request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
