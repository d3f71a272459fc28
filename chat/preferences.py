"""Account-wide preferences: the custom instructions and the default model that a user's
new conversations start from (the settings page edits them; `AccountPreferences` holds them).

- A new conversation's model, when `message.send` names none, is the user's default
  model while that model is offered and available, else the site's (`default_model_id`):
  a default that the server stopped offering must not make every new chat fail.
- A new conversation's system prompt is a copy of the user's custom instructions (else
  `CHAT_DEFAULT_SYSTEM_PROMPT`). It is a copy so that the conversation's own system
  prompt, set later from its settings panel, wins, and so that editing the instructions
  never rewrites conversations that already exist.

Blocking (database): async code calls these through `chat.blocking.run_blocking`.
"""
from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone

from chat import rows
from chat.backends import ModelInfo, available_models, default_model_id
from chat.models import AccountPreferences


def get(user) -> AccountPreferences:
    """The user's preferences; an unsaved, empty row when none were ever saved."""
    # On every handshake (the hello frame): see chat/rows.py.
    return rows.get(AccountPreferences, user_id=user.pk) or AccountPreferences(user=user)


def save(user, *, custom_instructions: str, default_model: str) -> AccountPreferences:
    """Check and store both. A refusal is a ValidationError naming its field, in plain
    words, and stores nothing (the settings page shows it next to that field)."""
    custom_instructions = custom_instructions.strip()
    limit = settings.CHAT_MAX_SYSTEM_PROMPT_CHARS
    problems = {}
    if len(custom_instructions) > limit:
        problems["custom_instructions"] = (f"Custom instructions are limited to {limit} characters "
                                           f"(these have {len(custom_instructions)}).")
    if default_model and not _usable(default_model, available_models()):
        problems["default_model"] = "That model cannot be used on this server right now; pick another."
    if problems:
        raise ValidationError(problems)
    row, _ = AccountPreferences.objects.update_or_create(user=user, defaults={
        "custom_instructions": custom_instructions,
        "default_model": default_model,
        "updated_at": timezone.now(),
    })
    return row


def _usable(model_id: str, models: list[ModelInfo]) -> bool:
    return any(info.id == model_id and info.available for info in models)


def resolved_model(row: AccountPreferences) -> str:
    """The model a new conversation of this user gets when it names none."""
    if row.default_model and _usable(row.default_model, available_models()):
        return row.default_model
    return default_model_id()


def default_model_for(user) -> str:
    return resolved_model(get(user))


def system_prompt_for(user) -> str:
    """The system prompt a new conversation of this user starts with."""
    return get(user).custom_instructions or settings.CHAT_DEFAULT_SYSTEM_PROMPT


def for_hello(user) -> dict:
    """The `hello` frame's `preferences`: what a new chat of this socket will start from."""
    row = get(user)
    return {"default_model": resolved_model(row), "custom_instructions": row.custom_instructions}
