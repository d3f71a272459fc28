"""Closing sockets whose credential was withdrawn.

A socket is let in by one credential (consumers/auth.py puts it in the scope as
`credential`): a session key for a browser, an API token id for other clients. When
a credential is withdrawn — logout, token revoked or deleted, password changed,
user deactivated or deleted — a `credentials.withdrawn` event goes to the user's
channel-layer group `user.<id>` (through Redis when configured, so every process
hears it). Each socket of that user then checks its own credential with
`still_valid` and, if it is gone, closes with 4401: the settings page's promise that
clients are "refused from now on" holds for sockets already open, not only new ones.

The event names the withdrawn session key or token id when it knows it, so that a
logout closes its socket even before the session row is deleted; other changes (a
password or `is_active`) carry no name, and every socket of the user re-checks.
"""
from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model, load_backend
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from django.utils.module_loading import import_string

from chat import events, rows
from chat.models import ApiToken, hash_token

logger = logging.getLogger(__name__)

EVENT_TYPE = "credentials.withdrawn"
CLOSE_CODE = 4401

Credential = tuple[str, object]  # ("session", key) or ("token", id)


def token_for(raw: str) -> ApiToken | None:
    """The live token a raw bearer key names (its user active), marked as used; or None.
    Every handshake of a client outside the browser asks: prepared statements (chat/rows.py)."""
    token = rows.get(ApiToken, key_hash=hash_token(raw))
    if token is None:
        return None
    user = _user_row(token.user_id)
    if user is None or not user.is_active:
        return None
    token.user = user
    rows.update(ApiToken, {"last_used_at": timezone.now()}, id=token.pk)
    return token


def session_user(session_key: str | None):
    """The user a session cookie's key names (AnonymousUser if none), verified as
    django.contrib.auth.get_user verifies it: a known backend, and the hash of the user's
    current password. Read-only: unlike get_user it never flushes or rotates the session,
    because a socket cannot hand the browser a new cookie. Blocking."""
    if not session_key:
        return AnonymousUser()
    data = _session_data(session_key)
    backend_path = data.get(BACKEND_SESSION_KEY)
    if SESSION_KEY not in data or backend_path not in settings.AUTHENTICATION_BACKENDS:
        return AnonymousUser()
    user = _backend_user(load_backend(backend_path), get_user_model()._meta.pk.to_python(data[SESSION_KEY]))
    if user is None or not constant_time_compare(data.get(HASH_SESSION_KEY, ""), user.get_session_auth_hash()):
        return AnonymousUser()
    return user


def _session_data(session_key: str) -> dict:
    """What `SessionStore(session_key).load()` reads, without its side effects. Every browser
    handshake asks: with the database engine (the default), the row is read by a prepared
    statement (chat/rows.py) rather than a compiled ORM query, then checked and decoded
    as Django's store does it."""
    store = import_string(f"{settings.SESSION_ENGINE}.SessionStore")(session_key)
    if settings.SESSION_ENGINE != "django.contrib.sessions.backends.db":
        return store.load()
    if not store.session_key:  # the store refuses malformed keys
        return {}
    row = rows.get(store.model, session_key=store.session_key)
    if row is None or row.expire_date <= timezone.now():
        return {}
    return store.decode(row.session_data)


def _backend_user(backend, user_id):
    """`backend.get_user(user_id)`; Django's ModelBackend's by a prepared statement (above)."""
    if type(backend) is not ModelBackend:
        return backend.get_user(user_id)
    user = _user_row(user_id)
    return user if user is not None and backend.user_can_authenticate(user) else None


def _user_row(user_id):
    """The user with this primary key, or None (a prepared statement: chat/rows.py)."""
    model = get_user_model()
    return rows.get(model, **{model._meta.pk.attname: user_id})


def _session_is_users(session_key: str, user) -> bool:
    """Django's own test (django.contrib.auth.get_user): the session names this user and
    carries the hash of the user's current password."""
    store = import_string(f"{settings.SESSION_ENGINE}.SessionStore")(session_key)
    if not store.exists(session_key):
        return False
    data = store.load()
    return str(data.get(SESSION_KEY)) == str(user.pk) and constant_time_compare(
        data.get(HASH_SESSION_KEY, ""), user.get_session_auth_hash())


def still_valid(credential: Credential | None, user_id: int, event: dict | None = None) -> bool:
    """Whether the credential that let a socket in would still let it in now. Blocking."""
    if credential is None:
        return False
    kind, value = credential
    if event is not None and event.get(kind) == value:
        return False  # the event names this very credential
    user = get_user_model().objects.filter(pk=user_id).first()
    if user is None or not user.is_active:
        return False
    if kind == "token":
        return ApiToken.objects.filter(pk=value, user_id=user_id).exists()
    if kind == "session":
        return _session_is_users(str(value), user)
    return False


def announce(user_id: int, **withdrawn) -> None:
    """Tell every socket of the user, once the withdrawal is committed, to check its credential."""
    event = {"type": EVENT_TYPE, **withdrawn}

    def send() -> None:
        try:
            async_to_sync(events.to_user_sockets)(user_id, event)
        except Exception:  # the withdrawal itself has happened; new sockets are refused anyway
            logger.warning("could not tell sockets of a withdrawn credential", exc_info=True,
                           extra={"user": user_id, "withdrawn": sorted(withdrawn)})

    transaction.on_commit(send)


@receiver(user_logged_out, dispatch_uid="chat.credentials.logged_out")
def _logged_out(sender, request, user, **kwargs) -> None:
    if user is not None:
        announce(user.pk, session=getattr(request.session, "session_key", None))


@receiver(post_delete, sender=ApiToken, dispatch_uid="chat.credentials.token_deleted")
def _token_deleted(sender, instance: ApiToken, **kwargs) -> None:
    announce(instance.user_id, token=instance.pk)


def _user_saved(sender, instance, created: bool, update_fields=None, **kwargs) -> None:
    if created or (update_fields is not None and set(update_fields) <= {"last_login"}):
        return  # a login only stamps last_login: nothing was withdrawn
    announce(instance.pk)


def _user_deleted(sender, instance, **kwargs) -> None:
    announce(instance.pk)


post_save.connect(_user_saved, sender=settings.AUTH_USER_MODEL, dispatch_uid="chat.credentials.user_saved")
post_delete.connect(_user_deleted, sender=settings.AUTH_USER_MODEL, dispatch_uid="chat.credentials.user_deleted")
