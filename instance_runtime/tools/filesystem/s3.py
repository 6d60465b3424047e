"""`S3Storage`: the `Storage` contract (see the package docstring) over an S3 bucket (boto3).

`S3Config` mirrors PocketBase's `S3Config` (bucket, region, endpoint with or without a scheme,
`https://` assumed, access key, secret, force path style). boto3 is imported when an
`S3Storage` is built, never when this module is imported, so a runtime without S3 does not pay
for it. One client per storage (boto3 clients are thread-safe), with bounded retries and
timeouts, and checksums only where S3 requires them (as PocketBase's own client, for the
S3-compatible services that reject the newer trailers).

- `put` is `upload_file` (multipart above `MULTIPART_THRESHOLD`, `PART_SIZE` parts, at most
  `UPLOAD_CONCURRENCY` in flight: memory stays bounded by their product); the content type is
  the object's `Content-Type` and the metadata its `x-amz-meta-*` headers, as PocketBase's
  `s3blob` writes them (keys lower-cased, values escaped as Go's `url.PathEscape`, which
  PocketBase unescapes when it reads them); `md5` is not needed (S3 computes its own ETag). A
  failed multipart upload is aborted by the transfer manager.
- `open` is one `GetObject` with `Range: bytes=start-(end-1)`, read in chunks from the socket.
- `delete_prefix` lists `prefix/` and removes the keys with `DeleteObjects` (1000 per call).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from instance_runtime.tools.filesystem import (
    Entry,
    FileInfo,
    Reader,
    Storage,
    StorageError,
    check_key,
    check_prefix,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

MULTIPART_THRESHOLD = 8 << 20
PART_SIZE = 8 << 20
UPLOAD_CONCURRENCY = 2
_PATH_SAFE = "$&+:=@"  # with the unreserved characters, what Go's `url.PathEscape` keeps
_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})


@dataclass(frozen=True)
class S3Config:
    bucket: str
    region: str
    endpoint: str
    access_key: str
    secret: str
    force_path_style: bool = False

    @classmethod
    def from_settings(cls, raw: dict[str, Any]) -> S3Config:
        """From PocketBase's settings shape (`bucket, region, endpoint, accessKey, secret,
        forcePathStyle`)."""
        return cls(
            bucket=str(raw.get("bucket") or ""),
            region=str(raw.get("region") or ""),
            endpoint=str(raw.get("endpoint") or ""),
            access_key=str(raw.get("accessKey") or ""),
            secret=str(raw.get("secret") or ""),
            force_path_style=bool(raw.get("forcePathStyle")),
        )

    @property
    def endpoint_url(self) -> str | None:
        endpoint = self.endpoint.strip().rstrip("/")
        if not endpoint:
            return None
        if not endpoint.startswith(("http://", "https://")):
            endpoint = "https://" + endpoint
        return endpoint


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


class _BodyReader(Reader):
    def __init__(self, body: Any) -> None:
        self._body = body

    def read(self, n: int = -1) -> bytes:
        try:
            data: bytes = self._body.read(None if n < 0 else n)
        except Exception as exc:  # botocore/urllib3 read errors
            raise StorageError(str(exc)) from exc
        return data

    def close(self) -> None:
        self._body.close()


class _EmptyReader(Reader):
    def read(self, n: int = -1) -> bytes:
        return b""

    def close(self) -> None:
        return None


class S3Storage(Storage):
    """See the module docstring."""

    def __init__(self, config: S3Config) -> None:
        import boto3
        import botocore.exceptions
        from boto3.exceptions import S3UploadFailedError
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.config = config
        self.bucket = config.bucket
        style: Literal["path", "virtual"] = "path" if config.force_path_style else "virtual"
        self._client: S3Client = boto3.session.Session().client(
            "s3",
            endpoint_url=config.endpoint_url,
            region_name=config.region or None,
            aws_access_key_id=config.access_key,
            aws_secret_access_key=config.secret,
            config=Config(
                s3={"addressing_style": style},
                signature_version="s3v4",
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=10,
                read_timeout=60,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )
        self._transfer = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD,
            multipart_chunksize=PART_SIZE,
            max_concurrency=UPLOAD_CONCURRENCY,
        )
        self._errors: tuple[type[Exception], ...] = (
            botocore.exceptions.BotoCoreError,
            botocore.exceptions.ClientError,
            S3UploadFailedError,  # how the transfer manager reports a failed upload
        )

    def put(
        self,
        key: str,
        src_path: Path,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        md5: bytes | None = None,
    ) -> None:
        check_key(key)
        extra: dict[str, Any] = {}
        if content_type:
            extra["ContentType"] = content_type
        if metadata:
            extra["Metadata"] = {
                k.lower(): quote(v, _PATH_SAFE, errors="replace") for k, v in metadata.items()
            }
        try:
            self._client.upload_file(
                str(src_path), self.bucket, key, ExtraArgs=extra or None, Config=self._transfer
            )
        except self._errors as exc:
            raise StorageError(str(exc)) from exc
        Path(src_path).unlink(missing_ok=True)

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        check_key(key)
        try:
            if content_type:
                self._client.put_object(
                    Bucket=self.bucket, Key=key, Body=data, ContentType=content_type
                )
            else:
                self._client.put_object(Bucket=self.bucket, Key=key, Body=data)
        except self._errors as exc:
            raise StorageError(str(exc)) from exc

    def open(self, key: str, start: int = 0, end: int | None = None) -> Reader:
        check_key(key)
        if end is not None and end <= start:
            if not self.exists(key):
                raise FileNotFoundError(key)
            return _EmptyReader()
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if start or end is not None:
            args["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            response = self._client.get_object(**args)
        except self._errors as exc:
            if _code(exc) in _MISSING:
                raise FileNotFoundError(key) from exc
            raise StorageError(str(exc)) from exc
        return _BodyReader(response["Body"])

    def stat(self, key: str) -> FileInfo | None:
        check_key(key)
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=key)
        except self._errors as exc:
            if _code(exc) in _MISSING:
                return None
            raise StorageError(str(exc)) from exc
        modified = head.get("LastModified") or datetime.now(UTC)
        return FileInfo(
            int(head.get("ContentLength", 0)),
            modified.astimezone(UTC),
            head.get("ContentType") or None,
        )

    def delete(self, key: str) -> None:
        check_key(key)
        try:
            self._client.delete_object(Bucket=self.bucket, Key=key)
        except self._errors as exc:
            if _code(exc) not in _MISSING:
                raise StorageError(str(exc)) from exc

    def delete_prefix(self, prefix: str) -> None:
        keys = self.list_prefix(prefix)
        failed: list[str] = []
        for i in range(0, len(keys), 1000):
            batch: list[ObjectIdentifierTypeDef] = [{"Key": k} for k in keys[i : i + 1000]]
            try:
                answer = self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
            except self._errors as exc:
                raise StorageError(str(exc)) from exc
            for err in answer.get("Errors", []):
                failed.append(f"{err.get('Key')}: {err.get('Code')} {err.get('Message')}")
        if failed:
            raise StorageError("; ".join(failed))

    def list_prefix(self, prefix: str) -> list[str]:
        folder = check_prefix(prefix) + "/"
        keys: list[str] = []
        try:
            pages = self._client.get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=self.bucket, Prefix=folder):
                keys.extend(str(item["Key"]) for item in page.get("Contents", []))
        except self._errors as exc:
            raise StorageError(str(exc)) from exc
        return sorted(keys)

    def entries(self, prefix: str = "") -> list[Entry]:
        found: list[Entry] = []
        try:
            pages = self._client.get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    modified = item.get("LastModified") or datetime.now(UTC)
                    info = FileInfo(int(item.get("Size", 0)), modified.astimezone(UTC))
                    found.append(Entry(str(item["Key"]), info))
        except self._errors as exc:
            raise StorageError(str(exc)) from exc
        return sorted(found, key=lambda entry: entry.key)

    def close(self) -> None:
        self._client.close()
