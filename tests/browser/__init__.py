"""Browser tests: the chat page in a real Chromium (Playwright) against a real daphne."""
