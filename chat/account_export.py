"""One download of all of a user's conversations: a zip holding, per conversation, the
Markdown of its active branch and the JSON of its whole tree (every branch), the same
two files as the per-conversation downloads (chat/exports.py).

The zip is streamed, not built first: it is written one conversation at a time into a
buffer that the response drains, each transcript read from the store in a worker thread
(`run_blocking`), so thousands of conversations cost neither the event loop nor memory.
A transcript that the store cannot read ends the download with an error (the browser
says it failed) rather than silently leaving a conversation out; a row whose transcript
is gone (it names nothing that could be exported) is skipped.
"""
from __future__ import annotations

import datetime
import json
import zipfile
from collections.abc import AsyncIterator

from chat import conversations, exports
from chat.blocking import run_blocking
from chat.errors import ChatError
from chat.models import Conversation
from chat.store import get_store

FOLDER = "conversations"


class _Sink:
    """A write-only file without seek or tell: ZipFile then writes each entry once, in
    order (sizes after the data), and what it wrote waits here until it is drained."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def write(self, data) -> int:
        self._chunks.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def drain(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


def filename() -> str:
    day = datetime.datetime.now(datetime.UTC).date().isoformat()
    return f"chat-export-{day}.zip"


def _entry(name: str, created_at: str) -> zipfile.ZipInfo:
    stamp = datetime.datetime.fromisoformat(created_at)
    info = zipfile.ZipInfo(name, date_time=max(stamp.timetuple()[:6], (1980, 1, 1, 0, 0, 0)))
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def write_conversation(archive: zipfile.ZipFile, row: Conversation) -> bool:
    """Add one conversation's two files; False when its transcript no longer exists. Blocking."""
    try:
        transcript = conversations.load_transcript(row)
    except ChatError as error:
        if error.code == "not_found":
            return False
        raise
    base = f"{FOLDER}/{exports.stem(transcript)}-{transcript.id[:8]}"
    archive.writestr(_entry(f"{base}.md", transcript.updated_at), exports.to_markdown(transcript))
    body = json.dumps(exports.to_json(transcript), ensure_ascii=False, indent=2)
    archive.writestr(_entry(f"{base}.json", transcript.updated_at), body)
    return True


def conversations_to_export(user) -> list[Conversation]:
    """Every conversation of the user, archived ones included (the sidebar's, then the
    archived), once the store answers: a store that is down is reported before the
    download starts (a 503), not in the middle of it. Blocking."""
    get_store().check()
    return conversations.list_conversations(user) + conversations.list_archived(user)


async def stream(rows: list[Conversation]) -> AsyncIterator[bytes]:
    """The zip of these conversations, in chunks of about one conversation each."""
    sink = _Sink()
    archive = zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED)
    for row in rows:
        await run_blocking(write_conversation, archive, row)
        chunk = sink.drain()
        if chunk:
            yield chunk
    archive.close()  # the central directory: the zip's table of contents
    yield sink.drain()
