"""The preprocessor: one thread between the I/O thread and the kernel loop that turns LLM calls into token ids.

Tokenizing and rendering a chat template cost up to a second for a prompt near the frame limit; done on the loop they
would stall every agent's decoding, done on the I/O thread every agent's replies. Here they run beside both (vLLM's
input-processing thread). Cheap checks come first: a prompt longer than any context could hold, counted in characters,
is refused before it is tokenized. The context-length rule is applied here, at admission, once the prompt is tokens
(interface.check_context_length: prompt + max_tokens within the engine's context), refused with
context_length_exceeded: the engine only ever holds requests that fit. Items pass through in arrival order, so a
connection's LLM calls, their cancels and its ConnectionClosed keep their order; a call refused here is answered here,
through this thread's own outbox. Which syscalls come here (the LLM family, ipc/syscalls.PREPROCESSED) and which of
them are tokenized (Worker.PREPROCESSOR: TOKENIZED) is the syscall table's.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

import zmq

from ipc.errors import ErrorCode, ProtocolError
from ipc.messages import Chat, Generate
from ipc.syscalls import TOKENIZED
from kernel.daemon.inbound import Inbound, Inbox
from kernel.engine.core.interface import ContextLengthExceeded, EngineError, check_context_length
from kernel.engine.structured.response_format import response_format_grammar, response_schema
from kernel.engine.structured.tool_chat import prepare_chat
from kernel.engine.structured.tool_formats import ToolFormat
from kernel.replies import Outbox

log = logging.getLogger("aiosd.preprocess")

MAX_CHARS_PER_TOKEN = 64  # no vocabulary entry is longer: more characters than this × the context cannot fit


@dataclass(frozen=True)
class Prepared:
    prompt_ids: list[int]
    grammar: str | None = None  # tools offered or a response format: the answer must follow it
    tool_format: ToolFormat | None = None  # tools offered: the reply is parsed into calls in this format


class PromptPreparer:
    """An LLM call's prompt as token ids (and, for a chat offering tools, the tools rendered into its messages and the
    grammar its call must follow), or ProtocolError. Safe off the loop thread: only the engine's tokenizer and chat
    template are used (both thread-safe), and the context limits read once at start."""

    def __init__(self, engine):
        self._engine = engine
        self.limit = engine.capacity().context_limit

    def __call__(self, call: Generate | Chat) -> Prepared:
        if isinstance(call, Chat):
            if not call.messages:
                raise ProtocolError(ErrorCode.BAD_REQUEST, "messages must not be empty")
            chars = sum(len(m.content) for m in call.messages)
        else:
            chars = len(call.prompt)
        if chars > self.limit * MAX_CHARS_PER_TOKEN:
            raise ProtocolError(
                ErrorCode.CONTEXT_LENGTH, f"a prompt of {chars} characters cannot fit the {self.limit}-token context"
            )
        grammar, tool_format = None, None
        if isinstance(call, Chat):
            messages = [_as_dict(m) for m in call.messages]
            try:
                structured = response_schema(call.response_format) is not None
                # with a response format, "auto" is a call or the structured answer (response_format.py)
                choice = "required" if structured and call.tool_choice == "auto" else call.tool_choice
                # the model's own tools section and call format where its template has one (tool_formats.py)
                chat = prepare_chat(
                    getattr(self._engine, "tokenizer", self._engine),
                    messages,
                    call.tools or None,
                    call.tool_choice,
                    call.parallel_tool_calls,
                    grammar_choice=choice,
                )
                ids, grammar, tool_format = chat.prompt_ids, chat.grammar, chat.tool_format
                if structured:
                    grammar = response_format_grammar(call.response_format, grammar)
            except EngineError as error:
                raise ProtocolError(ErrorCode.BAD_REQUEST, str(error)) from None
        else:
            ids = self._engine.tokenize(call.prompt)
        if not ids:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "the prompt is empty")
        try:
            check_context_length(len(ids), call.max_tokens, self.limit)
        except ContextLengthExceeded as error:
            raise ProtocolError(ErrorCode.CONTEXT_LENGTH, str(error)) from None
        return Prepared(ids, grammar, tool_format)


class Preprocessor:
    def __init__(self, context: zmq.Context, inbox: Inbox, prepare: Callable[[Generate | Chat], Prepared] | None):
        self._context = context
        self._inbox = inbox
        self._prepare = prepare
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="aiosd-preprocess", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, item) -> None:
        self._queue.put(item)

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        outbox = Outbox(self._context)
        try:
            while (item := self._queue.get()) is not None:
                item = self._process(item, outbox)
                if item is not None:
                    self._inbox.put(item)
        finally:
            outbox.close()

    def _process(self, item, outbox: Outbox):
        if not isinstance(item, Inbound) or item.envelope.type not in TOKENIZED or self._prepare is None:
            return item
        envelope = item.envelope
        try:
            prepared = self._prepare(envelope.body)
            return dataclasses.replace(
                item, prompt_ids=prepared.prompt_ids, grammar=prepared.grammar, tool_format=prepared.tool_format
            )
        except ProtocolError as error:
            outbox.fail(item.identity, envelope.req_id, error)
        except Exception:  # a tokenizer bug fails this call only
            log.exception("preparing %s failed", envelope.type)
            outbox.error(item.identity, envelope.req_id, ErrorCode.INTERNAL, f"{envelope.type} failed in the kernel")
        self._inbox.release(item.identity)  # answered here: it never reaches the loop, which would give it back
        return None


def _as_dict(message) -> dict:
    """A chat message as the chat template (and render_tool_prompt) take it: only the fields it uses."""
    out = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = message.tool_calls
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out
