"""S3 source and destination against a real S3 API (moto's server, over HTTP, through boto3)."""

from __future__ import annotations

import hashlib
import json
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.stub import Stubber

import blocks.s3
from blocks.aws import AwsCredentials
from blocks.errors import DocumentError, SourceUnavailable
from blocks.models import BatchReport, BatchTotals, DocumentRef, DocumentResult, ErrorKind, ExportFormat
from blocks.resolve import Destination, Source
from blocks.s3 import S3Destination, S3JournalFile, S3Source
from tasks.exports import write_exports
from tasks.journal import JournalHeader, SegmentTail, SegmentWriter, find_resumable

JOURNAL_NAME = "journal.jsonl"
from tests.s3_server import REGION, iam_authentication, s3_endpoint  # noqa: F401 - s3_endpoint is a fixture

SECRET = "docbatch/TEST+secret-KEY-4d2f9a"  # must never show anywhere
CREDENTIALS = AwsCredentials(aws_access_key_id="AKIADOCBATCHTEST", aws_secret_access_key=SECRET, region_name=REGION)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def no_secret(*texts: object) -> None:
    for text in texts:
        assert SECRET not in str(text) and SECRET not in repr(text)


@pytest.fixture(scope="module")
def s3(s3_endpoint: str) -> Any:
    """A plain boto3 client, to set the scene."""
    return boto3.client(
        "s3", endpoint_url=s3_endpoint, region_name=REGION, aws_access_key_id="setup", aws_secret_access_key="setup",
        config=Config(max_pool_connections=16),
    )


@pytest.fixture()
def bucket(s3: Any) -> str:
    name = f"docbatch-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def source(endpoint: str, bucket: str, **options: Any) -> S3Source:
    return S3Source(bucket=bucket, endpoint_url=endpoint, credentials=CREDENTIALS, **options)


def destination(endpoint: str, bucket: str, prefix: str = "out") -> S3Destination:
    return S3Destination(bucket=bucket, prefix=prefix, endpoint_url=endpoint, credentials=CREDENTIALS)


def keys(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", ())]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


# --- listing ---------------------------------------------------------------------------------


def test_listing_streams_pages_over_a_thousand_keys_in_s3_order(s3_endpoint: str, s3: Any, bucket: str) -> None:
    bodies = {f"batch/{n % 7}/doc-{n:05d}.txt": f"document {n}".encode() for n in range(1050)}
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda item: s3.put_object(Bucket=bucket, Key=item[0], Body=item[1]), bodies.items()))
    src = source(s3_endpoint, bucket, prefix="batch")
    assert isinstance(src, Source) and src.describe() == f"s3://{bucket}/batch/"
    calls: list[str] = []
    client = src._client()
    handler = lambda **_: calls.append("list")  # noqa: E731
    client.meta.events.register("before-call.s3.ListObjectsV2", handler)
    try:
        refs = src.iter_documents()
        first = next(refs)
        assert len(calls) == 2  # check() and the first page only: the rest is not fetched yet
        refs = [first, *refs]
    finally:
        client.meta.events.unregister("before-call.s3.ListObjectsV2", handler)
    assert len(calls) == 1 + 2  # check() + two pages of at most 1,000 keys
    expected = sorted(bodies, key=lambda k: k.encode())  # S3's order: UTF-8 bytes of the key
    assert [r.uri for r in refs] == [f"s3://{bucket}/{k}" for k in expected]
    assert [r.name for r in refs] == [k.removeprefix("batch/") for k in expected]
    assert [r.index for r in refs] == list(range(1050))
    assert all(r.fingerprint == md5(bodies[r.uri.split("/", 3)[3]]) for r in refs)  # the ETag, no quotes
    assert all(r.size == len(bodies[r.uri.split("/", 3)[3]]) and r.modified is not None for r in refs)
    assert refs[0].media_type == "text/plain"


@pytest.fixture()
def messy(s3: Any, bucket: str) -> str:
    scene = {
        "inbox/": b"",  # the console's folder marker
        "inbox/sub/": b"",
        "inbox/odd-marker/": b"not empty, still a folder",
        "inbox/sub_$folder$": b"",  # Hadoop's placeholder
        "inbox/a.pdf": b"%PDF-1.4 a",
        "inbox/empty.pdf": b"",  # a real, empty document
        "inbox/sub/b.txt": b"bee",
        "inbox/.hidden.pdf": b"x",
        "inbox/.git/config": b"x",
        "inbox/sub/.cache/c.txt": b"x",
        "inboxes/not-this.pdf": b"x",  # a sibling that shares the prefix's characters
        "other/c.pdf": b"x",
    }
    for key, body in scene.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    s3.put_object(Bucket=bucket, Key="inbox/cold.pdf", Body=b"x", StorageClass="GLACIER")
    return bucket


def names(src: S3Source) -> list[str]:
    return [r.name for r in src.iter_documents()]


def test_listing_skips_markers_placeholders_and_hidden_keys_but_keeps_empty_files(s3_endpoint: str, messy: str) -> None:
    refs = list(source(s3_endpoint, messy, prefix="/inbox").iter_documents())
    assert [r.name for r in refs] == ["a.pdf", "cold.pdf", "empty.pdf", "sub/b.txt"]
    empty = refs[2]
    assert empty.size == 0 and empty.fingerprint == md5(b"") and empty.refused is None
    assert refs[1].refused and "GLACIER" in refs[1].refused  # skipped by the batch with a reason
    with pytest.raises(DocumentError) as archived:
        source(s3_endpoint, messy, prefix="inbox").read(refs[1], 100)
    assert archived.value.kind == ErrorKind.refused
    assert names(source(s3_endpoint, messy, prefix="inbox", recursive=False)) == ["a.pdf", "cold.pdf", "empty.pdf"]
    assert names(source(s3_endpoint, messy, prefix="inbox", include=["*.pdf"], exclude=["cold*"])) == ["a.pdf", "empty.pdf"]
    assert names(source(s3_endpoint, messy, prefix="inbox", include=["sub/*"])) == ["sub/b.txt"]
    assert names(source(s3_endpoint, messy, prefix="inbox", exclude=["sub/*", "*.PDF"])) == []
    assert names(source(s3_endpoint, messy))[:2] == ["inbox/a.pdf", "inbox/cold.pdf"]  # the whole bucket


# --- reading ---------------------------------------------------------------------------------


def test_read_gets_the_bytes_and_classifies_what_changed_since_listing(s3_endpoint: str, s3: Any, bucket: str) -> None:
    for name in ("same.txt", "gone.txt", "edited.txt", "grown.txt", "big.txt"):
        s3.put_object(Bucket=bucket, Key=f"in/{name}", Body=b"0123456789")
    src = source(s3_endpoint, bucket, prefix="in")
    refs = {r.name: r for r in src.iter_documents()}
    s3.delete_object(Bucket=bucket, Key="in/gone.txt")
    s3.put_object(Bucket=bucket, Key="in/edited.txt", Body=b"9876543210")
    s3.put_object(Bucket=bucket, Key="in/grown.txt", Body=b"0123456789" * 10)

    assert src.read(refs["same.txt"], 100) == (b"0123456789", [])
    data, warnings = src.read(refs["edited.txt"], 100)
    assert data == b"9876543210" and warnings == ["modified after listing; extracted as it is now"]
    errors = {}
    for name, limit in (("gone.txt", 100), ("big.txt", 9), ("grown.txt", 50)):
        with pytest.raises(DocumentError) as caught:
            src.read(refs[name], limit)
        errors[name] = caught.value
        no_secret(caught.value, caught.value.message)
    assert errors["gone.txt"].kind == ErrorKind.vanished and not errors["gone.txt"].transient
    assert errors["big.txt"].kind == ErrorKind.too_large and "10 bytes" in errors["big.txt"].message  # refused before any GET
    assert errors["grown.txt"].kind == ErrorKind.too_large and "100 bytes" in errors["grown.txt"].message  # by ContentLength


def stubbed(monkeypatch: pytest.MonkeyPatch) -> Stubber:
    """Canned S3 answers through a real client, for what moto cannot produce (regions, throttling)."""
    client = boto3.client("s3", region_name=REGION, aws_access_key_id="stub", aws_secret_access_key=SECRET)
    monkeypatch.setattr(blocks.s3, "_client", lambda *_: client)
    stubber = Stubber(client)
    stubber.activate()
    return stubber


def test_read_errors_past_retries_are_transient_backend_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    stubber = stubbed(monkeypatch)
    src = S3Source(bucket="acme", credentials=CREDENTIALS)
    ref = DocumentRef(index=0, uri="s3://acme/a.pdf", name="a.pdf", size=3, fingerprint="e")
    stubber.add_client_error("get_object", "SlowDown", "Please reduce your request rate.", 503)
    stubber.add_client_error("get_object", "AccessDenied", "Access Denied", 403)
    stubber.add_client_error("get_object", "InternalError", "We encountered an internal error.", 500)
    outcomes = []
    for _ in range(3):
        with pytest.raises(DocumentError) as caught:
            src.read(ref, 100)
        outcomes.append((caught.value.kind, caught.value.transient))
        no_secret(caught.value)
    assert outcomes == [(ErrorKind.backend, True), (ErrorKind.permission_denied, False), (ErrorKind.backend, True)]


def test_read_from_an_unreachable_endpoint_is_a_transient_backend_error() -> None:
    src = source(f"http://127.0.0.1:{closed_port()}", "acme")
    ref = DocumentRef(index=0, uri="s3://acme/a.pdf", name="a.pdf", size=3, fingerprint="e")
    with pytest.raises(DocumentError) as caught:
        src.read(ref, 100)
    assert caught.value.kind == ErrorKind.backend and caught.value.transient
    no_secret(caught.value)


# --- check(): one line per cause, before any work -------------------------------------------------


def unavailable(src: S3Source) -> SourceUnavailable:
    with pytest.raises(SourceUnavailable) as caught:
        src.check()
    message = str(caught.value)
    assert "\n" not in message and message
    no_secret(caught.value, caught.value.__context__)
    return caught.value


def test_check_passes_and_names_a_missing_bucket_and_an_unreachable_endpoint(s3_endpoint: str, bucket: str) -> None:
    source(s3_endpoint, bucket, prefix="nothing/yet").check()
    missing = unavailable(source(s3_endpoint, "no-such-bucket-here"))
    assert missing.reason == "bucket_missing"
    assert str(missing) == f"S3 bucket 'no-such-bucket-here' does not exist (at {s3_endpoint})"
    port = closed_port()
    started = time.monotonic()
    down = unavailable(source(f"http://127.0.0.1:{port}", bucket))
    assert down.reason == "unreachable"
    assert str(down).startswith(f"cannot reach S3 at http://127.0.0.1:{port} (EndpointConnectionError after 4 attempts)")
    assert time.monotonic() - started < 15  # botocore's backoff: at most 1 + 2 + 4 s
    with pytest.raises(SourceUnavailable) as listing:
        next(source(s3_endpoint, "no-such-bucket-here").iter_documents())
    assert listing.value.reason == "bucket_missing"


def test_check_tells_rejected_credentials_from_denied_access(s3_endpoint: str, s3: Any, bucket: str) -> None:
    iam = boto3.client("iam", endpoint_url=s3_endpoint, region_name=REGION, aws_access_key_id="setup", aws_secret_access_key="setup")
    users = {}
    for role, policy in (("reader", {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}), ("nobody", None)):
        user = f"{role}-{uuid.uuid4().hex[:8]}"
        iam.create_user(UserName=user)
        key = iam.create_access_key(UserName=user)["AccessKey"]
        users[role] = AwsCredentials(aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
        if policy:
            deny = {"Effect": "Deny", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/in/private.pdf"}
            iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [policy, deny]}))
    for name in ("open.pdf", "private.pdf"):
        s3.put_object(Bucket=bucket, Key=f"in/{name}", Body=b"x")

    def with_credentials(credentials: AwsCredentials) -> S3Source:
        return S3Source(bucket=bucket, prefix="in", endpoint_url=s3_endpoint, credentials=credentials)

    reader = users["reader"]
    wrong_secret = reader.model_copy(update={"aws_secret_access_key": CREDENTIALS.aws_secret_access_key})
    with iam_authentication(s3_endpoint):
        unknown = unavailable(source(s3_endpoint, bucket))  # AKIADOCBATCHTEST does not exist in moto's IAM
        mismatch = unavailable(with_credentials(wrong_secret))
        denied = unavailable(with_credentials(users["nobody"]))
        allowed = with_credentials(reader)
        allowed.check()
        refs = {r.name: r for r in allowed.iter_documents()}
        assert allowed.read(refs["open.pdf"], 10) == (b"x", [])
        with pytest.raises(DocumentError) as private:
            allowed.read(refs["private.pdf"], 10)
    assert (unknown.reason, mismatch.reason, denied.reason) == ("bad_credentials", "bad_credentials", "access_denied")
    assert str(unknown) == f"S3 rejected the credentials for s3://{bucket}/: the access key ID is unknown (InvalidAccessKeyId)"
    assert str(mismatch) == (
        f"S3 rejected the credentials for s3://{bucket}/in/: the secret access key does not match the access key ID (SignatureDoesNotMatch)"
    )
    assert str(denied) == (
        f"access denied listing s3://{bucket}/in/ (AccessDenied): the credentials need s3:ListBucket on this bucket and prefix"
    )
    assert private.value.kind == ErrorKind.permission_denied and not private.value.transient


def test_check_names_the_right_region_of_a_bucket_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    stubber = stubbed(monkeypatch)
    stubber.add_client_error(
        "list_objects_v2", "PermanentRedirect", "The bucket you are attempting to access must be addressed using the specified endpoint.",
        301, response_meta={"HTTPHeaders": {"x-amz-bucket-region": "eu-west-1"}},
    )
    stubber.add_client_error("list_objects_v2", "AuthorizationHeaderMalformed", "the region 'us-east-1' is wrong", 400)
    stubber.add_client_error("list_objects_v2", "SlowDown", "Please reduce your request rate.", 503)
    first, second, busy = (unavailable(S3Source(bucket="acme")) for _ in range(3))
    assert (first.reason, second.reason, busy.reason) == ("wrong_region", "wrong_region", "unreachable")
    assert str(first) == "S3 bucket 'acme' is in another region than the client's (PermanentRedirect): it is in eu-west-1: set region to 'eu-west-1'"
    assert str(second).endswith("(AuthorizationHeaderMalformed): set the bucket's region")
    # S3 names the region in the error body of AuthorizationHeaderMalformed (a Stubber cannot).
    error = ClientError({"Error": {"Code": "AuthorizationHeaderMalformed", "Region": "ap-south-1"}, "ResponseMetadata": {"HTTPStatusCode": 400}}, "ListObjectsV2")
    assert str(S3Source(bucket="acme")._unavailable(error)).endswith("set region to 'ap-south-1'")
    assert str(busy) == "S3 is not answering for s3://acme/ (SlowDown after 4 attempts): try again later"


def test_default_chain_and_missing_credentials(s3_endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    nothing = unavailable(S3Source(bucket=bucket, endpoint_url=s3_endpoint, region="eu-north-1"))  # a region no other test caches
    assert nothing.reason == "bad_credentials" and str(nothing).startswith("no AWS credentials found")
    profile = unavailable(S3Source(bucket=bucket, endpoint_url=s3_endpoint, credentials=AwsCredentials(profile_name="nope")))
    assert (profile.reason, str(profile)) == ("bad_credentials", "AWS profile 'nope' is not configured on this machine")
    half = unavailable(S3Source(bucket=bucket, credentials=AwsCredentials(aws_secret_access_key=SECRET)))
    assert half.reason == "bad_credentials" and "aws_access_key_id is empty" in str(half)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-env")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-env")
    S3Source(bucket=bucket, endpoint_url=s3_endpoint, region="ap-northeast-3", credentials=AwsCredentials(aws_access_key_id="")).check()


def test_clients_retry_with_backoff_time_out_and_use_path_style_on_custom_endpoints(s3_endpoint: str) -> None:
    client = source(s3_endpoint, "acme")._client()
    config = client.meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": 4}
    assert (config.connect_timeout, config.read_timeout, config.max_pool_connections) == (10.0, 60.0, 64)
    assert config.s3 == {"addressing_style": "path"} and client.meta.endpoint_url == s3_endpoint
    assert client is source(s3_endpoint, "other-bucket")._client()  # one client per settings, shared
    aws = S3Source(bucket="acme", region="eu-west-3", credentials=CREDENTIALS)._client()
    assert aws.meta.region_name == "eu-west-3" and aws.meta.config.s3 is None


def test_secrets_never_show_in_blocks_or_errors(s3_endpoint: str) -> None:
    session = AwsCredentials(aws_access_key_id="AKIA1", aws_secret_access_key=SECRET, aws_session_token=SECRET + "-token")
    blocks_ = [session, CREDENTIALS, source(s3_endpoint, "acme"), S3Destination(bucket="acme", credentials=session)]
    for block in blocks_:
        no_secret(block, block.model_dump(mode="json"), block.model_dump_json(), block.model_dump())
    assert session.model_dump(mode="json")["aws_secret_access_key"] == "**********"
    assert session.aws_secret_access_key.get_secret_value() == SECRET  # still usable
    errors = [unavailable(source(s3_endpoint, "no-such-bucket-here"))]
    with pytest.raises(Exception) as caught:
        destination(s3_endpoint, "no-such-bucket-here").batch_folders()
    errors.append(caught.value)
    no_secret(*errors, *(e.args for e in errors))


# --- destination -------------------------------------------------------------------------------


def test_open_atomic_publishes_only_on_commit(s3_endpoint: str, s3: Any, bucket: str) -> None:
    out = destination(s3_endpoint, bucket, prefix="/results/")
    assert isinstance(out, Destination)
    assert out.location("b1", "report.json") == f"s3://{bucket}/results/b1/report.json"
    pending = out.open_atomic("b1", "documents.csv")
    pending.path.write_text("a,b\n1,2\n")
    assert not out.exists("b1", "documents.csv") and keys(s3, bucket) == []
    pending.commit()
    pending.abort()  # after a commit: nothing to undo
    assert pending.committed and not pending.path.exists()
    assert s3.get_object(Bucket=bucket, Key="results/b1/documents.csv")["Body"].read() == b"a,b\n1,2\n"
    assert out.exists("b1", "documents.csv") and out.exists("b1") and out.exists()
    assert not out.exists("b1", "nothing.csv") and not out.exists("b2")

    aborted = out.open_atomic("b1", "documents.json")
    aborted.path.write_text("[]")
    aborted.abort()
    assert not aborted.committed and not aborted.path.exists()
    with pytest.raises(RuntimeError):
        with out.atomic_path("b1", "documents.xlsx") as path:
            path.write_bytes(b"half")
            raise RuntimeError("the writer failed")
    assert not path.exists()
    never = out.open_atomic("b1", "documents.jsonl")
    never.path.write_text("{}\n")
    del never  # neither committed nor aborted: the temporary goes with the object
    out.remove_temporaries("b1")  # nothing to do on S3
    assert keys(s3, bucket) == ["results/b1/documents.csv"]


def test_batch_folders_are_the_common_prefixes(s3_endpoint: str, s3: Any, bucket: str) -> None:
    for key in ("out/2024-01-02-b/report.json", "out/2024-01-01-a/x/y.csv", "out/.hidden/x", "out/loose.txt", "elsewhere/z/x"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    assert destination(s3_endpoint, bucket).batch_folders() == ["2024-01-01-a", "2024-01-02-b"]
    assert destination(s3_endpoint, bucket, prefix="").batch_folders() == ["elsewhere", "out"]
    assert destination(s3_endpoint, bucket, prefix="none").batch_folders() == []


def test_journal_segments_round_trip(s3_endpoint: str, s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(S3JournalFile, "FLUSH_INTERVAL_S", 0.1)
    out = destination(s3_endpoint, bucket)
    assert out.read_lines("b1", JOURNAL_NAME) is None
    journal = out.open_journal("b1", JOURNAL_NAME)
    assert journal.fresh
    journal.append("header\n")
    journal.append("one\n")
    deadline = time.monotonic() + 10
    while not keys(s3, bucket) and time.monotonic() < deadline:
        time.sleep(0.05)  # the background upload, without waiting for close()
    assert keys(s3, bucket) == ["out/b1/journal.jsonl.d/000001.jsonl"]
    journal.append("two\n")
    journal.close()
    journal.close()
    assert list(out.read_lines("b1", JOURNAL_NAME)) == ["header\n", "one\n", "two\n"]

    again = out.open_journal("b1", JOURNAL_NAME)
    assert not again.fresh
    again.append("three\n")
    again.close()
    assert list(out.read_lines("b1", JOURNAL_NAME)) == ["header\n", "one\n", "two\n", "three\n"]
    segments = keys(s3, bucket)
    assert segments == sorted(segments) and segments[-1] == "out/b1/journal.jsonl.d/000003.jsonl"
    assert not out.exists("b1", JOURNAL_NAME)  # no object at the journal's own key: only its segments
    again.delete()
    assert out.read_lines("b1", JOURNAL_NAME) is None and keys(s3, bucket) == []


def test_exports_and_resume_work_through_the_s3_destination(s3_endpoint: str, s3: Any, bucket: str) -> None:
    """The tasks' own code (ExportStream, SegmentWriter, SegmentTail, find_resumable) on an S3Destination."""
    out = destination(s3_endpoint, bucket)
    refs = [DocumentRef(index=n, uri=f"s3://in/{n}.pdf", name=f"{n}.pdf", size=1, fingerprint=f"etag{n}") for n in range(3)]
    results = [DocumentResult(ref=r, status="succeeded", fields={"total": r.index, "lines": [{"sku": "a"}]}) for r in refs]
    header = JournalHeader(batch_key="k1", batch_name="b", source="s3://in/", run="r1")
    journal = SegmentWriter.open(out, "20260101-b", header)
    tail = SegmentTail(out, "20260101-b", "r1")
    for result in results[:2]:
        journal.record(result)
    journal.close()
    assert [found.ref.index for found, _ in tail.poll()] == [0, 1] and tail.poll() == []  # each read once
    found = find_resumable(out, "k1")
    assert found is not None and found.folder == "20260101-b" and sorted(found.take(refs)) == [0, 1]
    assert find_resumable(out, "other-key") is None

    now = datetime.now(timezone.utc)
    report = BatchReport(
        name="b", source="s3://in/", status="completed", message="m", totals=BatchTotals(total=3, succeeded=3),
        progress=100, started=now, finished=now, duration_s=0, extractor="e", results=results,
    )
    written = write_exports(report, out, "20260101-b", list(ExportFormat))
    assert written["report.json"] == f"s3://{bucket}/out/20260101-b/report.json"
    stored = {k.rsplit("/", 1)[-1] for k in keys(s3, bucket, "out/20260101-b/") if ".d/" not in k}
    assert stored == set(written)
    text = s3.get_object(Bucket=bucket, Key="out/20260101-b/report.json")["Body"].read()
    assert BatchReport.model_validate_json(text).exports == written
    assert find_resumable(out, "k1") is None  # report.json marks the batch complete
