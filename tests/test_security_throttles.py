"""Issue 16, items 3, 8 and 11: throttles on login look-alikes, sign-up and the old-password check,
and the smaller budget of new accounts."""
from __future__ import annotations

import datetime

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from chat import quotas
from chat.errors import ChatError
from tests.conftest import ECHO_MODEL

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def empty_cache():
    cache.clear()
    yield
    cache.clear()


def login(client: Client, username: str, password: str, ip: str = "192.0.2.1"):
    return client.post("/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=ip)


def signup(client: Client, username: str, ip: str = "192.0.2.1", password: str = PASSWORD):
    return client.post("/accounts/signup/", {"username": username, "password1": password, "password2": password},
                       REMOTE_ADDR=ip)


# --- Login: look-alike usernames, and many usernames from one address -------------------------


@pytest.mark.parametrize("look_alike", ["ｃａｒｏｌ", "𝐜arol", "CAROL", " carol"])
def test_look_alike_usernames_share_the_login_throttle(client, make_user, settings, look_alike):
    make_user("carol")
    for _ in range(settings.LOGIN_FAILURE_LIMIT):
        assert login(client, "carol", "wrong").status_code == 200
    assert login(Client(), look_alike, "also wrong").status_code == 429
    assert login(Client(), look_alike, PASSWORD).status_code == 429  # not checked, even when right


def test_look_alike_failures_count_against_the_plain_username(client, make_user, settings):
    make_user("carol")
    for spelling in ["ｃａｒｏｌ", "𝐜arol", "Carol", "ｃarol", "carol"][:settings.LOGIN_FAILURE_LIMIT]:
        assert login(client, spelling, "wrong").status_code == 200
    assert login(client, "carol", PASSWORD).status_code == 429


def test_one_address_guessing_over_many_usernames_is_throttled(client, make_user, settings):
    settings.LOGIN_FAILURE_LIMIT_PER_ADDRESS = 6
    make_user("zoe")
    for number in range(6):
        assert login(client, f"user{number}", "wrong").status_code == 200
    assert login(client, "zoe", PASSWORD).status_code == 429
    assert login(Client(), "zoe", PASSWORD, ip="198.51.100.7").status_code == 302  # another address


# --- Password change: the old-password check -------------------------------------------------


def change_password(client: Client, old: str):
    new = "another horse entirely 42"
    return client.post("/accounts/password_change/", {"old_password": old, "new_password1": new, "new_password2": new})


def test_wrong_old_passwords_are_throttled(client, make_user, settings):
    user = make_user("alice")
    client.force_login(user)
    for _ in range(settings.LOGIN_FAILURE_LIMIT):
        response = change_password(client, "wrong")
        assert response.status_code == 200 and b"Your old password was entered incorrectly" in response.content
    response = change_password(client, PASSWORD)
    assert response.status_code == 429 and b"Too many wrong passwords" in response.content
    user.refresh_from_db()
    assert user.check_password(PASSWORD), "the right old password was not even checked"


def test_right_old_password_changes_it(client, make_user):
    user = make_user("alice")
    client.force_login(user)
    assert change_password(client, PASSWORD).status_code == 302
    user.refresh_from_db()
    assert user.check_password("another horse entirely 42")


# --- Sign-up ---------------------------------------------------------------------------------------


def test_signups_from_one_address_are_throttled(settings):
    for number in range(settings.SIGNUP_LIMIT_PER_ADDRESS):
        assert signup(Client(), f"mallory{number}").status_code == 302
    response = signup(Client(), "mallory-more")
    assert response.status_code == 429 and b"Too many sign-ups from your network" in response.content
    assert not get_user_model().objects.filter(username="mallory-more").exists()
    assert signup(Client(), "neighbour", ip="198.51.100.7").status_code == 302  # another address


def test_failed_signups_do_not_use_up_the_allowance(settings):
    settings.SIGNUP_LIMIT_PER_ADDRESS = 1
    for _ in range(3):
        assert signup(Client(), "carol", password="short").status_code == 200
    assert signup(Client(), "carol").status_code == 302


def test_probing_taken_usernames_is_throttled(make_user, settings):
    settings.SIGNUP_TAKEN_LIMIT_PER_ADDRESS = 3
    for name in ["alice", "bob", "carol"]:
        make_user(name)
        response = signup(Client(), name)
        assert response.status_code == 200 and b"already exists" in response.content
    response = signup(Client(), "dave")
    assert response.status_code == 429 and b"already exists" not in response.content


def test_new_accounts_start_with_a_smaller_daily_budget(make_user, settings):
    settings.HF_NEW_ACCOUNT_DAYS, settings.HF_DAILY_REQUESTS_NEW_USER = 7, 2
    settings.HF_DAILY_REQUESTS_PER_USER, settings.HF_DAILY_REQUESTS_SITE = 100, 1000
    newcomer, regular = make_user("newcomer"), make_user("regular")
    get_user_model().objects.filter(pk=regular.pk).update(date_joined=timezone.now() - datetime.timedelta(days=8))
    regular.refresh_from_db()  # the account's age is read from the user object (every socket has one)
    assert quotas.usage(newcomer)["daily_requests"] == 2
    quotas.check_and_count(newcomer, ECHO_MODEL)
    quotas.check_and_count(newcomer, ECHO_MODEL)
    with pytest.raises(ChatError) as refusal:
        quotas.check_and_count(newcomer, ECHO_MODEL)
    assert refusal.value.code == "quota_exceeded" and "all 2 of today's requests" in refusal.value.message
    assert quotas.usage(regular)["daily_requests"] == 100
    for _ in range(10):
        quotas.check_and_count(regular.pk, ECHO_MODEL)  # by id, as the reply tasks count
    assert quotas.usage(regular)["used"] == 10
