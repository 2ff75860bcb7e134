"""Blocks register with Prefect and resolve from what a user types."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from blocks.embedded import EmbeddedExtractor
from blocks.errors import SourceUnavailable
from blocks.local import LocalDirectory
from blocks.resolve import resolve_extractor, resolve_source
from tests.conftest import ROOT


def test_prefect_block_register_accepts_the_module(cli_env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "block", "register", "-m", "blocks"],
        cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for name in (
        "Embedded Extractor", "Local Directory Source", "Local Folder Destination", "OpenAI-compatible Extractor",
        "Hosted Extractor", "Routing Extractor", "Extraction Schema",
    ):
        assert name in done.stdout
    assert "Extractor\n" not in done.stdout  # the abstract base is not a block type of its own
    assert "Schema Extractor" not in done.stdout  # nor is the base of the model and hosted extractors


@pytest.mark.usefixtures("prefect_api")
def test_an_extraction_schema_block_is_a_batch_schema_by_name() -> None:
    from blocks.schemas import ExtractionSchema, SchemaField, SubField, load_target_schema

    ExtractionSchema(title="Purchase order", fields=[
        SchemaField(name="po_number", required=True, description="The order's number"),
        SchemaField(name="ordered", type="date"),
        SchemaField(name="lines", type="list", fields=[SubField(name="sku", required=True), SubField(name="quantity", type="number")]),
    ]).save("test-po", overwrite=True)
    target = load_target_schema("extraction-schema/test-po")
    assert target.name == "extraction-schema/test-po"
    assert target.errors({"po_number": "P1", "ordered": "2026-01-31", "lines": [{"sku": "A", "quantity": 2}]}) == []
    assert any("po_number" in e for e in target.errors({"lines": []}))
    assert any("sku" in e for e in target.errors({"po_number": "P1", "lines": [{"quantity": 2}]}))
    assert target.complete({"po_number": "P1"}) == {"po_number": "P1", "ordered": None, "lines": []}
    with pytest.raises(ValueError, match="no saved extraction schema"):
        load_target_schema("extraction-schema/absent")


@pytest.mark.usefixtures("prefect_api")
def test_saved_blocks_resolve_by_name(tmp_path: Path) -> None:
    LocalDirectory(path=str(tmp_path), include=["*.pdf"]).save("test-invoices", overwrite=True)
    EmbeddedExtractor(max_pages=3).save("test-strict", overwrite=True)
    source = resolve_source("local-directory/test-invoices", include=[], exclude=["x*"], recursive=True)
    assert isinstance(source, LocalDirectory) and source.path == str(tmp_path)
    assert source.include == ["*.pdf"] and source.exclude == ["x*"]
    extractor = resolve_extractor("embedded-extractor/test-strict")
    assert isinstance(extractor, EmbeddedExtractor) and extractor.max_pages == 3
    with pytest.raises(SourceUnavailable, match="no saved block"):
        resolve_extractor("embedded-extractor/absent")
    with pytest.raises(SourceUnavailable, match="not a document source"):
        resolve_source("embedded-extractor/test-strict", include=[], exclude=[], recursive=True)


def test_remote_schemes_are_refused_clearly() -> None:
    with pytest.raises(SourceUnavailable, match="gs:// sources are not supported"):
        resolve_source("gs://bucket/prefix", include=[], exclude=[], recursive=True)
    with pytest.raises(SourceUnavailable, match="names no bucket"):
        resolve_source("s3:///prefix", include=[], exclude=[], recursive=True)


def test_s3_uris_resolve_to_s3_blocks() -> None:
    from blocks.resolve import resolve_destination
    from blocks.s3 import S3Destination, S3Source

    source = resolve_source("s3://inbox/may/2024", include=["*.pdf"], exclude=[], recursive=False)
    assert isinstance(source, S3Source) and (source.bucket, source.prefix, source.include, source.recursive) == ("inbox", "may/2024", ["*.pdf"], False)
    destination = resolve_destination("s3://results/docbatch")
    assert isinstance(destination, S3Destination) and destination.location("b", "report.json") == "s3://results/docbatch/b/report.json"
