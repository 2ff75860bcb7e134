"""Every nasty input of the public corpus ends as a precise result; passwords; files changing under a batch.

Decisions the expectations below encode:

- Archives are never opened: a ZIP (also one named .xlsx that holds no workbook) is
  `unsupported`, and the message says it is an archive and names its members.
- Pages without a usable text layer (scans, text drawn as curves, fonts whose characters PDFium
  reports without a Unicode mapping) are read by OCR, and images too, so those documents
  succeed with OCR's text. With OCR off they are `no_text`: the message says whether the pages
  hold images (a scan), only drawings (text as curves) or unmapped text, and that OCR is off.
  A PDF whose pages hold nothing at all is `no_text` either way.
- `ocrmypdf_truetype_font_nomapping.pdf` shows "Phone" but PDFium maps every character (through
  the font's own cmap) and reports no mapping error, so nothing tells it from real text: it
  succeeds with PDFium's text ('"7+%-') and a warning that the text holds no letters and a font
  may lack a Unicode mapping.
- Damaged PDFs that PDFium repairs (lost xref, no startxref, circular XObjects) succeed;
  truncated ones and the object-less ocrmypdf_invalid.pdf are `corrupt` with a reason.
- Text files that sit in the folder (SOURCE.txt, licenses/, the upstream *.expected.txt) are
  part of the batch over the folder and succeed as plain text.
"""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import NamedTuple

import pytest
from pydantic import SecretStr

from blocks.embedded import EmbeddedExtractor
from blocks.errors import DocumentError
from blocks.models import BatchReport, ErrorKind
from flows.batch import extract_batch
from flows.history import wait_for_history
from flows.params import ExportSettings, ExtractionSettings
from tasks.sharding import plan_shards
from tests import fakes
from tests.conftest import CORPUS, copy_into, corpus

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
TEXT = "text/plain"


class Case(NamedTuple):
    path: str  # under corpus/public
    kind: ErrorKind | None  # None: succeeded
    has: str | None = None  # in the text when succeeded, in the message when failed
    warning: str | None = None
    media_type: str = PDF


E = ErrorKind
SCAN = "probably scanned"
BLANK = "blank page"
NO_MAPPING = "without a Unicode mapping"
LOCKED = "password protected"

CASES = [
    Case("nasty-inputs/broken/ocrmypdf_invalid.pdf", E.corrupt, "structure is damaged"),
    Case("nasty-inputs/broken/ocrmypdf_kcs.pdf", None, "Kodak Capture"),  # OCR
    Case("nasty-inputs/broken/pdfminer_issue-1113-evil-xobjects.pdf", None, "Hello world"),
    Case("nasty-inputs/broken/pdfminer_zen_of_python_corrupted.pdf", None, "Beautiful is better than ugly."),
    Case("nasty-inputs/broken/pdfplumber_empty-zero-bytes.pdf", E.empty, "0 bytes"),
    Case("nasty-inputs/broken/pdfplumber_issue-297-example.pdf", E.no_text, BLANK),
    Case("nasty-inputs/broken/pdfplumber_malformed-from-issue-932.pdf", None, "2021"),
    Case("nasty-inputs/broken/pypdf_issue-297.pdf", None, "test example"),
    Case("nasty-inputs/broken/pypdf_issue-301.pdf", None, "14"),
    Case("nasty-inputs/broken/pypdf_selenium-issue-177.pdf", None, "Hello World"),
    Case("nasty-inputs/derived/docx-named-as_tbl-2x2-table.pdf", None, "\t", "holds no text", DOCX),
    Case("nasty-inputs/derived/many-pages-10000_simple1.pdf", E.too_large, "10000 pages"),
    Case("nasty-inputs/derived/png-image-named-as_AmazonWebServices.pdf", None, "Amazon Web Services", media_type="image/png"),
    Case("nasty-inputs/derived/truncated-1KiB_AmazonWebServices.pdf", E.corrupt, "truncated"),
    Case("nasty-inputs/derived/truncated-half_AmazonWebServices.pdf", E.corrupt, "truncated"),
    Case("nasty-inputs/encrypted/pdfminer_aes-256-r6.pdf", E.encrypted, LOCKED),
    Case("nasty-inputs/encrypted/pdfminer_rc4-40.pdf", E.encrypted, LOCKED),
    Case("nasty-inputs/encrypted/pdfplumber_password-example.pdf", E.encrypted, LOCKED),
    Case("nasty-inputs/encrypted/pypdf_crazyones-encrypted-256.pdf", E.encrypted, LOCKED),
    Case("nasty-inputs/encrypted/pypdf_libreoffice-writer-password.pdf", E.encrypted, LOCKED),
    Case("nasty-inputs/encrypted/pypdf_r2-user-password.pdf", E.encrypted, LOCKED),
    Case("nasty-inputs/encrypted/pypdf_r4-aes-user-password.pdf", E.encrypted, LOCKED),
    Case("nasty-inputs/encrypted/pypdf_r6-both-passwords.pdf", E.encrypted, LOCKED),
    Case("nasty-inputs/encrypted-opens-without-password/pypdf_encrypted_doc_no_id.pdf", None, "WO 2003/036426"),
    Case("nasty-inputs/encrypted-opens-without-password/pypdf_r3-empty-password.pdf", None, "pdf encryption test"),
    Case("nasty-inputs/encrypted-opens-without-password/pypdf_r5-owner-password.pdf", None, "pdf encryption test"),
    Case("nasty-inputs/not-a-pdf/pdfplumber_issue-948.zip", E.unsupported, "ZIP archive (not an Office document) holding 1 file(s): dummy.pdf"),
    Case("nasty-inputs/real-world-text-pdfs/pdfplumber_scotus-transcript-p1.expected.txt", None, "IN THE SUPREME COURT", media_type=TEXT),
    Case("nasty-inputs/real-world-text-pdfs/pdfplumber_scotus-transcript-p1.pdf", None, "IN THE SUPREME COURT OF THE UNITED STATES"),
    Case("nasty-inputs/real-world-text-pdfs/pdfplumber_senate-expenditures.pdf", None, "PAYEE NAME"),
    Case("nasty-inputs/resource-exhaustion/ocrmypdf_2400dpi.pdf", None, "Linzensoep"),
    Case("nasty-inputs/resource-exhaustion/ocrmypdf_enormous.pdf", None, "81 megapixels"),
    Case("nasty-inputs/resource-exhaustion/ocrmypdf_hugemono.pdf", None, "tiny amount of text"),  # 8400 pt: 1800 px
    Case("nasty-inputs/scanned-image-only/ocrmypdf_c02-22.pdf", None, "went tip-toeing along a path"),
    Case("nasty-inputs/scanned-image-only/ocrmypdf_cardinal.pdf", None, "LinnSequencer"),
    Case("nasty-inputs/scanned-image-only/ocrmypdf_ccitt.pdf", None, "32 Track MIDI Sequence Recorder"),
    Case("nasty-inputs/scanned-image-only/ocrmypdf_jbig2.pdf", None, "32 Track MIDI Sequence Recorder"),
    Case("nasty-inputs/scanned-image-only/ocrmypdf_rotated_skew.pdf", None, "32 Track MIDI Sequence Recorder"),
    Case("nasty-inputs/scanned-image-only/ocrmypdf_skew.pdf", None, "32 Track MIDI Sequence Recorder"),
    Case("nasty-inputs/scanned-with-ocr-layer/pypdf_Seige_of_Vicksburg_Sample_OCR.pdf", None, "THE SIEGE OF VICKSBURG"),
    Case("nasty-inputs/text-extraction-traps/ocrmypdf_livecycle.pdf", E.no_text, BLANK),
    Case("nasty-inputs/text-extraction-traps/ocrmypdf_no_contents.pdf", E.no_text, BLANK),
    Case("nasty-inputs/text-extraction-traps/ocrmypdf_overlay.pdf", None, "Payed 2017-Jan-22"),
    Case("nasty-inputs/text-extraction-traps/ocrmypdf_trivial.pdf", E.no_text, BLANK),
    Case("nasty-inputs/text-extraction-traps/ocrmypdf_truetype_font_nomapping.pdf", None, '"7+%-', "may lack a Unicode mapping"),
    Case("nasty-inputs/text-extraction-traps/ocrmypdf_type3_font_nomapping.pdf", None, "u"),  # OCR of its glyphs
    Case("nasty-inputs/text-extraction-traps/ocrmypdf_vector.pdf", None, "Sample Vector PDF"),
    Case("nasty-inputs/text-extraction-traps/pdfminer_issue-00369-excel.pdf", None, "7 8 9"),
    Case("nasty-inputs/text-extraction-traps/pdfminer_issue-791-non-unicode-cmap.pdf", None, "Peněžní prostředky"),
    Case("nasty-inputs/text-extraction-traps/pdfminer_jo_japanese-vertical.pdf", None, "みんなのおのおの"),
    Case("nasty-inputs/text-extraction-traps/pdfplumber_nics-background-checks-rotated.pdf", None, "Handgun"),
    Case("nasty-inputs/text-extraction-traps/pypdf_attachment.pdf", None, "The Crazy Ones"),
    Case("nasty-inputs/text-extraction-traps/pypdf_indirect-rotation.pdf", None, "International Council"),
    Case("nasty-inputs/text-extraction-traps/pypdf_multilang.pdf", None, "Привет"),
    Case("nasty-inputs/text-extraction-traps/pypdf_test_Orient.pdf", None, "box text at top"),
    # valid PDFs whose embedded ZUGFeRD/Factur-X XML is invalid: the page text is what we read
    Case("zugferd/invalid/FNFE-factur-x-examples_Facture_FR_EN16931.pdf", None, "Au bon moulin"),
    Case("zugferd/invalid/Mustangproject_factur-x-invalid-xml-encoding-attribute.pdf", None, "RE-20190610", "embedded XML 'factur-x.xml' ignored"),
    Case("zugferd/invalid/Mustangproject_fail1.pdf", None, "RE-20151008", "lacks EN 16931 mandatory terms"),
    Case("zugferd/invalid/python-factur-x_python-factur-x.pdf", None, "RE-20171118"),
    Case("office/xlsx/null_file.xlsx", E.empty, "0 bytes"),
    Case("office/xlsx/null_archive.xlsx", E.unsupported, "ZIP archive (not an Office document) holding 1 file(s): null_file.xlsx"),
    # packages missing optional parts; their bodies are empty (see the .expected.txt beside them)
    Case("office/docx/doc-no-coreprops.docx", None, "", "holds no text", DOCX),
    Case("office/docx/set-no-settings-part.docx", None, "", "holds no text", DOCX),
    Case("office/docx/sty-having-no-styles-part.docx", None, "", "holds no text", DOCX),
]
BY_PATH = {case.path: case for case in CASES}

# With OCR off, the documents above that only OCR reads fail as no_text, saying what their pages hold.
OCR_OFF = [
    ("nasty-inputs/broken/ocrmypdf_kcs.pdf", SCAN),
    ("nasty-inputs/derived/png-image-named-as_AmazonWebServices.pdf", "image/png"),
    ("nasty-inputs/resource-exhaustion/ocrmypdf_hugemono.pdf", SCAN),
    ("nasty-inputs/scanned-image-only/ocrmypdf_cardinal.pdf", "4 page(s)"),
    ("nasty-inputs/text-extraction-traps/ocrmypdf_type3_font_nomapping.pdf", NO_MAPPING),
    ("nasty-inputs/text-extraction-traps/ocrmypdf_vector.pdf", "drawn as curves"),
    ("nasty-inputs/text-extraction-traps/pdfminer_issue-791-non-unicode-cmap.pdf", NO_MAPPING),
]

# From SOURCE.txt: the user password of each encrypted file, then its owner password where given.
PASSWORDS = {
    "pdfminer_aes-256-r6.pdf": ("usersecret", "ownersecret"),
    "pdfminer_rc4-40.pdf": ("foo", "baz"),
    "pdfplumber_password-example.pdf": ("test", None),
    "pypdf_crazyones-encrypted-256.pdf": ("password", None),
    "pypdf_libreoffice-writer-password.pdf": ("openpassword", "permissionpassword"),
    "pypdf_r2-user-password.pdf": ("asdfzxcv", None),
    "pypdf_r4-aes-user-password.pdf": ("asdfzxcv", None),
    "pypdf_r6-both-passwords.pdf": ("foo", "bar"),
}
ALL_PASSWORDS = sorted({p for pair in PASSWORDS.values() for p in pair if p})


def is_nasty_input(path: Path) -> bool:
    """Files of nasty-inputs/ the table must cover: all but its SOURCE.txt files and licenses/."""
    relative = path.relative_to(CORPUS / "nasty-inputs")
    return path.is_file() and path.name != "SOURCE.txt" and relative.parts[0] != "licenses"


def leaked(text: str, passwords: list[str] = ALL_PASSWORDS) -> list[str]:
    """The candidate passwords that appear in `text` as words."""
    return [p for p in passwords if re.search(rf"\b{re.escape(p)}\b", text)]


def check_message(message: str) -> None:
    """One readable line, no PDFium jargon, no candidate password ('password' is also a word here)."""
    assert "\n" not in message and 20 < len(message) < 250, message
    assert "Traceback" not in message and "PDFium:" not in message, message
    assert not leaked(message, [p for p in ALL_PASSWORDS if p != "password"]), message


def test_table_covers_every_nasty_input() -> None:
    on_disk = {str(p.relative_to(CORPUS)) for p in (CORPUS / "nasty-inputs").rglob("*") if is_nasty_input(p)}
    assert on_disk == {c.path for c in CASES if c.path.startswith("nasty-inputs/")}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.path.rsplit("/", 1)[-1])
def test_each_nasty_input_gets_its_precise_outcome(case: Case) -> None:
    data = corpus(case.path).read_bytes()
    if case.kind is None:
        result = EmbeddedExtractor().extract(Path(case.path).name, data)
        assert result.media_type == case.media_type
        assert case.has in result.text
        if case.media_type == PDF:
            assert result.text.strip() and result.pages and result.pages >= 1
        if case.warning:
            assert any(case.warning in w for w in result.warnings), result.warnings
        else:
            assert result.warnings == []
    else:
        with pytest.raises(DocumentError) as raised:
            EmbeddedExtractor().extract(Path(case.path).name, data)
        error = raised.value
        assert (error.kind, error.transient) == (case.kind, False), error.message
        assert case.has in error.message
        check_message(error.message)
        if error.kind == ErrorKind.no_text:
            assert "OCR" in error.message
        if error.kind == ErrorKind.unsupported:
            assert "archive" in error.message


@pytest.mark.parametrize(("path", "has"), OCR_OFF, ids=lambda v: v.rsplit("/", 1)[-1])
def test_without_ocr_scans_fail_as_no_text_and_say_ocr_is_off(path: str, has: str) -> None:
    with pytest.raises(DocumentError) as raised:
        EmbeddedExtractor(ocr=False).extract(Path(path).name, corpus(path).read_bytes())
    assert raised.value.kind == ErrorKind.no_text and has in raised.value.message
    assert "OCR" in raised.value.message and "off" in raised.value.message, raised.value.message
    check_message(raised.value.message)


@pytest.mark.parametrize("name", sorted(PASSWORDS))
def test_known_passwords_open_encrypted_pdfs(name: str) -> None:
    data = corpus("nasty-inputs", "encrypted", name).read_bytes()
    user, owner = PASSWORDS[name]
    others = [p for p in ALL_PASSWORDS if p not in (user, owner)]
    for password in filter(None, (user, owner)):
        result = EmbeddedExtractor(passwords=[SecretStr(p) for p in [*others[:2], password]]).extract(name, data)
        assert result.text.strip() and result.pages and result.pages >= 1
        assert password not in repr(result.warnings) + repr(result.fields)
    for passwords in ([], others):
        extractor = EmbeddedExtractor(passwords=[SecretStr(p) for p in passwords])
        with pytest.raises(DocumentError) as raised:
            extractor.extract(name, data)
        assert raised.value.kind == ErrorKind.encrypted
        assert "configured" in raised.value.message
        check_message(raised.value.message)
        assert not leaked(repr(extractor) + str(extractor.model_dump()), passwords)


# --- through the real flow ---------------------------------------------------------------------


def wait_until_recorded(report: BatchReport, max_concurrency: int) -> None:
    """Every task run (listing, shards, collection) recorded, so no event is in flight when the server stops."""
    assert wait_for_history(report.flow_run_id, len(plan_shards(report.totals.total, max_concurrency)) + 2)


def _tree_rss_bytes(root_pid: int) -> tuple[int, int, int]:
    """RSS in bytes, from /proc, of (root_pid, its other descendants, the Prefect API server's process tree).

    The test session's Prefect server (a `uvicorn` child of this process) stands in for the
    remote server a deployed worker talks to, so it is counted apart from the batch.
    """
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    servers: set[int] = set()
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if b"uvicorn" in handle.read().split(b"\0"):
                    servers.add(pid)
            parents[pid], rss[pid] = int(fields[1]), int(fields[21]) * page
        except (OSError, IndexError, ValueError):
            continue

    def subtree(top: set[int]) -> set[int]:
        found, frontier = set(top), set(top)
        while frontier:
            frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
            found |= frontier
        return found

    everything = subtree({root_pid}) - {root_pid}
    server = subtree(servers & everything)
    return rss.get(root_pid, 0), sum(rss.get(p, 0) for p in everything - server), sum(rss.get(p, 0) for p in server)


class TreeMemory:
    """Samples every 50 ms the RSS of this process and its children; keeps the peaks of the sums."""

    def __init__(self) -> None:
        self.batch = self.with_server = 0  # peaks: batch = this process + its children but the server
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            own, children, server = _tree_rss_bytes(os.getpid())
            self.batch = max(self.batch, own + children)
            self.with_server = max(self.with_server, own + children + server)
            if self._stop.wait(0.05):
                return

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.usefixtures("prefect_api")
def test_whole_nasty_folder_as_one_batch(tmp_path: Path) -> None:
    source = tmp_path / "in"
    shutil.copytree(CORPUS / "nasty-inputs", source / "nasty-inputs")
    for case in CASES:
        if not case.path.startswith("nasty-inputs/"):
            (source / case.path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(corpus(case.path), source / case.path)
    # in listing order: sorted names folder by folder
    on_disk = ["/".join(p.relative_to(source).parts) for p in sorted(source.rglob("*"), key=lambda p: p.parts) if p.is_file()]

    started = time.perf_counter()
    with TreeMemory() as memory:
        report = extract_batch(
            source=str(source),
            batch_name="nasty inputs",
            extraction=ExtractionSettings(retry_backoff_s=0),
            export=ExportSettings(output_dir=str(tmp_path / "out")),
            max_documents=500,
        )
    wall = time.perf_counter() - started
    wait_until_recorded(report, 4)
    mib = 1024 * 1024
    print(
        f"\nnasty batch: {len(on_disk)} documents in {wall:.1f} s wall; peak RSS of the process tree "
        f"{memory.batch / mib:.0f} MiB ({memory.with_server / mib:.0f} MiB with the test Prefect server); "
        f"ru_maxrss of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    )

    assert report.status == "partially_failed"
    assert [r.ref.name for r in report.results] == on_disk  # every file accounted for, in order
    for result in report.results:
        case = BY_PATH.get(result.ref.name)
        if case is None:  # SOURCE.txt and licenses/: text files that sit in the folder
            assert (result.status, result.media_type) == ("succeeded", TEXT), result.ref.name
            continue
        expected_status = "succeeded" if case.kind is None else "failed"
        assert (result.status, result.error_kind) == (expected_status, case.kind), (result.ref.name, result.error)
        if case.kind is not None:
            assert case.has in result.error and result.attempts == 1 and result.error_transient is False
        else:
            assert result.media_type == case.media_type
    totals = report.totals
    failed = sum(1 for c in CASES if c.kind is not None)
    assert (totals.total, totals.failed, totals.skipped) == (len(on_disk), failed, 0)
    assert totals.succeeded + totals.failed == totals.total
    assert report.success_rate == pytest.approx(100 * totals.succeeded / totals.total, abs=0.1)
    on_file = BatchReport.model_validate_json(Path(report.exports["report.json"]).read_text())
    assert on_file.totals == totals and len(on_file.results) == len(on_disk)
    # the batch and its parse workers stay under 1 GB as before OCR; each of the (2) OCR workers
    # holds the OCR engine, about 520 MB at its peak here
    assert memory.batch < (1024 + 2 * 600) * mib


@pytest.mark.usefixtures("prefect_api")
def test_password_list_through_the_flow_never_leaks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    # Neutral names: 'password' and 'test' are passwords here, and must not match file names.
    files = [(corpus("nasty-inputs", "encrypted", name), f"locked-{i}.pdf") for i, name in enumerate(sorted(PASSWORDS))]
    names = copy_into(tmp_path / "in", *files)
    block = f"pw-{uuid.uuid4().hex[:8]}"
    EmbeddedExtractor(passwords=[SecretStr(p) for p in ALL_PASSWORDS]).save(block, overwrite=True)

    caplog.set_level(logging.DEBUG)
    report = extract_batch(
        source=str(tmp_path / "in"),
        batch_name="locked documents",
        extraction=ExtractionSettings(extractor=f"embedded-extractor/{block}", retry_backoff_s=0),
        export=ExportSettings(output_dir=str(tmp_path / "out")),
    )
    wait_until_recorded(report, 4)
    assert report.status == "completed"
    assert [r.ref.name for r in report.results] == names
    assert all(r.status == "succeeded" and r.pages and r.media_type == PDF for r in report.results)

    APILogHandler().flush()
    run_id = uuid.UUID(report.flow_run_id)
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
        parameters = client.read_flow_run(run_id).parameters
    assert logs and {"docbatch-progress", "docbatch-documents", "docbatch-summary"} <= {a.key for a in artifacts}
    places = {
        "report": report.model_dump_json(),
        "captured logs": "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records),
        "Prefect logs": "\n".join(log.message for log in logs),
        "artifacts": "\n".join(f"{a.key} {a.description} {json.dumps(a.data, default=str)}" for a in artifacts),
        "parameters": json.dumps(parameters, default=str),
    }
    for export in Path(report.output_dir).iterdir():
        places[export.name] = export.read_bytes().decode("utf-8", "replace") if export.suffix != ".xlsx" else _xlsx_text(export)
    assert {"report.json", "documents.csv", "documents.xlsx"} <= set(places)
    assert "locked-0.pdf" in places["Prefect logs"] or "locked documents" in places["Prefect logs"]
    assert caplog.records and leaked("pdf encryption test\npassword: asdfzxcv") == ["asdfzxcv", "password", "test"]
    # Three of the PDFs read "pdf encryption test", which the layout path takes as the seller's
    # name: the document's own words are not a leak of the candidate password 'test'.
    for place, text in places.items():
        assert not leaked(text.replace("pdf encryption test", "")), f"a candidate password appears in the {place}"


def _xlsx_text(path: Path) -> str:
    import openpyxl

    workbook = openpyxl.load_workbook(path, read_only=True)
    try:
        return "\n".join(
            "\t".join("" if v is None else str(v) for v in row) for sheet in workbook.worksheets for row in sheet.iter_rows(values_only=True)
        )
    finally:
        workbook.close()


@pytest.mark.usefixtures("prefect_api")
def test_files_changing_after_listing(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ["a-steady.txt", "b-deleted.txt", "c-appended.txt", "d-touched.txt", "e-denied.txt", "f-steady.txt"]:
        (folder / name).write_text(f"Invoice no. {name[0]}-1\nTotal: 10.00 EUR\n")
    block = f"changing-{uuid.uuid4().hex[:8]}"
    fakes.ChangingDirectory(
        path=str(folder), deleted=["b-deleted.txt"], appended=["c-appended.txt"], touched=["d-touched.txt"], denied=["e-denied.txt"]
    ).save(block, overwrite=True)
    try:
        report = extract_batch(
            source=f"test-changing-directory/{block}",
            extraction=ExtractionSettings(keep_text=True, retry_backoff_s=0),
            export=ExportSettings(output_dir=str(tmp_path / "out"), formats=["csv"]),
            max_concurrency=2,
        )
    finally:
        os.chmod(folder / "e-denied.txt", 0o644)
    wait_until_recorded(report, 2)
    results = {r.ref.name: r for r in report.results}
    assert list(results) == ["a-steady.txt", "b-deleted.txt", "c-appended.txt", "d-touched.txt", "e-denied.txt", "f-steady.txt"]
    assert report.status == "partially_failed" and (report.totals.succeeded, report.totals.failed) == (4, 2)

    deleted, appended, touched, denied = (results[n] for n in ["b-deleted.txt", "c-appended.txt", "d-touched.txt", "e-denied.txt"])
    assert (deleted.status, deleted.error_kind, deleted.attempts) == ("failed", ErrorKind.vanished, 1)
    assert "deleted or moved after it was listed" in deleted.error
    # The listing took a real 000-mode file; the read was denied by the kernel (as root: with the
    # thread's DAC-override capabilities dropped, see fakes.unprivileged_thread).
    assert (denied.status, denied.error_kind, denied.attempts) == ("failed", ErrorKind.permission_denied, 1)
    assert "not readable" in denied.error
    # Modified: size (appended) or only mtime (touched) differ from the listing: read as it is now.
    assert appended.status == "succeeded" and "Line added after the listing." in appended.text
    assert appended.sha256 is not None and any("modified after listing" in w for w in appended.warnings)
    assert touched.status == "succeeded" and any("modified after listing" in w for w in touched.warnings)
    assert touched.ref.fingerprint != f"{(folder / 'd-touched.txt').stat().st_size}:{(folder / 'd-touched.txt').stat().st_mtime_ns}"
    for steady in (results["a-steady.txt"], results["f-steady.txt"]):
        assert steady.status == "succeeded" and steady.warnings == []
