"""The conversation store: one JSON transcript per conversation, in a local folder or on S3.

Blocking API: callers run it in a thread, never on the event loop. Every write is a
read-modify-write of the whole transcript, so every write is conditional: two writers
racing on one conversation must both land, never overwrite each other (the lost-update
bug of the original app and of Open WebUI #28742). S3 does that with `IfMatch=etag` and
a retry; the local folder with a lock held across processes and an atomic replace.
Every backend failure surfaces as `StorageUnavailable`, never as a half-written file.

- `contract` — the errors, the keys, the encoding and `ConversationStore` (the
  conditional read-modify-write loop every backend shares).
- `local` — `LocalFolderStore`. `s3` — `S3Store`.
"""
from __future__ import annotations

import threading

from chat.store.contract import (
    ConversationExists,
    ConversationNotFound,
    ConversationStore,
    StorageError,
    StorageUnavailable,
    WriteConflict,
    conversation_key,
    parse_conversation_key,
)
from chat.store.local import LocalFolderStore
from chat.store.s3 import S3Store

__all__ = [
    "ConversationExists", "ConversationNotFound", "ConversationStore", "LocalFolderStore", "S3Store",
    "StorageError", "StorageUnavailable", "WriteConflict", "conversation_key", "get_store",
    "parse_conversation_key", "reset_store",
]

# --- the configured store --------------------------------------------------
_store: ConversationStore | None = None
_store_lock = threading.Lock()


def get_store() -> ConversationStore:
    """The store the settings name, one per process (S3 if a bucket is set, else the folder)."""
    global _store
    with _store_lock:
        if _store is None:
            from django.conf import settings

            if settings.AWS_STORAGE_BUCKET_NAME:
                _store = S3Store(settings.AWS_STORAGE_BUCKET_NAME, prefix=settings.AWS_S3_KEY_PREFIX,
                                 endpoint_url=settings.AWS_S3_ENDPOINT_URL, region_name=settings.AWS_S3_REGION_NAME)
            else:
                _store = LocalFolderStore(settings.CHAT_DATA_DIR)
        return _store


def reset_store() -> None:
    """Forget the cached store (tests that change the settings call this)."""
    global _store
    with _store_lock:
        _store = None
