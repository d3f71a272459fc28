"""The message tree of one conversation.

A conversation is a tree, not a list: editing a user message stores the new text as
a sibling of the old one, and regenerating a reply stores the new reply as a sibling
of the old reply, so no version is ever lost. The *active branch* is the path from a
root to `active_leaf`; it is what the user sees and what the model is sent.

Pure Python (no Django): the store serialises it, the services mutate it, the tests
exercise it without a database.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

FORMAT_VERSION = 1
ROLES = ("user", "assistant")
REPLY_STATUSES = ("complete", "cut", "stopped", "failed", "interrupted")
# A reply with one of these statuses can be continued in place (message.continue).
CONTINUABLE_STATUSES = ("cut", "interrupted")


def now_iso() -> str:
    """UTC timestamp with microseconds: sorts as text, and two quick writes differ."""
    return datetime.now(UTC).isoformat()


def new_message_id() -> str:
    """Short and unguessable, so an id in a URL or frame reveals nothing."""
    return secrets.token_hex(8)


@dataclass
class Message:
    id: str
    parent: str | None
    role: str
    content: str
    created_at: str
    model: str | None = None
    status: str | None = None
    error: dict | None = None

    def to_dict(self) -> dict[str, Any]:
        """The stored form. Not `dataclasses.asdict`, which deep-copies every field: 9.4 µs
        a message against 0.3 µs, and every write serialises the whole tree, so a turn
        in a 200-message conversation spent 1.9 ms more of the worker thread, holding
        the GIL the event loop needs."""
        return {"id": self.id, "parent": self.parent, "role": self.role, "content": self.content,
                "created_at": self.created_at, "model": self.model, "status": self.status,
                "error": dict(self.error) if self.error is not None else None}


@dataclass
class Transcript:
    id: str
    user_id: int
    title: str
    model: str
    system_prompt: str
    created_at: str
    updated_at: str
    messages: dict[str, Message] = field(default_factory=dict)  # insertion order = creation order
    active_leaf: str | None = None

    @classmethod
    def new(cls, id: str, user_id: int, model: str, system_prompt: str = "", title: str = "") -> Transcript:
        stamp = now_iso()
        return cls(id=id, user_id=user_id, title=title, model=model, system_prompt=system_prompt,
                   created_at=stamp, updated_at=stamp)

    # --- building the tree --------------------------------------------------
    def add_message(self, parent: str | None, role: str, content: str, *, message_id: str | None = None,
                    model: str | None = None, status: str | None = None, error: dict | None = None) -> Message:
        """Append a message under `parent` (None: a new root) and make it the active leaf.

        Several roots are allowed: editing the first user message makes a sibling root.
        """
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        if status is not None and status not in REPLY_STATUSES:
            raise ValueError(f"unknown reply status {status!r}")
        if parent is not None and parent not in self.messages:
            raise KeyError(parent)
        message_id = message_id or new_message_id()
        if message_id in self.messages:
            raise ValueError(f"message id {message_id!r} already exists")
        message = Message(id=message_id, parent=parent, role=role, content=content, created_at=now_iso(),
                          model=model, status=status, error=error)
        self.messages[message_id] = message
        self.active_leaf = message_id
        self.updated_at = message.created_at
        return message

    # --- reading the tree ---------------------------------------------------
    def children(self, message_id: str | None) -> list[Message]:
        """Children of a message, oldest first; None gives the roots."""
        if message_id is not None and message_id not in self.messages:
            raise KeyError(message_id)
        return [m for m in self.messages.values() if m.parent == message_id]

    def siblings(self, message_id: str) -> list[str]:
        """Ids of the messages sharing this one's parent, itself included, oldest first."""
        return [m.id for m in self.children(self.messages[message_id].parent)]

    def active_branch(self) -> list[Message]:
        """The path root → active leaf."""
        branch: list[Message] = []
        current = self.active_leaf
        while current is not None:
            message = self.messages[current]
            branch.append(message)
            current = message.parent
        branch.reverse()
        return branch

    def switch_branch(self, message_id: str) -> str:
        """Make the branch through `message_id` active, down to its newest leaf.

        At each step the newest child wins: that is the version the user last produced
        below that point. Returns the new active leaf. KeyError for an unknown id.
        """
        if message_id not in self.messages:
            raise KeyError(message_id)
        newest_child: dict[str, str] = {}
        for message in self.messages.values():  # one pass; later messages overwrite older ones
            if message.parent is not None:
                newest_child[message.parent] = message.id
        leaf = message_id
        while leaf in newest_child:
            leaf = newest_child[leaf]
        self.active_leaf = leaf
        return leaf

    def last_user_message(self) -> Message | None:
        return next((m for m in reversed(self.active_branch()) if m.role == "user"), None)

    def model_messages(self) -> list[dict[str, str]]:
        """OpenAI-style messages for the model: the system prompt, then the active branch.

        A reply with no text (failed or interrupted before its first token, or stopped at
        once) is left out: an empty assistant turn tells the model nothing.
        """
        out = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        for message in self.active_branch():
            if message.role == "assistant" and not message.content:
                continue
            out.append({"role": message.role, "content": message.content})
        return out

    # --- serialisation ------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "model": self.model, "system_prompt": self.system_prompt,
                "created_at": self.created_at, "updated_at": self.updated_at}

    def to_dict(self) -> dict[str, Any]:
        return {"version": FORMAT_VERSION, **self.metadata(), "user_id": self.user_id,
                "active_leaf": self.active_leaf, "messages": [m.to_dict() for m in self.messages.values()]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Transcript:
        """Rebuild a transcript; ValueError for another format version or a broken tree."""
        version = data.get("version") if isinstance(data, dict) else None
        if version != FORMAT_VERSION:
            raise ValueError(f"unsupported transcript format version {version!r} (this server reads {FORMAT_VERSION})")
        try:
            messages: dict[str, Message] = {}
            for raw in data["messages"]:
                message = Message(id=raw["id"], parent=raw["parent"], role=raw["role"], content=raw["content"],
                                  created_at=raw["created_at"], model=raw.get("model"), status=raw.get("status"),
                                  error=raw.get("error"))
                if message.parent is not None and message.parent not in messages:
                    raise ValueError(f"message {message.id!r} comes before its parent {message.parent!r}")
                messages[message.id] = message
            transcript = cls(id=data["id"], user_id=int(data["user_id"]), title=data["title"], model=data["model"],
                             system_prompt=data["system_prompt"], created_at=data["created_at"],
                             updated_at=data["updated_at"], messages=messages, active_leaf=data["active_leaf"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed transcript: {exc!r}") from exc
        if transcript.active_leaf is not None and transcript.active_leaf not in messages:
            raise ValueError(f"active leaf {transcript.active_leaf!r} is not a message of the transcript")
        return transcript
