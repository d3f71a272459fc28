"""Accounts: throttled login, sign-up and password change (the settings page: chat/settings_page.py).

Throttles (counters in Django's cache, chat/throttle.py: Redis when REDIS_URL is set,
shared by every process, else per process memory), each answering HTTP 429 with how
long to wait, before any password is checked:
- login: `LOGIN_FAILURE_LIMIT` failures per identity (the username as login resolves
  it, so look-alike spellings count together) and client address, and
  `LOGIN_FAILURE_LIMIT_PER_ADDRESS` per address, within `LOGIN_FAILURE_WINDOW`
  seconds. A successful login clears its identity's counter;
- password change: wrong old passwords per user, with the login's limit and window;
- sign-up: accounts, and "username taken" answers, per client address and `SIGNUP_WINDOW`.

The password change has no page of its own: its form is on the settings page
(chat/settings_page.py), which it renders again with the form's errors, and after a
change it goes back there with the user still logged in (Django keeps the session valid
for its new password; every other browser session, and its sockets, is closed: chat/credentials.py).
"""
from __future__ import annotations

import math

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.forms import AuthenticationForm, PasswordChangeForm, UserCreationForm
from django.contrib.auth.views import LoginView, PasswordChangeView, redirect_to_login
from django.core.exceptions import ValidationError
from django.forms.forms import NON_FIELD_ERRORS
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from chat.throttle import Throttle, identity, longest_wait

# --- Login throttle ---------------------------------------------------------------


def client_ip(request: HttpRequest) -> str:
    """The client's address: REMOTE_ADDR, or the entry of X-Forwarded-For that the
    nearest trusted proxy added (`TRUSTED_PROXY_COUNT` proxies append to it; entries
    further left are whatever the client sent, and can be forged)."""
    hops = settings.TRUSTED_PROXY_COUNT
    if hops > 0:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if len(forwarded) >= hops:
            return forwarded[-hops]
    return request.META.get("REMOTE_ADDR", "")


class LoginThrottle:
    """Failed logins per (identity, client address), and per client address alone.

    The identity is the username as login resolves it (NFKC, case folded: see
    chat/throttle.py `identity`), so look-alike spellings share one counter; the
    per-address counter stops one address from spraying guesses over many accounts.
    """

    def __init__(self, username: str, ip: str) -> None:
        window = settings.LOGIN_FAILURE_WINDOW
        self.pair = Throttle("login", f"{identity(username)}\0{ip}", settings.LOGIN_FAILURE_LIMIT, window)
        self.address = Throttle("login-address", ip, settings.LOGIN_FAILURE_LIMIT_PER_ADDRESS, window)

    def wait(self) -> int | None:
        """Seconds to wait before another try is checked, or None."""
        return longest_wait(self.pair, self.address)

    def failed(self) -> None:
        self.pair.hit()
        self.address.hit()

    def clear(self) -> None:
        """A success forgives this identity's failures, not the address's."""
        self.pair.clear()


def wait_in_words(seconds: int) -> str:
    minutes = math.ceil(seconds / 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


class ThrottledAuthenticationForm(AuthenticationForm):
    """Refuses before checking the password while the throttle says wait."""

    wait: int | None = None

    def clean(self):
        if self.wait is not None:
            raise ValidationError(
                "Too many failed attempts to log in. Wait %(wait)s and try again.",
                code="throttled", params={"wait": wait_in_words(self.wait)})
        return super().clean()


class ThrottledLoginView(LoginView):
    form_class = ThrottledAuthenticationForm

    def get_form(self, form_class=None):
        form = super().get_form(form_class)
        self.throttle = None
        if self.request.method == "POST":
            self.throttle = LoginThrottle(self.request.POST.get("username", ""), client_ip(self.request))
            form.wait = self.throttle.wait()
        return form

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs), "signup_open": settings.SIGNUP_OPEN}

    def form_valid(self, form):
        self.throttle.clear()
        return super().form_valid(form)

    def form_invalid(self, form):
        if form.has_error(NON_FIELD_ERRORS, "throttled"):
            return self.render_to_response(self.get_context_data(form=form), status=429)
        if form.has_error(NON_FIELD_ERRORS, "invalid_login"):
            self.throttle.failed()
        return super().form_invalid(form)


class ThrottledPasswordChangeForm(PasswordChangeForm):
    """Refuses before checking the old password while the user's throttle says wait."""

    wait: int | None = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Its form sits mid-way down the settings page: autofocus would scroll the page to it.
        self.fields["old_password"].widget.attrs.pop("autofocus", None)

    def clean_old_password(self):
        if self.wait is not None:
            raise ValidationError("Too many wrong passwords. Wait %(wait)s and try again.",
                                  code="throttled", params={"wait": wait_in_words(self.wait)})
        return super().clean_old_password()


def password_throttle(user) -> Throttle:
    """Wrong passwords typed by a logged-in user (changing the password, deleting the
    account): one counter for both, with the login's limit and window."""
    return Throttle("password-change", str(user.pk), settings.LOGIN_FAILURE_LIMIT, settings.LOGIN_FAILURE_WINDOW)


class ThrottledPasswordChangeView(PasswordChangeView):
    """A stolen session must not become a free password oracle: wrong old passwords
    count per user (`password_throttle`). Its form lives on the settings page."""

    form_class = ThrottledPasswordChangeForm

    def get_form(self, form_class=None):
        form = super().get_form(form_class)
        self.throttle = password_throttle(self.request.user)
        if self.request.method == "POST":
            form.wait = self.throttle.wait()
        return form

    def get(self, request, *args, **kwargs):
        return redirect(self.get_success_url())

    def get_success_url(self) -> str:
        return f"{reverse('chat:settings')}#password-heading"

    def form_valid(self, form):
        response = super().form_valid(form)  # keeps this session logged in, with the new password
        messages.success(self.request, "Your password was changed. Browsers signed in with the old one are "
                                       "signed out; your API tokens still work.", extra_tags="password")
        return response

    def form_invalid(self, form):
        from chat.settings_page import render_settings  # the page imports this module's form

        if form.has_error("old_password", "throttled"):
            return render_settings(self.request, password_form=form, status=429)
        if form.has_error("old_password", "password_incorrect"):
            self.throttle.hit()
        return render_settings(self.request, password_form=form)


# --- Sign-up ----------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """Sign-up, throttled per client address: `SIGNUP_LIMIT_PER_ADDRESS` accounts, and
    `SIGNUP_TAKEN_LIMIT_PER_ADDRESS` answers of "that username is taken" (which is how
    the form lets anyone learn that a username exists), per `SIGNUP_WINDOW`."""
    if not settings.SIGNUP_OPEN:
        return render(request, "registration/signup_closed.html", status=403)
    ip = client_ip(request)
    accounts = Throttle("signup", ip, settings.SIGNUP_LIMIT_PER_ADDRESS, settings.SIGNUP_WINDOW)
    probes = Throttle("signup-taken", ip, settings.SIGNUP_TAKEN_LIMIT_PER_ADDRESS, settings.SIGNUP_WINDOW)
    form = UserCreationForm(request.POST or None)
    if request.method == "POST":
        wait = longest_wait(accounts, probes)
        if wait is not None:
            refusal = f"Too many sign-ups from your network. Wait {wait_in_words(wait)} and try again."
            return render(request, "registration/signup.html", {"form": UserCreationForm(), "refusal": refusal},
                          status=429)
        if form.is_valid():
            user = form.save()
            accounts.hit()
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            return redirect("chat:index")
        if form.has_error("username", "unique"):
            probes.hit()
    return render(request, "registration/signup.html", {"form": form})


def admin_login(request: HttpRequest) -> HttpResponse:
    """The admin's own login would not be throttled: send it to this one."""
    return redirect_to_login(request.GET.get("next") or reverse("admin:index"))
