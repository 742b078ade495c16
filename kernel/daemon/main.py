"""aiosd's entry point: raise the descriptor limit, build the engine, the context manager and the scheduler, open the
socket, run the loop."""

from __future__ import annotations

import logging
import os
import signal
import sys

import zmq

from ipc.address import admin_token_path
from ipc.curve import CurveKeyError, KeyStore, ServerSecurity, is_tcp
from kernel.access.audit import AuditLog
from kernel.access.tokens import TokenRegistry
from kernel.context.arena import remove_stale_segments
from kernel.context.manager import ContextManager
from kernel.context.tool_retention import ToolAwareRetention
from kernel.daemon.config import parse_args
from kernel.daemon.dispatch import AccessPolicy
from kernel.daemon.inbound import Inbox
from kernel.daemon.io_thread import AddressInUse, SocketServer
from kernel.daemon.limits import AgentLimits, ConnectionBudget, raise_fd_limit
from kernel.daemon.loop import KernelLoop
from kernel.daemon.preprocess import PromptPreparer
from kernel.engine.core.interface import EngineError
from kernel.engine.kinds import EngineKind
from kernel.engine.process_env import configure_process_env
from kernel.observe.quotas import QuotaPolicy
from kernel.observe.state import Observation
from kernel.replies import Outbox
from kernel.scheduler.registry import make_scheduler
from kernel.services.factory import build_services

log = logging.getLogger("aiosd")


def main(argv: list[str] | None = None) -> int:
    configure_process_env()  # the engine's OpenMP and huge-page settings, before anything imports torch
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    before, after = raise_fd_limit()  # before anything opens a descriptor the budget must leave room for
    budget = ConnectionBudget.from_fd_limit(
        after, hello_timeout_s=args.hello_timeout, max_connections_per_principal=args.max_connections_per_principal
    )
    log.info(
        "descriptor limit %d (was %d): up to %d connections (%d per principal), %d agents (%d per principal); "
        "hello within %.1f s",
        after,
        before,
        budget.max_connections,
        budget.max_connections_per_principal,
        budget.max_agents,
        budget.max_agents_per_principal,
        budget.hello_timeout_s,
    )
    try:
        options = dict(args.sched_opt) | ({} if args.quantum is None else {"quantum": args.quantum})
        scheduler = make_scheduler(args.scheduler, **options)
    except ValueError as error:
        log.error("%s", error)
        return 2
    try:
        security = _transport_security(args)
    except (CurveKeyError, OSError) as error:
        log.error("cannot secure %s with CurveZMQ: %s", args.address, error)
        return 2
    from kernel.engine.factory import load_engine  # imports torch: only once the arguments are known good

    try:
        engine = load_engine(
            kind=args.engine,
            model=args.model,
            dtype=args.dtype,
            kv_budget_tokens=args.kv_budget,
            max_batch=args.max_batch,
            prefill_chunk=args.prefill_chunk,
            threads=args.threads,
            prefix_cache=args.prefix_cache == "on",
            engine_urls=args.engine_url,
            weights=_weights_mode(args) if args.engine is EngineKind.CPU else None,
        )
    except EngineError as error:  # e.g. no --engine-url answered, or a tokenizer that does not match the server's
        log.error("cannot start the %s engine: %s", args.engine, error)
        return 1
    if getattr(engine, "weight_ratios", None):  # the torch engine's auto weights mode: what it measured
        log.info(
            "weights auto -> %s (perplexity / the reference's: %s)",
            engine.weights,
            ", ".join(f"{mode} {ratio:.3f}" for mode, ratio in engine.weight_ratios.items()),
        )
    for path in remove_stale_segments():  # left by a kernel that was killed before it could clean up
        log.info("removed stale KV arena %s", path)
    snapshots = engine.layout().snapshots
    if not snapshots:  # a remote engine's KV is out of reach: preempt by recompute, retain nothing, a token arena
        log.info("engine %s keeps no KV here: preemption by recompute, no context retention", args.engine)
    context = ContextManager(
        engine,
        arena_bytes=args.arena_mb << 20 if snapshots else 1 << 20,
        retention=args.retention != "off" and snapshots,
        policy=ToolAwareRetention() if args.retention == "tool-aware" else None,
        preempt_mode=args.preempt_mode if snapshots else "recompute",
    )
    zmq_context = zmq.Context()
    try:
        return _serve(args, engine, context, scheduler, zmq_context, security, budget)
    finally:
        context.close()
        if hasattr(engine, "close"):  # the remote engine's streams and health prober
            engine.close()
        if security is not None:  # its ZAP socket would keep the context from terminating
            security.close()
        zmq_context.term()


def _weights_mode(args) -> str:
    """--weights, else auto for the bfloat16 (speed) setting and fp32 for float32, the reference path that stays
    token-identical to Hugging Face transformers."""
    return args.weights or ("fp32" if args.dtype == "float32" else "auto")


def _transport_security(args) -> ServerSecurity | None:
    """CURVE for tcp:// (ipc:// is guarded by its owner-only directory); plain tcp only when asked for by name."""
    if not is_tcp(args.address):
        return None
    if args.insecure_tcp:
        log.warning(
            "--insecure-tcp: %s is served without CurveZMQ; anyone who can reach it can use the kernel", args.address
        )
        return None
    security = ServerSecurity(KeyStore(args.keys_dir))
    log.info(
        "tcp secured with CurveZMQ: kernel public key %s, authorized clients in %s",
        security.store.server_public,
        security.store.authorized_dir,
    )
    return security


def _serve(
    args,
    engine,
    context,
    scheduler,
    zmq_context: zmq.Context,
    security: ServerSecurity | None,
    budget: ConnectionBudget,
) -> int:
    inbox = Inbox()
    try:
        server = SocketServer(
            zmq_context, args.address, inbox, security=security, prepare=PromptPreparer(engine), budget=budget
        )
        access = _access_policy(args, budget)
    except (AddressInUse, zmq.ZMQError, OSError) as error:
        log.error("cannot listen on %s: %s", args.address, error)
        return 1
    try:
        services = build_services(
            zmq_context,
            args.data_dir,
            access.audit,
            memory=args.memory == "on",
            storage=args.storage == "on",
            tools=None if args.tools == "off" else args.tools,
            address=args.address,
            tokens=access.tokens,
            tool_approval=args.tool_approval,
            early_tools=args.early_tools == "on",
            approval_timeout_s=args.approval_timeout,
            tool_observer=context,
        )
    except (OSError, ValueError) as error:
        log.error(
            "cannot set up the kernel's services (data directory %s, tools %s): %s", args.data_dir, args.tools, error
        )
        return 1
    outbox = Outbox(zmq_context)
    loop = KernelLoop(
        engine,
        context,
        scheduler,
        inbox,
        outbox,
        access=access,
        lease_s=args.lease,
        limits=AgentLimits(max_calls=args.max_calls_per_agent, max_queued_tokens=args.max_queued_tokens_per_agent),
        services=services.syscalls,
        observe=Observation(
            quotas=QuotaPolicy(tokens_per_minute=args.quota_tokens_per_minute, tokens_total=args.quota_tokens_total)
        ),
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: loop.stop())
    server.start()  # before the tool servers start: the files and memory servers call back in
    services.start()
    print(
        f"aiosd ready address={args.address} model={engine.layout().model_id} scheduler={scheduler.name} "
        f"pid={os.getpid()}",
        flush=True,
    )
    try:
        loop.run()
    finally:
        services.stop()  # calls in flight finish; queued ones are answered `shutdown` at once
        outbox.stop_server()
        server.join()
        access.tokens.close()
        access.audit.close()
        log.info("stopped after %d engine steps", loop.step)
    return 0


def _access_policy(args, budget: ConnectionBudget) -> AccessPolicy:
    """The admin token (made afresh, beside the socket), the audit log, and which uids may connect over ipc://."""
    token_path = admin_token_path(args.address)
    audit_path = args.audit_log or os.path.join(os.path.dirname(token_path), "audit.jsonl")
    return AccessPolicy(
        tokens=TokenRegistry(token_path),
        audit=AuditLog(audit_path),
        allowed_uids=frozenset([os.getuid(), *args.allow_uid]),
        budget=budget,
    )
