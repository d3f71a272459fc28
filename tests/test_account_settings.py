"""The account part of the settings page: preferences, password, export, deletion, usage.

HTTP through Django's test client; what each form changes is checked in the database
and the transcript store (a folder under the test's tmp_path, tests/conftest.py).
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import AsyncClient, Client

from chat import account_export, conversations, preferences, quotas, search, sharing
from chat.models import AccountPreferences, ApiToken, Conversation, ModelUsage, SearchEntry, SharedSnapshot
from chat.store import StorageUnavailable, get_store
from chat.transcript import Transcript
from tests.conftest import ECHO_MODEL

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"  # tests/conftest.py make_user
NEW_PASSWORD = "another horse entirely 42"
OTHER_MODEL = "test/other"


@pytest.fixture(autouse=True)
def two_models_and_an_empty_cache(settings):
    settings.HF_MODELS = [ECHO_MODEL, OTHER_MODEL]  # the site's default is the first: test/echo
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def alice_client(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def conversation_with_two_branches(user, title: str) -> Conversation:
    """A titled conversation whose first question was edited: two branches, the second active."""
    row, _, first = conversations.create_conversation(user, ECHO_MODEL, "Question one")

    def grow(transcript) -> None:
        transcript.title = title
        transcript.add_message(first.id, "assistant", "Answer one", model=ECHO_MODEL, status="complete")
        edited = transcript.add_message(None, "user", "Question one, edited")
        transcript.add_message(edited.id, "assistant", "Answer two", model=ECHO_MODEL, status="complete")

    conversations.update_transcript(row, grow)
    return row


def transcript_files(settings, user_id: int) -> list[Path]:
    folder = Path(settings.CHAT_DATA_DIR) / "conversations" / str(user_id)
    return sorted(folder.glob("*.json")) if folder.exists() else []


# --- Custom instructions and default model ---------------------------------------------------


def test_preferences_are_saved_and_shown_again(alice, alice_client):
    response = alice_client.post("/settings/preferences/", {"custom_instructions": "  Answer briefly.  ",
                                                            "default_model": OTHER_MODEL})
    assert response.status_code == 302 and response["Location"] == "/settings/#preferences-heading"
    saved = AccountPreferences.objects.get(user=alice)
    assert (saved.custom_instructions, saved.default_model) == ("Answer briefly.", OTHER_MODEL)
    page = alice_client.get("/settings/").content.decode()
    assert "Answer briefly.</textarea>" in page
    assert f'<option value="{OTHER_MODEL}" selected>' in page
    assert "New conversations start from these" in page


def test_too_long_instructions_are_refused_in_plain_words_and_nothing_is_saved(alice, alice_client, settings):
    settings.CHAT_MAX_SYSTEM_PROMPT_CHARS = 10
    response = alice_client.post("/settings/preferences/", {"custom_instructions": "x" * 11, "default_model": ""})
    assert response.status_code == 400
    assert "Custom instructions are limited to 10 characters (these have 11)." in response.content.decode()
    assert not AccountPreferences.objects.exists()


def test_a_model_the_server_does_not_offer_cannot_be_the_default(alice, alice_client):
    response = alice_client.post("/settings/preferences/", {"custom_instructions": "", "default_model": "evil/model"})
    assert response.status_code == 400
    assert "That model cannot be used on this server right now" in response.content.decode()
    assert not AccountPreferences.objects.exists()


def test_new_conversations_start_from_the_preferences(alice):
    preferences.save(alice, custom_instructions="Answer in French.", default_model=OTHER_MODEL)
    assert preferences.default_model_for(alice) == OTHER_MODEL
    row, transcript, _ = conversations.create_conversation(alice, preferences.default_model_for(alice), "Hi")
    assert row.system_prompt == transcript.system_prompt == "Answer in French."
    assert transcript.model_messages()[0] == {"role": "system", "content": "Answer in French."}


def test_changing_the_instructions_leaves_existing_conversations_as_they_are(alice):
    preferences.save(alice, custom_instructions="First.", default_model="")
    row, _, _ = conversations.create_conversation(alice, ECHO_MODEL, "Hi")
    conversations.configure(alice, row.pk, system_prompt="This conversation's own.")
    preferences.save(alice, custom_instructions="Second.", default_model="")
    assert conversations.get_conversation(alice, row.pk)[1].system_prompt == "This conversation's own."
    assert conversations.create_conversation(alice, ECHO_MODEL, "Again")[1].system_prompt == "Second."


def test_without_preferences_the_sites_defaults_apply(alice, settings):
    settings.CHAT_DEFAULT_SYSTEM_PROMPT = "Be kind."
    assert preferences.default_model_for(alice) == ECHO_MODEL
    assert conversations.create_conversation(alice, ECHO_MODEL, "Hi")[1].system_prompt == "Be kind."


def test_a_default_model_the_server_stopped_offering_falls_back_to_the_sites(alice, settings):
    preferences.save(alice, custom_instructions="", default_model=OTHER_MODEL)
    settings.HF_MODELS = [ECHO_MODEL]
    assert preferences.default_model_for(alice) == ECHO_MODEL


def test_the_chat_page_starts_a_new_chat_on_the_default_model(alice, alice_client):
    preferences.save(alice, custom_instructions="", default_model=OTHER_MODEL)
    page = alice_client.get("/new/")
    assert page.context["boot"]["selectedModel"] == OTHER_MODEL
    assert f'<option value="{OTHER_MODEL}" data-label="other" selected' in page.content.decode()


# --- Password ---------------------------------------------------------------------------------


def test_the_settings_page_has_the_password_form(alice_client):
    page = alice_client.get("/settings/").content.decode()
    assert 'action="/accounts/password_change/#password-heading"' in page
    assert "autofocus" not in page  # the form is mid-page: focusing it would scroll there
    for name in ("old_password", "new_password1", "new_password2"):
        assert f'name="{name}"' in page
    assert alice_client.get("/accounts/password_change/")["Location"] == "/settings/#password-heading"


def test_changing_the_password_keeps_the_user_logged_in_and_the_old_one_stops_working(alice, alice_client):
    response = alice_client.post("/accounts/password_change/", {
        "old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/settings/#password-heading"
    page = alice_client.get("/settings/")
    assert page.status_code == 200, "the session that changed the password was logged out"
    assert "Your password was changed." in page.content.decode()
    assert not Client().login(username="alice", password=PASSWORD)
    assert Client().login(username="alice", password=NEW_PASSWORD)


def test_a_wrong_old_password_is_shown_on_the_settings_page(alice, alice_client):
    response = alice_client.post("/accounts/password_change/", {
        "old_password": "wrong", "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    body = response.content.decode()
    assert response.status_code == 200 and 'data-testid="settings-page"' in body
    assert "Your old password was entered incorrectly" in body and 'aria-invalid="true"' in body
    assert re.search(r'name="old_password"[^>]*\bautofocus\b', body), "the wrong field is not focused"
    alice.refresh_from_db()
    assert alice.check_password(PASSWORD)


# --- Export of every conversation -----------------------------------------------------------


async def read_export(client: AsyncClient) -> tuple[object, zipfile.ZipFile]:
    response = await client.get("/settings/export.zip")
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    body = b"".join([chunk async for chunk in response.streaming_content])
    return response, zipfile.ZipFile(io.BytesIO(body))


@pytest.mark.django_db(transaction=True)
async def test_the_export_holds_markdown_and_json_of_every_conversation_with_every_branch(make_user):
    from asgiref.sync import sync_to_async

    alice, bob = await sync_to_async(make_user)("alice"), await sync_to_async(make_user)("bob")
    rows = [await sync_to_async(conversation_with_two_branches)(alice, title) for title in ("Trip plan", "Tax forms")]
    await sync_to_async(conversation_with_two_branches)(bob, "Bob's secret")
    rows[1].archived = True  # archived conversations are the user's too
    await sync_to_async(rows[1].save)(update_fields=["archived"])
    client = AsyncClient()
    await client.aforce_login(alice)
    response, archive = await read_export(client)

    assert 'attachment; filename="chat-export-' in response["Content-Disposition"]
    names = sorted(archive.namelist())
    assert names == sorted(f"conversations/{stem}-{row.pk[:8]}.{ext}"
                           for stem, row in zip(("trip-plan", "tax-forms"), rows, strict=True) for ext in ("md", "json"))
    markdown = archive.read(f"conversations/trip-plan-{rows[0].pk[:8]}.md").decode()
    assert markdown.startswith("# Trip plan")
    assert "Question one, edited" in markdown and "Answer two" in markdown
    assert "Answer one" not in markdown  # the Markdown is the active branch, as the per-conversation export
    tree = json.loads(archive.read(f"conversations/trip-plan-{rows[0].pk[:8]}.json"))
    assert sorted(m["content"] for m in tree["messages"]) == [
        "Answer one", "Answer two", "Question one", "Question one, edited"]  # every branch
    assert not any("secret" in name for name in names)


@pytest.mark.django_db(transaction=True)
async def test_an_empty_account_exports_an_empty_zip(make_user):
    from asgiref.sync import sync_to_async

    client = AsyncClient()
    await client.aforce_login(await sync_to_async(make_user)("alice"))
    _, archive = await read_export(client)
    assert archive.namelist() == []


def test_the_export_says_so_when_storage_is_down(alice, alice_client, monkeypatch):
    def down() -> None:
        raise StorageUnavailable("down")

    monkeypatch.setattr(get_store(), "check", down)
    response = alice_client.get("/settings/export.zip")
    assert response.status_code == 503 and b"storage is unavailable" in response.content


def test_the_export_needs_a_login(client):
    response = client.get("/settings/export.zip")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_a_conversation_whose_transcript_is_gone_is_left_out(alice):
    kept = conversation_with_two_branches(alice, "Kept")
    gone = conversation_with_two_branches(alice, "Gone")
    get_store().delete(alice.pk, gone.pk)
    archive = zipfile.ZipFile(io.BytesIO(), "w")
    assert account_export.write_conversation(archive, kept) is True
    assert account_export.write_conversation(archive, gone) is False
    assert len(archive.namelist()) == 2


# --- Deleting the account ---------------------------------------------------------------------


def everything_of(user) -> None:
    """Data of every kind the account owns: conversations (with search entries), a share,
    a token, usage, preferences."""
    row = conversation_with_two_branches(user, f"{user.username}'s chat")
    sharing.share(user, row.pk)
    ApiToken.issue(user, "laptop")
    quotas.check_and_count(user, ECHO_MODEL)
    preferences.save(user, custom_instructions="Be brief.", default_model="")


def delete(client: Client, password: str = PASSWORD, confirm: bool = True):
    return client.post("/settings/delete/", {"password": password, **({"confirm": "on"} if confirm else {})})


def test_deleting_the_account_removes_its_data_and_leaves_others_untouched(alice, alice_client, make_user, settings):
    bob = make_user("bob")
    everything_of(alice)
    everything_of(bob)
    get_store().create(Transcript.new("orphan", alice.pk, model=ECHO_MODEL))  # a transcript the database lost
    assert len(transcript_files(settings, alice.pk)) == 2

    response = delete(alice_client)
    assert response.status_code == 200 and b"Your account is deleted" in response.content
    assert not get_user_model().objects.filter(pk=alice.pk).exists()
    assert transcript_files(settings, alice.pk) == []
    assert not (Path(settings.CHAT_DATA_DIR) / "conversations" / str(alice.pk)).exists()
    assert not Conversation.objects.filter(owner_id=alice.pk).exists()
    assert not SearchEntry.objects.filter(owner_id=alice.pk).exists()
    assert not ApiToken.objects.filter(user_id=alice.pk).exists()
    assert not ModelUsage.objects.filter(user_id=alice.pk).exists()
    assert not AccountPreferences.objects.filter(user_id=alice.pk).exists()
    assert ModelUsage.objects.get(user=None).requests == 2, "the site's count of requests made stays"
    assert search.search(bob, "Question")  # bob's index still answers

    # Bob: everything still there.
    assert len(transcript_files(settings, bob.pk)) == 1
    bobs = Conversation.objects.get(owner=bob)
    assert conversations.get_conversation(bob, bobs.pk)[1].title == "bob's chat"
    assert SharedSnapshot.objects.filter(conversation=bobs).exists()
    assert ApiToken.objects.filter(user=bob).exists() and AccountPreferences.objects.filter(user=bob).exists()

    # Logged out.
    assert alice_client.get("/settings/")["Location"].startswith("/accounts/login/")


def test_a_wrong_password_deletes_nothing_and_says_so(alice, alice_client, settings):
    everything_of(alice)
    response = delete(alice_client, password="not my password")
    assert response.status_code == 400
    assert "That is not your password. Nothing was deleted." in response.content.decode()
    alice.refresh_from_db()
    assert alice.is_active and len(transcript_files(settings, alice.pk)) == 1
    assert Conversation.objects.filter(owner=alice).exists() and ApiToken.objects.filter(user=alice).exists()


def test_without_the_confirmation_nothing_is_deleted(alice, alice_client, settings):
    everything_of(alice)
    response = delete(alice_client, confirm=False)
    assert response.status_code == 400 and "Tick the box to confirm" in response.content.decode()
    assert get_user_model().objects.filter(pk=alice.pk).exists() and len(transcript_files(settings, alice.pk)) == 1


def test_wrong_passwords_are_throttled_with_the_password_changes_counter(alice, alice_client, settings):
    for _ in range(settings.LOGIN_FAILURE_LIMIT):
        assert delete(alice_client, password="guess").status_code == 400
    response = delete(alice_client)
    assert response.status_code == 429 and b"Too many wrong passwords" in response.content
    assert get_user_model().objects.filter(pk=alice.pk).exists()


def test_storage_down_keeps_the_account_and_says_so(alice, alice_client, monkeypatch, settings):
    everything_of(alice)

    def down(user_id: int) -> int:
        raise StorageUnavailable("down")

    monkeypatch.setattr(get_store(), "delete_user", down)
    response = delete(alice_client)
    assert response.status_code == 503 and "Your account was not deleted" in response.content.decode()
    alice.refresh_from_db()
    assert alice.is_active and Conversation.objects.filter(owner=alice).exists()
    assert alice_client.get("/settings/").status_code == 200  # still logged in, can try again


# --- Today's usage ------------------------------------------------------------------------------


def test_usage_is_shown_in_plain_words_only_when_there_is_a_limit(alice, alice_client, settings):
    settings.HF_DAILY_REQUESTS_PER_USER = 10
    quotas.check_and_count(alice, ECHO_MODEL)
    page = alice_client.get("/settings/").content.decode()
    assert 'data-testid="usage"' in page
    assert "You have used <strong>1</strong> of your 10 daily requests to hosted models" in page
    settings.HF_DAILY_REQUESTS_PER_USER = 0
    settings.HF_DAILY_REQUESTS_SITE = 0
    assert 'data-testid="usage"' not in alice_client.get("/settings/").content.decode()
