"""An S3 prefix as a batch source and as an export destination (boto3; MinIO and other S3-compatible stores via `endpoint_url`).

Both blocks offer the methods, and the semantics, of their local twins in `blocks/local.py`
(`LocalDirectory`, `LocalFolder`); see `blocks/resolve.py` for the `Source` and `Destination`
protocols. A prefix is a folder: `invoices` and `invoices/` both mean the keys under `invoices/`.

Why not prefect-aws's `S3Bucket`: its `list_objects` collects the whole listing into one list
(we stream pages of 1,000 keys), it has no "write a local file, publish it whole on commit"
object nor an append-only journal, and prefect-aws itself would downgrade the locked botocore
(see `blocks/aws.py`).
"""

from __future__ import annotations

import contextlib
import logging
import mimetypes
import os
import re
import tempfile
import threading
import weakref
from collections.abc import Iterator
from datetime import timezone
from pathlib import Path
from typing import Any, ClassVar

from prefect.blocks.core import Block
from pydantic import Field

from blocks.aws import MAX_ATTEMPTS, AwsCredentials
from blocks.errors import DocumentError, SourceUnavailable
from blocks.local import _guess_type, matches, published
from blocks.models import DocumentRef, ErrorKind

log = logging.getLogger("docbatch.s3")

PAGE_SIZE = 1000  # S3's own maximum per list request
# Storage classes whose objects must be restored before a GET works (GLACIER_IR reads directly).
ARCHIVED = frozenset({"GLACIER", "DEEP_ARCHIVE"})

# Error codes, as S3 and S3-compatible stores send them. A HEAD answer has no body, so botocore
# reports its bare HTTP status ("403") as the code: the listing calls below are GETs for that reason.
_NO_BUCKET = frozenset({"NoSuchBucket"})
_DENIED = frozenset({"AccessDenied", "AllAccessDisabled", "AccountProblem", "403"})
_BAD_CREDENTIALS = frozenset({
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired",
    "InvalidClientTokenId", "RequestTimeTooSkewed", "InvalidSecurity",
})
_WRONG_REGION = frozenset({"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException", "301"})
_TRANSIENT = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests", "RequestTimeout",
    "RequestTimeoutException", "ServiceUnavailable", "InternalError", "InternalServerError", "500", "502", "503", "504",
})


def _folder(prefix: str) -> str:
    """'invoices', '/invoices/' → 'invoices/'; '' → '' (the whole bucket)."""
    prefix = prefix.strip().strip("/")
    return f"{prefix}/" if prefix else ""


def _client(credentials: AwsCredentials | None, region: str | None, endpoint_url: str | None) -> Any:
    return (credentials or AwsCredentials()).get_s3_client(region_name=region, endpoint_url=endpoint_url)


def _error(exc: Exception) -> tuple[str, int | None, dict[str, Any]]:
    """(code, HTTP status, response) of a botocore ClientError."""
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code") or "")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code, status, response


def _bucket_region(response: dict[str, Any]) -> str | None:
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    return headers.get("x-amz-bucket-region") or response.get("Error", {}).get("Region")


class S3Source(Block):
    """The objects under an S3 prefix form one batch.

    Listed with `list_objects_v2` a page (1,000 keys) at a time, in the order S3 returns keys:
    UTF-8 binary order of the full key, stable from one listing to the next (general purpose
    buckets; S3 Express directory buckets do not sort). Skipped like folders and hidden files
    locally: keys ending in '/' (folder markers and the zero-byte placeholders consoles create),
    Hadoop-style `name_$folder$` placeholders, and keys with a path segment starting with '.'.
    A zero-byte object with a file name (`empty.pdf`) is a document: it fails as `empty` later.
    Objects archived in GLACIER or DEEP_ARCHIVE are listed as refused (restore them first).

    Example:
        ```python
        from blocks.s3 import S3Source

        S3Source(bucket="acme-inbox", prefix="invoices/2024", include=["*.pdf"]).save("invoices")
        # docbatch run s3-source/invoices
        ```
    """

    _block_type_name: ClassVar[str] = "S3 Source"
    _block_type_slug: ClassVar[str] = "s3-source"
    _description: ClassVar[str] = "The objects under an S3 prefix (AWS, MinIO or another S3-compatible store) as a batch."

    bucket: str = Field(description="Bucket name, e.g. 'acme-inbox' (no 's3://').")
    prefix: str = Field(default="", description="Folder inside the bucket, e.g. 'invoices/2024'; empty reads the whole bucket.")
    region: str | None = Field(default=None, description="The bucket's AWS region, e.g. 'eu-west-1'; empty uses the credentials' region or the default chain.")
    endpoint_url: str | None = Field(default=None, description="Endpoint of an S3-compatible store, e.g. 'http://minio:9000'; empty for AWS.")
    include: list[str] = Field(default_factory=list, description="Glob patterns a key must match (any of), relative to the prefix; empty means all objects.")
    exclude: list[str] = Field(default_factory=list, description="Glob patterns that drop a key (any of), relative to the prefix.")
    recursive: bool = Field(default=True, description="Also read keys in 'sub-folders' (keys with a further '/' after the prefix).")
    credentials: AwsCredentials | None = Field(default=None, description="Saved AWS credentials block; empty uses boto3's default chain (environment, profile, instance role).")

    @property
    def folder(self) -> str:
        return _folder(self.prefix)

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.folder}"

    def _client(self) -> Any:
        from botocore.exceptions import BotoCoreError

        try:
            return _client(self.credentials, self.region, self.endpoint_url)
        except (BotoCoreError, ValueError) as exc:  # an unknown profile, half a key pair
            raise self._unavailable(exc) from None

    def check(self) -> None:
        """Raise `SourceUnavailable` (one line, a `reason`) unless the prefix can be listed, before any work.

        One `ListObjectsV2` of at most one key: it needs what the batch needs (s3:ListBucket on
        the prefix) and, unlike `HeadBucket`, its errors come with a code that tells a missing
        bucket from denied access, rejected credentials and a wrong region.
        """
        if not self.bucket.strip():
            raise SourceUnavailable("no S3 bucket given", reason="bucket_missing")
        from botocore.exceptions import BotoCoreError, ClientError

        client = self._client()
        try:
            client.list_objects_v2(Bucket=self.bucket, Prefix=self.folder, MaxKeys=1)
        except (ClientError, BotoCoreError) as exc:  # every answer or failure of S3 becomes one line
            raise self._unavailable(exc, client) from None

    def _unavailable(self, exc: Exception, client: Any = None) -> SourceUnavailable:
        """One line a user can act on, with the reason the CLI maps to an exit code. Never a secret."""
        from botocore.exceptions import (
            ClientError, ConnectionError, HTTPClientError, NoCredentialsError, ParamValidationError,
            PartialCredentialsError, ProfileNotFound,
        )

        where = self.describe()
        endpoint = self.endpoint_url or (client.meta.endpoint_url if client is not None else "AWS S3")
        if isinstance(exc, ClientError):
            code, status, response = _error(exc)
            if code in _NO_BUCKET or (code == "404" and status == 404):
                return SourceUnavailable(f"S3 bucket {self.bucket!r} does not exist (at {endpoint})", reason="bucket_missing")
            if code in _BAD_CREDENTIALS:
                why = {
                    "InvalidAccessKeyId": "the access key ID is unknown",
                    "InvalidClientTokenId": "the access key ID is unknown",
                    "SignatureDoesNotMatch": "the secret access key does not match the access key ID",
                    "ExpiredToken": "the session token has expired",
                    "TokenRefreshRequired": "the session token has expired",
                    "RequestTimeTooSkewed": "this machine's clock is too far off for signed requests",
                }.get(code, "the session token is invalid")
                return SourceUnavailable(f"S3 rejected the credentials for {where}: {why} ({code})", reason="bad_credentials")
            if code in _WRONG_REGION or status in (301, 307):
                actual = _bucket_region(response)
                hint = f"it is in {actual}: set region to {actual!r}" if actual else "set the bucket's region"
                return SourceUnavailable(f"S3 bucket {self.bucket!r} is in another region than the client's ({code or status}): {hint}", reason="wrong_region")
            if code in _DENIED or status == 403:
                return SourceUnavailable(
                    f"access denied listing {where} ({code or status}): the credentials need s3:ListBucket on this bucket and prefix",
                    reason="access_denied",
                )
            if code in _TRANSIENT or (status or 0) >= 500:
                return SourceUnavailable(f"S3 is not answering for {where} ({code or status} after {MAX_ATTEMPTS} attempts): try again later", reason="unreachable")
            return SourceUnavailable(f"S3 refused to list {where}: {code or status}", reason="unavailable")
        if isinstance(exc, (ConnectionError, HTTPClientError)):
            return SourceUnavailable(
                f"cannot reach S3 at {endpoint} ({type(exc).__name__} after {MAX_ATTEMPTS} attempts): check endpoint_url, the network and any proxy",
                reason="unreachable",
            )
        if isinstance(exc, NoCredentialsError):
            return SourceUnavailable(
                "no AWS credentials found: give the source a credentials block, or set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE",
                reason="bad_credentials",
            )
        if isinstance(exc, ProfileNotFound):
            return SourceUnavailable(f"AWS profile {exc.kwargs.get('profile')!r} is not configured on this machine", reason="bad_credentials")
        if isinstance(exc, PartialCredentialsError):
            return SourceUnavailable(f"AWS credentials are incomplete: {exc.kwargs.get('cred_var')} is missing", reason="bad_credentials")
        if isinstance(exc, ValueError) and "credentials" in str(exc):
            return SourceUnavailable(str(exc), reason="bad_credentials")  # our own message, from AwsCredentials
        if isinstance(exc, ParamValidationError):
            return SourceUnavailable(f"{self.bucket!r} is not a valid S3 bucket name", reason="bucket_missing")
        return SourceUnavailable(f"cannot list {where}: {type(exc).__name__}", reason="unavailable")

    def iter_documents(self) -> Iterator[DocumentRef]:
        """Yield documents in S3's key order, one listed page (1,000 keys) in memory at a time."""
        self.check()
        client = self._client()
        root = self.folder
        arguments: dict[str, Any] = {"Bucket": self.bucket, "Prefix": root, "PaginationConfig": {"PageSize": PAGE_SIZE}}
        if not self.recursive:
            arguments["Delimiter"] = "/"  # keys in sub-folders come back as CommonPrefixes, ignored
        index = 0
        from botocore.exceptions import BotoCoreError, ClientError

        pages = iter(client.get_paginator("list_objects_v2").paginate(**arguments))
        while True:
            try:
                page = next(pages)
            except StopIteration:
                return
            except (ClientError, BotoCoreError) as exc:  # failed past botocore's retries, mid-listing
                raise self._unavailable(exc, client) from None
            for item in page.get("Contents", ()):
                key: str = item["Key"]
                name = key[len(root):]
                size = int(item.get("Size", 0))
                if not name or key.endswith("/") or (size == 0 and key.endswith("_$folder$")):
                    continue  # folder markers and placeholders
                if any(segment.startswith(".") for segment in name.split("/")):
                    continue
                if not matches(name, self.include, self.exclude):
                    continue
                storage = item.get("StorageClass")
                modified = item.get("LastModified")
                # Validated: pydantic-core is faster than `model_construct` (see blocks.local).
                yield DocumentRef(
                    index=index,
                    uri=f"s3://{self.bucket}/{key}",
                    name=name,
                    size=size,
                    modified=modified.astimezone(timezone.utc) if modified is not None else None,
                    fingerprint=str(item.get("ETag", "")).strip('"'),
                    media_type=_guess_type(os.path.splitext(name)[1].lower()),
                    refused=f"archived in {storage}: restore the object before reading it" if storage in ARCHIVED else None,
                )
                index += 1

    def read(self, ref: DocumentRef, max_bytes: int) -> tuple[bytes, list[str]]:
        """Bytes of one object (one GET), plus a warning when its ETag changed since listing."""
        from botocore.exceptions import BotoCoreError, ClientError

        head = f"s3://{self.bucket}/"
        if not ref.uri.startswith(head):
            raise DocumentError(ErrorKind.refused, f"{ref.uri!r} is not in bucket {self.bucket!r}")
        key = ref.uri[len(head):]
        if ref.size > max_bytes:
            raise DocumentError(ErrorKind.too_large, f"{ref.size:,} bytes, over the limit of {max_bytes:,}")
        try:
            client = _client(self.credentials, self.region, self.endpoint_url)
            response = client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            raise _read_error(exc) from None
        except BotoCoreError as exc:  # connections and timeouts, after botocore's retries
            raise _backend(exc) from None
        except ValueError as exc:  # incomplete credentials (our own message, no secret)
            raise DocumentError(ErrorKind.backend, str(exc)) from None
        body = response["Body"]
        try:
            length = response.get("ContentLength")
            if length is not None and length > max_bytes:
                raise DocumentError(ErrorKind.too_large, f"{length:,} bytes, over the limit of {max_bytes:,} (grew after listing)")
            data = body.read((length if length is not None else max_bytes) + 1)
        except DocumentError:
            raise
        except Exception as exc:  # noqa: BLE001 - the body stream broke (reset, timeout)
            raise _backend(exc) from None
        finally:
            body.close()
        if len(data) > max_bytes:
            raise DocumentError(ErrorKind.too_large, f"grew past the limit of {max_bytes:,} bytes while being read")
        warnings = []
        if str(response.get("ETag", "")).strip('"') != ref.fingerprint:
            warnings.append("modified after listing; extracted as it is now")
        return data, warnings


def _read_error(exc: Exception) -> DocumentError:
    code, status, _ = _error(exc)
    if code in ("NoSuchKey", "404") or status == 404:
        if code == "NoSuchBucket":
            return DocumentError(ErrorKind.vanished, "the bucket was deleted after the object was listed")
        return DocumentError(ErrorKind.vanished, "the object was deleted or renamed after it was listed")
    if code == "InvalidObjectState":
        return DocumentError(ErrorKind.refused, "the object is archived (GLACIER or DEEP_ARCHIVE): restore it before reading it")
    if code in _BAD_CREDENTIALS:
        return DocumentError(ErrorKind.backend, f"S3 rejected the credentials ({code})")
    if code in _DENIED or status == 403:
        return DocumentError(ErrorKind.permission_denied, f"access denied reading the object ({code or status}): the credentials need s3:GetObject")
    transient = code in _TRANSIENT or status in (408, 429) or (status or 0) >= 500
    return DocumentError(ErrorKind.backend, f"S3 answered {code or status} reading the object", transient=transient)


def _backend(exc: Exception) -> DocumentError:
    """Connection resets, timeouts and broken streams: worth another try later."""
    return DocumentError(ErrorKind.backend, f"S3 connection failed reading the object ({type(exc).__name__})", transient=True)


class S3Destination(Block):
    """An S3 prefix that receives one 'folder' per batch: exports, report.json and the checkpoint.

    Exports are written to a local temporary file and uploaded whole when complete: a PUT (or the
    completion of a multipart upload) is atomic, so readers see the previous object or the whole
    new one, never a part. The checkpoint journal is uploaded in numbered segments (S3 cannot
    append), at most every 2 seconds and on close.

    Example:
        ```python
        from blocks.s3 import S3Destination

        S3Destination(bucket="acme-results", prefix="docbatch").save("results")
        ```
    """

    _block_type_name: ClassVar[str] = "S3 Destination"
    _block_type_slug: ClassVar[str] = "s3-destination"
    _description: ClassVar[str] = "An S3 prefix (AWS, MinIO or another S3-compatible store) that receives a batch's exports."

    bucket: str = Field(description="Bucket name, e.g. 'acme-results' (no 's3://').")
    prefix: str = Field(default="", description="Folder inside the bucket that receives one sub-folder per batch, e.g. 'docbatch'.")
    region: str | None = Field(default=None, description="The bucket's AWS region, e.g. 'eu-west-1'; empty uses the credentials' region or the default chain.")
    endpoint_url: str | None = Field(default=None, description="Endpoint of an S3-compatible store, e.g. 'http://minio:9000'; empty for AWS.")
    credentials: AwsCredentials | None = Field(default=None, description="Saved AWS credentials block; empty uses boto3's default chain (environment, profile, instance role).")

    def _client(self) -> Any:
        return _client(self.credentials, self.region, self.endpoint_url)

    def _key(self, *parts: str) -> str:
        return "/".join(s for s in (self.prefix.strip().strip("/"), *(p.strip("/") for p in parts)) if s)

    def location(self, *parts: str) -> str:
        return f"s3://{self.bucket}/{self._key(*parts)}"

    def check(self) -> None:
        """Raise `SourceUnavailable` (one line, a `reason`) unless the prefix can be listed, before any work.

        The same probe and messages as the S3 source: a missing bucket, rejected credentials,
        denied access, a wrong region or an unreachable endpoint stop the batch before any
        document is read. Write permission itself is only proven by the first upload.
        """
        S3Source(
            bucket=self.bucket, prefix=self.prefix, region=self.region, endpoint_url=self.endpoint_url, credentials=self.credentials
        ).check()

    def link(self, *parts: str) -> str | None:
        """A browser URL for the exports: the store's own URL, or the AWS console's."""
        key = self._key(*parts)
        if self.endpoint_url:
            return f"{self.endpoint_url.rstrip('/')}/{self.bucket}/{key}"
        from urllib.parse import quote

        return f"https://s3.console.aws.amazon.com/s3/buckets/{self.bucket}?prefix={quote(key.rstrip('/') + '/')}"

    @contextlib.contextmanager
    def atomic_path(self, *parts: str) -> Iterator[Path]:
        """A local temporary path to write; uploaded to `parts` only if the block exits cleanly."""
        with published(self.open_atomic(*parts)) as path:
            yield path

    def open_atomic(self, *parts: str) -> S3AtomicUpload:
        """A local file written over time and published under its key by `commit()`."""
        return S3AtomicUpload(self._client(), self.bucket, self._key(*parts))

    def exists(self, *parts: str) -> bool:
        """An object with this key, or (like a local folder) any object under `key/`."""
        from botocore.exceptions import ClientError

        client, key = self._client(), self._key(*parts)
        if parts:
            try:
                client.head_object(Bucket=self.bucket, Key=key)
                return True
            except ClientError as exc:
                if _error(exc)[1] != 404:
                    raise
        listed = client.list_objects_v2(Bucket=self.bucket, Prefix=f"{key}/" if key else "", MaxKeys=1)
        return bool(listed.get("KeyCount", len(listed.get("Contents", ()))))

    def _subfolders(self, *parts: str) -> Iterator[str]:
        """Names of the 'folders' (common prefixes) directly under the one at `parts`."""
        root = _folder(self._key(*parts))
        pages = self._client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=root, Delimiter="/")
        for page in pages:
            for common in page.get("CommonPrefixes", ()):
                yield common["Prefix"][len(root):].rstrip("/")

    def batch_folders(self) -> list[str]:
        """Names of the batch 'folders' (common prefixes) under this destination, sorted."""
        return sorted(name for name in self._subfolders() if name and not name.startswith("."))

    def _body(self, *parts: str) -> Any | None:
        """The streaming body of the object at `parts`, or None when there is none."""
        from botocore.exceptions import ClientError

        try:
            return self._client().get_object(Bucket=self.bucket, Key=self._key(*parts))["Body"]
        except ClientError as exc:
            if _error(exc)[1] == 404 or _error(exc)[0] == "NoSuchKey":
                return None
            raise

    def read_text(self, *parts: str) -> str | None:
        """A whole object under this destination (a report.json), or None when there is none."""
        body = self._body(*parts)
        return None if body is None else body.read().decode("utf-8")

    def stream_lines(self, *parts: str) -> Iterator[str] | None:
        """The lines of an object, read as they arrive (a large report.json), or None when there is none."""
        body = self._body(*parts)
        return None if body is None else (line.decode("utf-8") for line in body.iter_lines())

    def create_exclusive(self, *parts: str, body: str = "") -> bool:
        """Create a small object only if none exists (S3 conditional write, If-None-Match: *)."""
        from botocore.exceptions import ClientError

        try:
            self._client().put_object(Bucket=self.bucket, Key=self._key(*parts), Body=body.encode(), IfNoneMatch="*")
        except ClientError as exc:
            if _error(exc)[1] in (409, 412) or _error(exc)[0] in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise
        return True

    def delete(self, *parts: str) -> None:
        self._client().delete_object(Bucket=self.bucket, Key=self._key(*parts))

    def open_journal(self, *parts: str) -> S3JournalFile:
        """Append-only lines (the batch's checkpoint), uploaded as numbered segments under `<key>.d/`."""
        return S3JournalFile(self._client(), self.bucket, self._key(*parts))

    def read_lines(self, *parts: str) -> Iterator[str] | None:
        """The lines of the journal at `parts` (all its segments, in order), or None when it has none."""
        client, key = self._client(), self._key(*parts)
        segments = _segments(client, self.bucket, key)
        if not segments:
            return None
        return _segment_lines(client, self.bucket, [k for _, k in segments])

    def list_journals(self, *parts: str) -> list[str]:
        """Names of the journals directly under the 'folder' at `parts` (each a `<name>.d/` of segments)."""
        return sorted(name[: -len(".d")] for name in self._subfolders(*parts) if name.endswith(".jsonl.d"))

    def read_new_lines(self, *parts: str, cursor: int = 0) -> tuple[list[str], int]:
        """The lines of the journal's segments numbered above `cursor`, and the last number read.

        Segments are whole objects (`S3JournalFile` uploads each once), so every line is complete.
        """
        client, key = self._client(), self._key(*parts)
        fresh = [(number, name) for number, name in _segments(client, self.bucket, key) if number > cursor]
        if not fresh:
            return [], cursor
        lines = [line.rstrip("\n") for line in _segment_lines(client, self.bucket, [name for _, name in fresh])]
        return lines, fresh[-1][0]

    def delete_folder(self, *parts: str) -> None:
        """Delete every object under the 'folder' at `parts` (a batch's segments once merged)."""
        client, root = self._client(), _folder(self._key(*parts))
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=root):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", ())]
            if keys:
                client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})

    def remove_temporaries(self, *parts: str) -> None:
        """Nothing to do: temporaries live on the worker's disk and are never uploaded.

        An export reaches S3 only by `commit()`, whole; an interrupted run leaves no object
        behind (only, after a kill, a file in the worker's temporary folder).
        """


def _content_type(key: str) -> str:
    return mimetypes.guess_type(key)[0] or ("application/x-ndjson" if key.endswith(".jsonl") else "application/octet-stream")


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


class S3AtomicUpload:
    """A local temporary file, uploaded to its key by `commit()` (`upload_file`: multipart past 8 MB).

    Until then nothing exists at the key beyond the previous object; `abort()` (also safe after
    a commit) deletes the temporary without uploading it.
    """

    def __init__(self, client: Any, bucket: str, key: str) -> None:
        self._client, self.bucket, self.key = client, bucket, key
        name = key.rsplit("/", 1)[-1]
        fd, temporary = tempfile.mkstemp(prefix="docbatch-s3-", suffix=f"-{name}")
        os.close(fd)
        self.path = Path(temporary)
        self.committed = False
        self._cleanup = weakref.finalize(self, _unlink, temporary)  # dropped without abort(): still removed

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def commit(self) -> None:
        self._client.upload_file(str(self.path), self.bucket, self.key, ExtraArgs={"ContentType": _content_type(self.key)})
        self.committed = True
        self._cleanup()

    def abort(self) -> None:
        if not self.committed:
            self._cleanup()


_SEGMENT = re.compile(r"(\d+)\.jsonl\Z")


def _segments(client: Any, bucket: str, key: str) -> list[tuple[int, str]]:
    """(number, key) of the journal's segment objects, in number order."""
    found = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{key}.d/"):
        for item in page.get("Contents", ()):
            match = _SEGMENT.match(item["Key"].rsplit("/", 1)[-1])
            if match:
                found.append((int(match.group(1)), item["Key"]))
    return sorted(found)


def _segment_lines(client: Any, bucket: str, keys: list[str]) -> Iterator[str]:
    from botocore.exceptions import ClientError

    for key in keys:
        try:
            body = client.get_object(Bucket=bucket, Key=key)["Body"]
        except ClientError as exc:
            if _error(exc)[1] == 404:
                continue  # deleted since the listing (the journal was discarded meanwhile)
            raise
        with contextlib.closing(body):
            yield from body.read().decode("utf-8", errors="replace").splitlines(keepends=True)


class S3JournalFile:
    """Append-only lines on S3, which cannot append: a local file cut into numbered segments.

    `append` writes to a local file at once; a background thread uploads what was appended as
    the next segment (`<key>.d/000001.jsonl`, each a complete object) at most every
    `FLUSH_INTERVAL_S` seconds, and `close` uploads the rest. A killed process loses at most the
    last interval's lines, which a resumed run extracts again. Upload failures are logged and
    retried at the next interval, segments kept in order.
    """

    FLUSH_INTERVAL_S = 2.0

    def __init__(self, client: Any, bucket: str, key: str) -> None:
        self._client, self.bucket, self.key = client, bucket, key
        existing = _segments(client, bucket, key)
        self.fresh = not existing
        self._next = (existing[-1][0] if existing else 0) + 1
        self._lock = threading.Lock()  # the local file being appended to
        self._upload_lock = threading.Lock()  # one upload at a time, segments in order
        self._waiting: list[tuple[int, str]] = []  # (number, local file) cut but not uploaded yet
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._path, self._handle = self._new_file()
        self._lines = 0

    @staticmethod
    def _new_file() -> tuple[str, Any]:
        fd, path = tempfile.mkstemp(prefix="docbatch-journal-", suffix=".jsonl")
        return path, os.fdopen(fd, "w", encoding="utf-8")

    def _segment_key(self, number: int) -> str:
        return f"{self.key}.d/{number:06d}.jsonl"

    def append(self, line: str) -> None:
        with self._lock:
            if self._closed:
                raise ValueError(f"journal s3://{self.bucket}/{self.key} is closed")
            self._handle.write(line)
            self._handle.flush()
            self._lines += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="docbatch-s3-journal", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.FLUSH_INTERVAL_S):
            self._flush(reopen=True)

    def _cut(self, reopen: bool) -> None:
        """Close the local file as the next segment (if it holds lines); call with `_lock` held."""
        if self._lines or not reopen:
            self._handle.close()
            if self._lines:
                self._waiting.append((self._next, self._path))
                self._next += 1
            else:
                _unlink(self._path)
            if reopen:
                self._path, self._handle = self._new_file()
                self._lines = 0

    def _flush(self, reopen: bool) -> bool:
        """Upload every cut segment, oldest first; False (logged) when one failed."""
        with self._upload_lock:
            with self._lock:
                if self._handle.closed:
                    return True
                self._cut(reopen)
            while self._waiting:
                number, path = self._waiting[0]
                try:
                    with open(path, "rb") as handle:
                        self._client.put_object(Bucket=self.bucket, Key=self._segment_key(number), Body=handle, ContentType="application/x-ndjson")
                except Exception as exc:  # noqa: BLE001 - the checkpoint is best effort; the batch goes on
                    log.warning("Checkpoint segment %s not uploaded yet (%s); retrying", self._segment_key(number), type(exc).__name__)
                    return False
                _unlink(path)
                self._waiting.pop(0)
            return True

    def _stop_thread(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def close(self) -> None:
        """Upload what is left and stop; a final upload failure is logged (the lines are then lost)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop_thread()
        if not self._flush(reopen=False):
            log.warning("Checkpoint s3://%s/%s lost its last lines: a resumed run extracts those documents again", self.bucket, self.key)
        for _, path in self._waiting:
            _unlink(path)
        self._waiting.clear()

    def delete(self) -> None:
        """Stop without uploading, and delete every segment of this journal."""
        with self._lock:
            self._closed = True
            if not self._handle.closed:
                self._handle.close()
            _unlink(self._path)
        self._stop_thread()
        with self._upload_lock:
            for _, path in self._waiting:
                _unlink(path)
            self._waiting.clear()
        keys = [key for _, key in _segments(self._client, self.bucket, self.key)]
        for start in range(0, len(keys), 1000):
            self._client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys[start:start + 1000]], "Quiet": True}
            )
