"""Deleting an account and everything it owns, for good.

The order is what keeps this safe:
1. The user is deactivated first. Their sockets are told (chat/credentials.py, on
   `is_active` changing) and close with 4401, and no new conversation can be created
   while the transcripts are being removed, so none is left behind in the store.
   Running replies are asked to stop.
2. The transcripts are removed from the store (every one of the user's, also any the
   database lost track of). If the store fails, the user is active again and the
   database untouched: the account still works and deleting can be tried again (the
   transcripts already removed are gone).
3. Then the database rows, in one transaction: the user, and by cascade their
   conversations (with their search entries and share snapshots), API tokens, usage
   counts and preferences. The site's own usage count stays: those requests were made.

The password check and the confirmation are the settings page's (chat/settings_page.py).
Blocking: database and store.
"""
from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from django.db import transaction

from chat import events, search
from chat.errors import storage_unavailable
from chat.models import Conversation
from chat.store import StorageUnavailable, get_store

logger = logging.getLogger(__name__)


def _stop_replies(user) -> None:
    """Ask every reply still being written for this user to stop (best effort: a reply that
    ends anyway finds its transcript gone and stores nothing)."""
    channels = Conversation.objects.filter(owner=user).exclude(reply_channel="").values_list("reply_channel", flat=True)
    for channel in channels:
        try:
            async_to_sync(events.request_stop)(channel)
        except Exception:
            logger.warning("could not stop a reply of a deleted account", exc_info=True, extra={"user": user.pk})


def delete_account(user) -> int:
    """Delete the user, their transcripts and their rows; returns how many transcripts went.
    ChatError("storage_unavailable") when the store fails: then the account is kept, active."""
    user_id = user.pk
    was_active = user.is_active
    user.is_active = False
    user.save(update_fields=["is_active"])
    _stop_replies(user)
    try:
        removed = get_store().delete_user(user_id)
    except StorageUnavailable:
        user.is_active = was_active
        user.save(update_fields=["is_active"])
        raise storage_unavailable() from None
    with transaction.atomic():
        for conversation_id in Conversation.objects.filter(owner_id=user_id).values_list("pk", flat=True):
            search.remove_conversation(conversation_id)  # the index is not the ORM's (chat/search.py)
        user.delete()
    logger.info("account deleted", extra={"user": user_id, "transcripts": removed})
    return removed
