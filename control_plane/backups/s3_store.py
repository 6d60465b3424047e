"""The S3 `BackupStore`: any S3-compatible bucket, through boto3.

- Configured by `PF_S3_ENDPOINT, PF_S3_BUCKET, PF_S3_REGION, PF_S3_ACCESS_KEY,
  PF_S3_SECRET_KEY, PF_S3_PATH_STYLE` (credentials fall back to boto3's usual chain).
- Files larger than `PF_S3_PART_SIZE_MB` go up as a multipart upload, part by part. Each S3
  call is retried on transient failures (connection errors, timeouts, 5xx, throttling) with
  exponential back-off (`PF_S3_RETRY_ATTEMPTS` tries, first wait `PF_S3_RETRY_WAIT_S`);
  botocore's own retries are off so that one policy applies.
- Verification: the object's ETag must equal the MD5 we computed over the bytes we sent (for
  multipart: MD5 of the parts' MD5s, `-N`), and its size the file's. (S3 and compatible
  servers compute these ETags for unencrypted and SSE-S3 objects.) The SHA-256 is kept as the
  object's `sha256` metadata.
- Optional checksums of newer SDKs are sent only when required, for compatibility with
  S3-compatible servers.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    ResponseStreamingError,
)
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from control_plane.backups.store import (
    BackupStore,
    ObjectInfo,
    Progress,
    StoreError,
    Uploaded,
    no_progress,
)
from control_plane.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.type_defs import HeadObjectOutputTypeDef

T = TypeVar("T")
_TRANSIENT_CODES = frozenset(
    {"SlowDown", "RequestTimeout", "Throttling", "InternalError", "ServiceUnavailable"}
)
_MAX_WAIT_S = 30.0
LITESTREAM_TIMESTAMP = "litestream-timestamp"  # Litestream's metadata: an LTX file's header time
_CHUNK = 1 << 20


def transient(exc: BaseException) -> bool:
    """Whether an S3 failure is worth another try."""
    if isinstance(exc, HTTPClientError | IncompleteReadError | ResponseStreamingError):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = exc.response.get("Error", {}).get("Code", "")
        return status >= 500 or code in _TRANSIENT_CODES
    return False


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Store(BackupStore):
    kind = "s3"

    def __init__(self, settings: Settings) -> None:
        if not settings.s3_bucket:
            raise StoreError("PF_S3_BUCKET is not set")
        self.settings = settings
        self.bucket = settings.s3_bucket
        self.part_size = settings.s3_part_size_mb * 1024 * 1024
        self.client: S3Client = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.s3_endpoint or None,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key or None,
            aws_secret_access_key=settings.s3_secret_key or None,
            config=Config(
                s3={"addressing_style": "path" if settings.s3_path_style else "auto"},
                retries={"total_max_attempts": 1},
                connect_timeout=5,
                read_timeout=60,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    # ----- retries

    def _call(self, what: str, action: Callable[[], T]) -> T:
        """Run one S3 call with the retry policy; failures become `StoreError`."""
        retrying = Retrying(
            retry=retry_if_exception(transient),
            stop=stop_after_attempt(self.settings.s3_retry_attempts),
            wait=wait_exponential(multiplier=self.settings.s3_retry_wait_s, max=_MAX_WAIT_S),
            reraise=True,
        )
        try:
            return retrying(action)
        except (ClientError, BotoCoreError, RetryError, OSError) as exc:
            raise StoreError(f"S3 {what} failed: {exc}") from exc

    # ----- the BackupStore contract

    def describe(self) -> str:
        where = f" at {self.settings.s3_endpoint}" if self.settings.s3_endpoint else ""
        return f"s3://{self.bucket}{where}"

    def ensure_ready(self) -> None:
        self._call("HeadBucket", lambda: self.client.head_bucket(Bucket=self.bucket))

    def upload(
        self,
        key: str,
        source: Path,
        sha256: str,
        *,
        on_started: Callable[[str], None] | None = None,
        progress: Progress = no_progress,
    ) -> Uploaded:
        size = source.stat().st_size
        metadata = {"sha256": sha256}
        if size <= self.part_size:
            body = source.read_bytes()
            etag = hashlib.md5(body, usedforsecurity=False).hexdigest()
            self._call(
                f"PutObject {key}",
                lambda: self.client.put_object(
                    Bucket=self.bucket, Key=key, Body=body, Metadata=metadata
                ),
            )
            progress(size)
        else:
            etag = self._multipart(key, source, size, metadata, on_started, progress)
        self._verify(key, size, etag)
        return Uploaded(key, size, sha256)

    def _multipart(
        self,
        key: str,
        source: Path,
        size: int,
        metadata: dict[str, str],
        on_started: Callable[[str], None] | None,
        progress: Progress,
    ) -> str:
        created = self._call(
            f"CreateMultipartUpload {key}",
            lambda: self.client.create_multipart_upload(
                Bucket=self.bucket, Key=key, Metadata=metadata
            ),
        )
        upload_id = created["UploadId"]
        try:
            if on_started is not None:
                on_started(upload_id)
            parts: list[dict[str, Any]] = []
            digests = b""
            with source.open("rb") as handle:
                for number, offset in enumerate(range(0, size, self.part_size), start=1):
                    handle.seek(offset)
                    chunk = handle.read(self.part_size)
                    digests += hashlib.md5(chunk, usedforsecurity=False).digest()
                    answer = self._call(
                        f"UploadPart {number} of {key}",
                        lambda chunk=chunk, number=number: self.client.upload_part(  # type: ignore[misc]
                            Bucket=self.bucket,
                            Key=key,
                            UploadId=upload_id,
                            PartNumber=number,
                            Body=chunk,
                        ),
                    )
                    parts.append({"ETag": answer["ETag"], "PartNumber": number})
                    progress(len(chunk))
            self._call(
                f"CompleteMultipartUpload {key}",
                lambda: self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                ),
            )
        except BaseException:
            with contextlib.suppress(StoreError):  # recorded; a later cleanup aborts it
                self.abort(key, upload_id)
            raise
        count = len(parts)
        return f"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{count}"

    def _verify(self, key: str, size: int, etag: str) -> None:
        head = self._call(
            f"HeadObject {key}", lambda: self.client.head_object(Bucket=self.bucket, Key=key)
        )
        got_etag = head.get("ETag", "").strip('"')
        got_size = head.get("ContentLength", -1)
        if got_size != size or got_etag != etag:
            raise StoreError(
                f"{key}: stored object does not match what was sent "
                f"(size {got_size} vs {size}, ETag {got_etag} vs {etag})"
            )

    def abort(self, key: str, upload_id: str) -> None:
        def run() -> None:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except ClientError as exc:
                if _error_code(exc) not in ("NoSuchUpload", "404"):
                    raise

        self._call(f"AbortMultipartUpload {key}", run)

    def stat(self, key: str) -> ObjectInfo | None:
        head = self._head(key)
        return ObjectInfo(key, head["ContentLength"], head["LastModified"]) if head else None

    def download(self, key: str, dest: Path, *, progress: Progress = no_progress) -> int:
        def run() -> int:
            answer = self.client.get_object(Bucket=self.bucket, Key=key)
            size = 0
            with dest.open("wb") as out:
                for chunk in answer["Body"].iter_chunks(_CHUNK):
                    out.write(chunk)
                    size += len(chunk)
                    progress(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            return size

        return self._call(f"GetObject {key}", run)

    def iter_bytes(self, key: str, chunk_size: int = _CHUNK) -> Iterator[bytes]:
        answer = self._call(
            f"GetObject {key}", lambda: self.client.get_object(Bucket=self.bucket, Key=key)
        )
        body = answer["Body"]
        try:
            yield from body.iter_chunks(chunk_size)
        except (BotoCoreError, OSError) as exc:
            raise StoreError(f"S3 GetObject {key} broke off: {exc}") from exc
        finally:
            body.close()

    def delete(self, key: str) -> None:
        self._call(
            f"DeleteObject {key}", lambda: self.client.delete_object(Bucket=self.bucket, Key=key)
        )

    def list(self, prefix: str) -> list[ObjectInfo]:
        def run() -> list[ObjectInfo]:
            found: list[ObjectInfo] = []
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    found.append(ObjectInfo(item["Key"], item["Size"], item["LastModified"]))
            return found

        return self._call(f"ListObjectsV2 {prefix}", run)

    def replica_times(self, objects: Sequence[ObjectInfo]) -> dict[str, datetime]:
        """Litestream stores each LTX file's header time as the object's
        `litestream-timestamp` metadata and reads it back for timestamp restores (falling
        back to the listed upload time, as here, for files written without it)."""
        found: dict[str, datetime] = {}
        for item in objects:
            head = self._head(item.key)
            if head is None:
                continue
            stamp = head.get("Metadata", {}).get(LITESTREAM_TIMESTAMP)
            try:
                found[item.key] = datetime.fromisoformat(stamp) if stamp else item.modified
            except ValueError:
                found[item.key] = item.modified
        return found

    def _head(self, key: str) -> HeadObjectOutputTypeDef | None:
        """HeadObject of `key`, or None when it does not exist."""

        def run() -> HeadObjectOutputTypeDef | None:
            try:
                return self.client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise

        return self._call(f"HeadObject {key}", run)

    def replica_config(self, path: str) -> dict[str, object]:
        config: dict[str, object] = {
            "type": "s3",
            "bucket": self.bucket,
            "path": path,
            "region": self.settings.s3_region,
            "force-path-style": self.settings.s3_path_style,
        }
        if self.settings.s3_endpoint:
            config["endpoint"] = self.settings.s3_endpoint
        return config

    def replica_env(self) -> dict[str, str]:
        env = {"AWS_REGION": self.settings.s3_region}
        if self.settings.s3_access_key and self.settings.s3_secret_key:
            env["AWS_ACCESS_KEY_ID"] = self.settings.s3_access_key
            env["AWS_SECRET_ACCESS_KEY"] = self.settings.s3_secret_key
        return env
