"""The Responses API's conversation state: what previous_response_id refers to, kept by the gateway per API key.

A stored response is the whole conversation that produced it (chat messages, as the kernel takes them, its own
output included), so a follow-up sends only its new input. Each key has its own store, bounded twice: at most
MAX_RESPONSES responses and MAX_BYTES bytes of conversation (measured as the messages' JSON), least recently used
dropped first; a conversation bigger than the whole budget is not stored. One key can neither read another's
responses (get answers None, as for an unknown id) nor push them out. The number of stores is the number of keys
(the keys file; one without it), so the gateway's memory for state is bounded by keys × MAX_BYTES.
Used from the gateway's one event loop only: no locking.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass

MAX_RESPONSES = 512
MAX_BYTES = 32 << 20


@dataclass(frozen=True)
class StoredResponse:
    messages: tuple[dict, ...]  # the conversation through this response's output
    size: int


class ResponseStore:
    def __init__(self, max_responses: int = MAX_RESPONSES, max_bytes: int = MAX_BYTES):
        self.max_responses, self.max_bytes = max_responses, max_bytes
        self._keys: dict[str, _KeyStore] = {}

    def put(self, key: str, response_id: str, messages: list[dict]) -> bool:
        """Keep messages as response_id's conversation for key; False if it alone is over the byte budget."""
        size = len(json.dumps(messages, separators=(",", ":")))
        if size > self.max_bytes:
            return False
        store = self._keys.setdefault(key, _KeyStore())
        store.put(response_id, StoredResponse(tuple(messages), size), self.max_responses, self.max_bytes)
        return True

    def get(self, key: str, response_id: str) -> list[dict] | None:
        store = self._keys.get(key)
        return None if store is None else store.get(response_id)

    def delete(self, key: str, response_id: str) -> bool:
        store = self._keys.get(key)
        return store is not None and store.delete(response_id)

    def usage(self, key: str) -> tuple[int, int]:
        """(responses, bytes) held for key."""
        store = self._keys.get(key)
        return (0, 0) if store is None else (len(store.responses), store.bytes)


class _KeyStore:
    def __init__(self) -> None:
        self.responses: OrderedDict[str, StoredResponse] = OrderedDict()
        self.bytes = 0

    def put(self, response_id: str, stored: StoredResponse, max_responses: int, max_bytes: int) -> None:
        self.delete(response_id)
        self.responses[response_id] = stored
        self.bytes += stored.size
        while len(self.responses) > max_responses or self.bytes > max_bytes:
            _, dropped = self.responses.popitem(last=False)
            self.bytes -= dropped.size

    def get(self, response_id: str) -> list[dict] | None:
        stored = self.responses.get(response_id)
        if stored is None:
            return None
        self.responses.move_to_end(response_id)
        return list(stored.messages)

    def delete(self, response_id: str) -> bool:
        stored = self.responses.pop(response_id, None)
        if stored is None:
            return False
        self.bytes -= stored.size
        return True
