"""The S3 store: one object per conversation, shared by every process with no lock."""
from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

from chat.store.contract import (
    ConversationExists,
    ConversationNotFound,
    ConversationStore,
    StorageUnavailable,
    conversation_key,
    decode,
    encode,
    parse_conversation_key,
)
from chat.transcript import Transcript

log = logging.getLogger(__name__)
_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
_NOT_FOUND_CODES = {"NoSuchKey", "404"}


def _error_code(exc: Exception) -> str:
    from botocore.exceptions import ClientError
    return str(exc.response.get("Error", {}).get("Code", "")) if isinstance(exc, ClientError) else ""


class S3Store(ConversationStore):
    """One JSON object per conversation at <prefix>conversations/<user id>/<id>.json.

    Writes are conditional (create: `IfNoneMatch="*"`, update: `IfMatch=etag`), so
    several processes can share the bucket with no lock and no lost update.
    """

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None,
                 region_name: str | None = None, client: Any = None) -> None:
        super().__init__()
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.endpoint_url = endpoint_url
        self.region_name = region_name
        self._client = client
        self._client_lock = threading.Lock()

    @property
    def client(self) -> Any:
        """Created on first use (boto3 clients are thread-safe, their creation is not)."""
        with self._client_lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                # Fail fast on a dead endpoint: seconds, not the default minutes.
                config = Config(connect_timeout=2, read_timeout=10,
                                retries={"total_max_attempts": 2, "mode": "standard"})
                self._client = boto3.session.Session().client(
                    "s3", endpoint_url=self.endpoint_url, region_name=self.region_name, config=config)
            return self._client

    def _key(self, user_id: int, conversation_id: str) -> str:
        try:
            return conversation_key(self.prefix, user_id, conversation_id)
        except ValueError as exc:
            raise ConversationNotFound(str(exc)) from exc

    def _call(self, method: str, conversation_id: str | None = None, **kwargs: Any) -> Any:
        """One counted request; backend failures become StorageUnavailable in plain words.

        Returns None for a conditional write that lost (412/409). NoSuchKey becomes
        ConversationNotFound.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        self._count()
        try:
            return getattr(self.client, method)(**kwargs)
        except ClientError as exc:
            code = _error_code(exc)
            if code in _CONFLICT_CODES and ("IfMatch" in kwargs or "IfNoneMatch" in kwargs):
                return None
            if code in _NOT_FOUND_CODES and conversation_id is not None:
                raise ConversationNotFound(f"conversation {conversation_id} not found") from exc
            raise StorageUnavailable(self._explain(code, exc)) from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(self._explain("", exc)) from exc

    def _explain(self, code: str, exc: Exception) -> str:
        from botocore.exceptions import ConnectionError, NoCredentialsError, ReadTimeoutError

        where = self.endpoint_url or "S3"
        if code == "NoSuchBucket":
            return f"the storage bucket {self.bucket!r} does not exist"
        if code in {"AccessDenied", "403"}:
            return f"access to the storage bucket {self.bucket!r} was denied"
        if code in {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}:
            return "the storage credentials were rejected"
        if isinstance(exc, NoCredentialsError):
            return "no storage credentials are configured"
        if isinstance(exc, ConnectionError):
            return f"cannot reach the storage service at {where}"
        if isinstance(exc, ReadTimeoutError):
            return f"the storage service at {where} did not answer in time"
        return f"the storage service failed: {code or exc}"

    def create(self, transcript: Transcript) -> None:
        body = encode(transcript)
        key = conversation_key(self.prefix, transcript.user_id, transcript.id)
        if self._call("put_object", Bucket=self.bucket, Key=key, Body=body,
                      ContentType="application/json", IfNoneMatch="*") is None:
            # Our own first attempt may have landed before a retry was refused: check.
            head = self._call("head_object", transcript.id, Bucket=self.bucket, Key=key)
            if not self._is_own_write(head.get("ETag"), body):
                raise ConversationExists(f"conversation {transcript.id} already exists")

    def _read(self, user_id: int, conversation_id: str) -> tuple[Transcript, str | None]:
        response = self._call("get_object", conversation_id, Bucket=self.bucket,
                              Key=self._key(user_id, conversation_id))
        try:
            data = response["Body"].read()
        except Exception as exc:  # the connection broke mid-body
            raise StorageUnavailable(f"cannot read conversation {conversation_id}: {exc}") from exc
        return decode(data, user_id, conversation_id), response["ETag"]

    def _write(self, user_id: int, conversation_id: str, body: bytes, version: str | None) -> bool:
        return self._call("put_object", conversation_id, Bucket=self.bucket, Key=self._key(user_id, conversation_id),
                          Body=body, ContentType="application/json", IfMatch=version) is not None

    def _is_own_write(self, version: str | None, body: bytes) -> bool:
        # A single-part upload's ETag is the MD5 of its body (not with SSE-KMS: then
        # this says False and the update is simply retried).
        return bool(version) and version.strip('"') == hashlib.md5(body).hexdigest()

    def delete(self, user_id: int, conversation_id: str) -> None:
        try:
            key = self._key(user_id, conversation_id)
        except ConversationNotFound:
            return  # a crafted id names nothing
        self._call("delete_object", Bucket=self.bucket, Key=key)

    def check(self) -> None:
        """One HeadBucket request: the bucket exists and these credentials may use it."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        self._count()
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = _error_code(exc)
            reason = {"404": "the bucket does not exist", "NoSuchBucket": "the bucket does not exist",
                      "403": "access to the bucket was denied", "AccessDenied": "access to the bucket was denied"}
            raise StorageUnavailable(reason.get(code, "the storage service refused the request")) from exc
        except NoCredentialsError as exc:
            raise StorageUnavailable("no storage credentials are configured") from exc
        except BotoCoreError as exc:
            raise StorageUnavailable("the storage service cannot be reached") from exc

    def iter_ids(self, user_id: int | None = None) -> Iterator[tuple[int, str]]:
        from botocore.exceptions import BotoCoreError, ClientError

        prefix = f"{self.prefix}conversations/"
        if user_id is not None:
            prefix = conversation_key(self.prefix, user_id, "x")[:-len("x.json")]  # checks the user id
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        try:
            for page in pages:
                self._count()
                for item in page.get("Contents", []):
                    try:
                        yield parse_conversation_key(self.prefix, item["Key"])
                    except ValueError:
                        log.debug("ignoring foreign key %r", item["Key"])
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable(self._explain(_error_code(exc), exc)) from exc
