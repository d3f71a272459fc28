"""chat/rows.py: the hot path's statements give what the ORM gives, on SQLite and PostgreSQL."""
from __future__ import annotations

import datetime

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from chat import rows
from chat.models import Conversation, ModelUsage

pytestmark = pytest.mark.django_db


def create_user_sync():
    users = get_user_model().objects
    return users.create_user(username=f"user{users.count()}", password="x")


def fields_of(row) -> dict:
    return {field.attname: getattr(row, field.attname) for field in type(row)._meta.concrete_fields}


def test_get_returns_the_instance_the_orm_returns():
    owner = create_user_sync()
    made = Conversation.objects.create(owner=owner, title="Plans", model="m", pinned=True,
                                       reply_heartbeat=timezone.now(), reply_seq=7, reply_message="r1")
    found = rows.get(Conversation, id=made.pk, owner_id=owner.pk)
    expected = Conversation.objects.get(pk=made.pk)
    assert fields_of(found) == fields_of(expected)
    assert found.pinned is True and found.archived is False  # booleans, not SQLite's 0/1
    assert timezone.is_aware(found.updated_at) and found.reply_heartbeat == expected.reply_heartbeat
    assert found._state.adding is False and found._state.db == "default"
    found.title = "Saved through the ORM"
    found.save(update_fields=["title"])  # an instance like any other
    assert Conversation.objects.get(pk=made.pk).title == "Saved through the ORM"


def test_get_finds_nothing_for_another_owner_or_an_unknown_id():
    owner, other = create_user_sync(), create_user_sync()
    made = Conversation.objects.create(owner=owner, model="m")
    assert rows.get(Conversation, id=made.pk, owner_id=other.pk) is None
    assert rows.get(Conversation, id="no-such-id", owner_id=owner.pk) is None
    with pytest.raises(ValueError):
        rows.get(Conversation, id=made.pk, reply_message=None)


def test_update_changes_only_the_rows_matching_including_is_null():
    owner = create_user_sync()
    free = Conversation.objects.create(owner=owner, model="m")
    held = Conversation.objects.create(owner=owner, model="m", reply_message="busy")
    when = timezone.now() + datetime.timedelta(minutes=5)
    values = {"reply_message": "r2", "reply_heartbeat": when, "updated_at": when, "reply_seq": 3}
    assert rows.update(Conversation, values, id=free.pk, reply_message=None) == 1
    assert rows.update(Conversation, values, id=held.pk, reply_message=None) == 0  # the slot was taken
    free.refresh_from_db()
    held.refresh_from_db()
    assert (free.reply_message, free.reply_heartbeat, free.updated_at, free.reply_seq) == ("r2", when, when, 3)
    assert held.reply_message == "busy" and held.reply_seq == 0


def test_filter_returns_the_rows_and_the_order_the_orm_returns():
    owner, other = create_user_sync(), create_user_sync()
    start = timezone.now()
    made = [Conversation.objects.create(owner=owner, title=f"c{i}", model="m") for i in range(4)]
    Conversation.objects.create(owner=other, model="m")
    for i, row in enumerate(made):  # updated_at out of creation order
        Conversation.objects.filter(pk=row.pk).update(updated_at=start + datetime.timedelta(minutes=(i * 3) % 4))
    found = rows.filter(Conversation, owner_id=owner.pk, order_by=("-updated_at",))
    expected = list(Conversation.objects.filter(owner=owner).order_by("-updated_at"))
    assert [fields_of(row) for row in found] == [fields_of(row) for row in expected]
    assert [row.title for row in found] == ["c1", "c2", "c3", "c0"]
    assert [row.title for row in rows.filter(Conversation, owner_id=owner.pk, order_by=("updated_at",))] == \
        ["c0", "c3", "c2", "c1"]
    assert rows.filter(Conversation, owner_id=create_user_sync().pk) == []


def test_filter_matches_null_and_any_of_a_list():
    owner, other, third = create_user_sync(), create_user_sync(), create_user_sync()
    day = datetime.date(2026, 12, 1)
    for user, requests in ((owner, 1), (other, 2), (third, 3), (None, 9)):
        ModelUsage.objects.create(day=day, user=user, requests=requests)
    ModelUsage.objects.create(day=day + datetime.timedelta(days=1), user=owner, requests=5)

    def counts(**where):
        return {row.user_id: row.requests for row in rows.filter(ModelUsage, day=day, **where)}

    assert counts(user_id=[owner.pk, None]) == {owner.pk: 1, None: 9}
    assert counts(user_id=[owner.pk, other.pk]) == {owner.pk: 1, other.pk: 2}
    assert counts(user_id=None) == {None: 9}
    assert counts(user_id=[None]) == {None: 9}
    assert counts(user_id=[]) == {}
    assert counts() == {owner.pk: 1, other.pk: 2, third.pk: 3, None: 9}
