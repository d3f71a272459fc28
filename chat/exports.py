"""Downloads of a conversation: Markdown of the active branch, JSON of the whole tree."""
from __future__ import annotations

import re

from chat.transcript import Transcript


def stem(transcript: Transcript) -> str:
    """The title as a safe file name, without extension."""
    name = re.sub(r"[^A-Za-z0-9]+", "-", transcript.title or "conversation").strip("-").lower()[:60]
    return name or "conversation"


def filename(transcript: Transcript, extension: str) -> str:
    return f"{stem(transcript)}.{extension}"


def to_markdown(transcript: Transcript) -> str:
    lines = [f"# {transcript.title or 'Untitled conversation'}", ""]
    if transcript.system_prompt:
        lines += ["**System prompt:**", "", transcript.system_prompt, ""]
    for message in transcript.active_branch():
        speaker = "You" if message.role == "user" else f"Assistant ({message.model})"
        note = f" _[{message.status}]_" if message.status not in (None, "complete") else ""
        lines += [f"## {speaker}{note}", "", message.content, ""]
    return "\n".join(lines)


def to_json(transcript: Transcript) -> dict:
    return transcript.to_dict()
