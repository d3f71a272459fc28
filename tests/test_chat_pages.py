"""The chat page over plain HTTP: login, the latest conversation, history, exports, 404s."""
from __future__ import annotations

import json

import pytest
from django.utils import timezone

from chat import conversations
from chat.models import Conversation
from chat.views import SIDEBAR_FIRST_PAGE
from tests.conftest import ECHO_MODEL


@pytest.fixture
def alice(make_user):
    return make_user("alice")


def a_conversation(user, text="hello **there**", reply="A *reply* with `code`"):
    row, transcript, message = conversations.create_conversation(user, ECHO_MODEL, text)
    conversations.append_message(row, message.id, "assistant", reply, model=ECHO_MODEL, status="complete")
    conversations.update_title(row, "A test title")
    return row


@pytest.mark.parametrize("path", ["/", "/new/", "/c/abc/", "/settings/", "/c/abc/export.md"])
def test_every_chat_page_requires_login(client, db, path):
    response = client.get(path)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_root_opens_new_chat_for_a_new_user_and_latest_conversation_later(client, alice):
    client.force_login(alice)
    assert client.get("/")["Location"] == "/new/"
    assert client.get("/new/").status_code == 200
    older, _newer = a_conversation(alice), a_conversation(alice)
    Conversation.objects.filter(pk=older.pk).update(updated_at=timezone.now())
    assert client.get("/")["Location"] == f"/c/{older.pk}/"


def test_conversation_page_renders_its_history_server_side(client, alice):
    row = a_conversation(alice)
    client.force_login(alice)
    page = client.get(f"/c/{row.pk}/").content.decode()
    assert "hello **there**" in page  # the user's text, as typed
    assert "A <em>reply</em> with <code>code</code>" in page  # the reply, rendered
    assert "A test title" in page


def test_another_users_conversation_and_its_exports_answer_404(client, alice, make_user):
    row = a_conversation(alice)
    client.force_login(make_user("mallory"))
    for path in (f"/c/{row.pk}/", f"/c/{row.pk}/export.md", f"/c/{row.pk}/export.json", "/c/nonexistent/"):
        assert client.get(path).status_code == 404, path


def test_exports_give_markdown_of_the_branch_and_json_of_the_tree(client, alice):
    row = a_conversation(alice)
    client.force_login(alice)
    markdown = client.get(f"/c/{row.pk}/export.md")
    assert markdown["Content-Disposition"] == 'attachment; filename="a-test-title.md"'
    assert "# A test title" in markdown.content.decode() and "A *reply* with `code`" in markdown.content.decode()
    tree = json.loads(client.get(f"/c/{row.pk}/export.json").content)
    assert tree["version"] == 1 and [m["role"] for m in tree["messages"]] == ["user", "assistant"]


def test_page_renders_the_newest_conversations_and_leaves_the_rest_to_the_socket(client, alice):
    now = timezone.now()
    Conversation.objects.bulk_create(
        Conversation(owner=alice, title=f"chat {i}", model=ECHO_MODEL, created_at=now, updated_at=now - timezone.timedelta(minutes=i))
        for i in range(SIDEBAR_FIRST_PAGE + 20)
    )
    client.force_login(alice)
    page = client.get("/new/").content.decode()
    assert page.count('data-testid="conversation-item"') == SIDEBAR_FIRST_PAGE
    assert ">chat 0<" in page and ">chat 119<" not in page
