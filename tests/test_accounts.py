"""Accounts: closed sign-up, password rules, the login throttle and the settings page."""
from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import Client, RequestFactory

from chat import accounts, settings_page
from chat.models import ApiToken

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def empty_cache():
    cache.clear()
    yield
    cache.clear()


def login(client: Client, username: str, password: str, ip: str = "192.0.2.1"):
    return client.post("/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=ip)


# --- Sign-up ----------------------------------------------------------------------------------


def test_signup_works_while_open(client):
    response = client.post("/accounts/signup/", {"username": "carol", "password1": PASSWORD, "password2": PASSWORD})
    assert response.status_code == 302
    assert get_user_model().objects.filter(username="carol").exists()


def test_closed_signup_says_so_and_creates_no_one(client, settings):
    settings.SIGNUP_OPEN = False
    page = client.get("/accounts/signup/")
    assert page.status_code == 403
    assert b"Sign-up is closed" in page.content
    response = client.post("/accounts/signup/", {"username": "carol", "password1": PASSWORD, "password2": PASSWORD})
    assert response.status_code == 403
    assert not get_user_model().objects.exists()
    assert b'data-testid="signup-link"' not in client.get("/accounts/login/").content


def test_login_page_links_to_signup_while_open(client):
    assert b'data-testid="signup-link"' in client.get("/accounts/login/").content


@pytest.mark.parametrize("password", ["password", "12345678", "short1", "carolcarol"])
def test_weak_passwords_are_refused(client, password):
    response = client.post("/accounts/signup/", {"username": "carolcarol", "password1": password, "password2": password})
    assert response.status_code == 200
    assert b"is-invalid" in response.content
    assert not get_user_model().objects.exists()


# --- Login throttle ---------------------------------------------------------------------------


def test_login_works(client, make_user):
    make_user("alice")
    response = login(client, "alice", PASSWORD)
    assert response.status_code == 302 and response["Location"] == "/"


def test_five_failures_make_the_form_ask_to_wait(client, make_user, settings):
    make_user("alice")
    for _ in range(settings.LOGIN_FAILURE_LIMIT):
        response = login(client, "alice", "wrong")
        assert response.status_code == 200
        assert b"Please enter a correct username and password" in response.content
    # Now even the right password is not checked.
    response = login(client, "alice", PASSWORD)
    assert response.status_code == 429
    assert b"Too many failed attempts to log in. Wait 15 minutes and try again." in response.content
    assert "_auth_user_id" not in client.session


def test_throttle_is_per_username_and_address(client, make_user, settings):
    make_user("alice")
    make_user("bob")
    for _ in range(settings.LOGIN_FAILURE_LIMIT):
        login(client, "alice", "wrong", ip="192.0.2.1")
    assert login(client, "ALICE ", PASSWORD, ip="192.0.2.1").status_code == 429  # same name, spelled otherwise
    assert login(Client(), "bob", PASSWORD, ip="192.0.2.1").status_code == 302  # another username
    assert login(Client(), "alice", PASSWORD, ip="198.51.100.7").status_code == 302  # another address


def test_throttle_ends_after_the_window(client, make_user, settings, monkeypatch):
    make_user("alice")
    for _ in range(settings.LOGIN_FAILURE_LIMIT):
        login(client, "alice", "wrong")
    assert login(client, "alice", PASSWORD).status_code == 429
    cache.clear()  # the window's keys expire with it
    assert login(client, "alice", PASSWORD).status_code == 302


def test_a_success_clears_the_failures(client, make_user, settings):
    make_user("alice")
    for _ in range(settings.LOGIN_FAILURE_LIMIT - 1):
        login(client, "alice", "wrong")
    assert login(client, "alice", PASSWORD).status_code == 302
    other = Client()
    for _ in range(settings.LOGIN_FAILURE_LIMIT - 1):
        assert login(other, "alice", "wrong").status_code == 200
    assert login(other, "alice", PASSWORD).status_code == 302


def test_wait_is_rounded_up_to_minutes(settings):
    settings.LOGIN_FAILURE_LIMIT = 1
    throttle = accounts.LoginThrottle("alice", "192.0.2.1")
    assert throttle.wait() is None
    throttle.failed()
    assert 14 * 60 < throttle.wait() <= 15 * 60
    throttle.clear()
    assert throttle.wait() is None


@pytest.mark.parametrize("hops, forwarded, expected", [
    (0, "203.0.113.9", "10.0.0.1"),  # no proxy trusted: the header is ignored
    (1, "203.0.113.9", "203.0.113.9"),
    (1, "6.6.6.6, 203.0.113.9", "203.0.113.9"),  # the client's own (forged) entry is skipped
    (2, "6.6.6.6, 203.0.113.9, 10.0.0.2", "203.0.113.9"),
    (2, "203.0.113.9", "10.0.0.1"),  # fewer entries than proxies: not trusted
])
def test_client_ip_trusts_only_the_proxies_it_is_told_of(settings, hops, forwarded, expected):
    settings.TRUSTED_PROXY_COUNT = hops
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=forwarded)
    assert accounts.client_ip(request) == expected


def test_admin_login_goes_through_the_throttled_login(client):
    response = client.get("/admin/login/?next=/admin/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/admin/")


# --- Settings page: API tokens ----------------------------------------------------------------


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def alice_client(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    return client


def csrf_post(client: Client, path: str, data: dict | None = None):
    client.get("/settings/")  # sets the CSRF cookie
    return client.post(path, {**(data or {}), "csrfmiddlewaretoken": client.cookies["csrftoken"].value})


def test_settings_needs_a_login(client):
    response = client.get("/settings/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_settings_lists_tokens_without_their_secret(alice, alice_client):
    token, raw = ApiToken.issue(alice, "laptop")
    ApiToken.issue(alice, "")
    page = alice_client.get("/settings/")
    assert page.status_code == 200
    body = page.content.decode()
    assert body.count('data-testid="token"') == 2
    assert "laptop" in body and token.key_hint in body and "(unnamed)" in body and "never" in body
    assert raw not in body
    assert "data-testid=\"usage\"" in body


def test_create_token_shows_it_once(alice, alice_client):
    response = csrf_post(alice_client, "/settings/tokens/", {"name": "terminal"})
    assert response.status_code == 201
    assert response["Cache-Control"] == "no-store"
    raw = response.context["raw_token"]
    assert raw.startswith(ApiToken.PREFIX) and raw in response.content.decode()
    assert ApiToken.user_for(raw) == alice
    token = ApiToken.objects.get(user=alice)
    assert token.name == "terminal" and token.key_hash != raw and raw.startswith(token.key_hint)
    assert raw not in alice_client.get("/settings/").content.decode()  # never again


def test_create_token_needs_csrf(alice, alice_client):
    assert alice_client.post("/settings/tokens/", {"name": "x"}).status_code == 403
    assert not ApiToken.objects.exists()


def test_token_name_too_long_is_refused(alice, alice_client):
    response = csrf_post(alice_client, "/settings/tokens/", {"name": "n" * 101})
    assert response.status_code == 400
    assert not ApiToken.objects.exists()


def test_token_count_is_capped(alice, alice_client):
    for _ in range(settings_page.MAX_TOKENS_PER_USER):
        ApiToken.issue(alice)
    response = csrf_post(alice_client, "/settings/tokens/", {"name": "one too many"})
    assert response.status_code == 400
    assert b"at most" in response.content
    assert ApiToken.objects.count() == settings_page.MAX_TOKENS_PER_USER


def test_revoke_token(alice, alice_client):
    token, raw = ApiToken.issue(alice, "old")
    response = csrf_post(alice_client, f"/settings/tokens/{token.pk}/revoke/")
    assert response.status_code == 302 and response["Location"] == "/settings/"
    assert not ApiToken.objects.filter(pk=token.pk).exists()
    assert ApiToken.user_for(raw) is None
    assert "revoked" in alice_client.get("/settings/").content.decode()


def test_revoke_needs_post_and_csrf(alice, alice_client):
    token, _ = ApiToken.issue(alice)
    assert alice_client.get(f"/settings/tokens/{token.pk}/revoke/").status_code == 405
    assert alice_client.post(f"/settings/tokens/{token.pk}/revoke/").status_code == 403
    assert ApiToken.objects.filter(pk=token.pk).exists()


def test_another_users_token_cannot_be_revoked(alice, make_user):
    bob = make_user("bob")
    token, raw = ApiToken.issue(alice, "alice's")
    bobs_client = Client(enforce_csrf_checks=True)
    bobs_client.force_login(bob)
    response = csrf_post(bobs_client, f"/settings/tokens/{token.pk}/revoke/")
    assert response.status_code == 404
    assert ApiToken.user_for(raw) == alice
    assert "alice's" not in bobs_client.get("/settings/").content.decode()
