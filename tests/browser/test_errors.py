"""Errors in plain words, in place: the provider's rate limit is not blamed on the user, and counts down."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect


@pytest.mark.browser
def test_a_providers_rate_limit_says_the_provider_is_busy_with_a_live_countdown(chat):
    chat.send("Busy provider #status=429 #retry_after=6")
    reply = chat.replies.first
    expect(reply).to_have_attribute("data-status", "failed")
    error = reply.get_by_test_id("message-error")
    expect(error).to_contain_text("provider is busy")
    expect(error).not_to_contain_text("too fast")
    expect(error).not_to_contain_text("HF_TOKEN")

    # The seconds go down by themselves, to 0.
    first = int(re.search(r"(\d+) s", error.inner_text()).group(1))
    assert 0 < first <= 6
    expect(error).to_contain_text(re.compile(rf"\b{first - 1} s\b"))
    expect(error).to_contain_text(re.compile(r"\b0 s\b"))
    expect(reply.get_by_test_id("regenerate")).to_be_enabled()


@pytest.mark.browser
def test_replies_name_their_model_by_its_label_not_its_id(chat):
    reply = chat.send_and_wait("Which model are you?")
    picker = chat.by("model-picker")
    model_id = picker.input_value()
    label = picker.locator(f'option[value="{model_id}"]').get_attribute("data-label")
    assert label and label != model_id, (label, model_id)  # the scripted model's label differs from its id
    expect(reply.locator(".message-model")).to_have_text(label)
    expect(reply).not_to_contain_text(model_id)
