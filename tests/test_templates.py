"""invoice2data templates on text docbatch already read (blocks/templates.py).

The corpus cases are invoice2data's own regression cases: each folder holds one input,
the template that produced the expected output, and that output.
"""

from __future__ import annotations

import json
import logging
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from blocks import templates as tpl_mod
from blocks.errors import DocumentError
from blocks.models import ErrorKind
from blocks.templates import (
    TemplateError,
    TemplateSet,
    extract_with_templates,
    load_cached,
    pdf_text_readers,
    template_digest,
)
from tests.conftest import ROOT, corpus

# The AWS corpus template uses invoice2data's deprecated top-level `lines:` (still supported).
pytestmark = pytest.mark.filterwarnings("ignore:The 'lines' plugin:DeprecationWarning")

I2D = corpus("invoice2data")
CASES = sorted([*I2D.glob("compare/*/"), *I2D.glob("custom/*/")])

# The reader that gave each case's fields. Templates pinning `input_module: pdftotext`
# go straight to pdftotext; SammyMaystone's date regex needs -layout spacing, so its
# PDFium text misses `date` and the cascade moves on to pdftotext.
EXPECTED_READER = {
    "AmazonWebServices": "pdftotext",
    "FlipkartInvoice": "pdfium",
    "Orlen": "text",
    "SammyMaystoneLinesTest": "pdftotext",
    "coolblue1": "pdftotext",
    "free_fiber": "pdftotext",
    "basic": "text",
    "lines-basic": "text",
    "lines-blocks": "text",
    "lines-multiple-patterns": "text",
    "table-groups": "text",
}


def pdfium_text(data: bytes) -> str:
    """The PDF's text as blocks.readers.read_pdf gives it: PDFium per page, joined by '\\n\\f'."""
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(data)
    try:
        texts = []
        for number in range(len(pdf)):
            page = pdf[number]
            textpage = page.get_textpage()
            texts.append(textpage.get_text_bounded())
            textpage.close()
            page.close()
    finally:
        pdf.close()
    return "\n\f".join(t.replace("\r\n", "\n").replace("\r", "\n") for t in texts)


def case_readers(case: Path) -> list[tuple[str, Any]]:
    pdf = case / f"{case.name}.pdf"
    if pdf.exists():
        data = pdf.read_bytes()
        return pdf_text_readers(data, pdfium_text(data))
    text = (case / f"{case.name}.txt").read_text(encoding="utf-8")
    return [("text", lambda: text)]


def same(actual: Any, expected: Any) -> bool:
    """Equal as JSON values, floats within rounding (a summed column is a float sum)."""
    if isinstance(expected, float) and isinstance(actual, (int, float)) and not isinstance(actual, bool):
        return actual == pytest.approx(expected)
    if isinstance(expected, dict):
        return isinstance(actual, dict) and actual.keys() == expected.keys() and all(same(actual[k], v) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and len(actual) == len(expected) and all(same(a, e) for a, e in zip(actual, expected))
    return type(actual) is type(expected) and actual == expected


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    return folder


BASIC = """\
issuer: Basic Test
keywords:
  - Basic Test
fields:
  date:
    parser: regex
    regex: Issue date:\\s*(\\d{4}-\\d{2}-\\d{2})
    type: date
  invoice_number:
    parser: regex
    regex: Invoice number:\\s*([\\d/]+)
  amount:
    parser: regex
    regex: Total:\\s*(\\d+\\.\\d\\d)
    type: float
options:
  date_formats:
    - "%Y-%m-%d"
"""
BASIC_TEXT = "Issue date: 2022-09-27\nIssuer: Basic Test\nInvoice number: 0999/09/2022\nTotal: 123.45 EUR\n"


# --------------------------------------------------------------------------- corpus


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus_case_gives_invoice2data_expected_output(case: Path) -> None:
    templates = TemplateSet.load(str(case))  # the case folder itself: its .expected.json is skipped
    assert len(templates.names) == 1 and templates.names[0].startswith("template_")
    result = extract_with_templates(templates, case_readers(case))
    assert result is not None
    expected = json.loads((case / f"{case.name}.expected.json").read_text(encoding="utf-8"))[0]
    wrong = {key: (result.fields.get(key), value) for key, value in expected.items() if not same(result.fields.get(key), value)}
    assert not wrong, f"{case.name} via {result.reader}: (got, expected) {wrong}"
    assert "template_name" not in result.fields
    assert result.template == templates.names[0]
    assert result.reader == EXPECTED_READER[case.name]
    assert result.warnings == []
    json.dumps(result.fields)  # JSON-ready


def test_a_template_copied_alone_loads_the_same(tmp_path: Path) -> None:
    case = I2D / "compare" / "FlipkartInvoice"
    source = next(case.glob("template_*"))
    (tmp_path / source.name).write_bytes(source.read_bytes())
    assert TemplateSet.load(str(tmp_path)).digest == TemplateSet.load(str(case)).digest


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "text, reason",
    [
        ("issuer: X\nkeywords: [X\nfields: {a: b}\n", "not valid YAML"),
        ("- just\n- a list\n", "mapping"),
        ("issuer: X\nfields:\n  amount: Total (\\d+)\n", "missing 'keywords'"),
        ("keywords: [X]\nfields:\n  amount: Total (\\d+)\n", "missing 'issuer'"),
        ("issuer: X\nkeywords: [X]\nfields:\n  amount: Total (\\d+\n", "does not compile"),
        ("issuer: X\nkeywords: [X]\nfields:\n  amount:\n    parser: regex\n    regex: ['ok (\\d+)', 'bad (']\n", "does not compile"),
        (
            "issuer: X\nkeywords: [X]\nfields:\n  amount: T (\\d+)\n  items:\n    parser: lines\n"
            "    start: Start\n    end: End\n    line: '(?P<name>.+'\n",
            "line",
        ),
        (
            "issuer: X\nkeywords: [X]\nfields:\n  amount: T (\\d+)\n  items:\n    parser: lines\n    rules:\n"
            "      - start: Start\n        end: End\n        line: '(?P<a>.+)'\n        skip_line: ['[']\n",
            "skip_line",
        ),
        ("issuer: X\nkeywords: [X]\nfields:\n  amount: T (\\d+)\nlines:\n  start: S\n  end: E\n  line: '(?P<a'\n", "lines line"),
        ("issuer: X\nkeywords: [X]\nfields:\n  amount: T (\\d+)\ntables:\n  - start: S\n    end: E\n    body: '(?P<a'\n", "body"),
        ("issuer: X\nkeywords: [X]\nfields:\n  amount:\n    parser: regex\n    regex: T (\\d+)\n    type: money\n", "unknown type"),
        ("issuer: X\nkeywords: [X]\nfields:\n  amount:\n    parser: magic\n", "unknown parser"),
        ("issuer: X\nkeywords: [X]\nfields:\n  amount: T (\\d+)\noptions:\n  languages: [english]\n", "cannot build"),
    ],
    ids=[
        "invalid-yaml", "not-a-mapping", "no-keywords", "no-issuer", "field-regex", "field-regex-list",
        "lines-field-line", "lines-rules-skip_line", "top-level-lines", "tables-body", "unknown-type",
        "unknown-parser", "bad-language",
    ],
)
def test_bad_template_is_refused_naming_the_file(tmp_path: Path, text: str, reason: str) -> None:
    write(tmp_path, "good.yml", BASIC)
    write(tmp_path, "acme.yml", text)
    with pytest.raises(TemplateError) as caught:
        TemplateSet.load(str(tmp_path))
    assert str(caught.value).startswith("acme.yml: ")
    assert reason in str(caught.value)


def test_invalid_json_template_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "acme.json", '{"issuer": "X", "keywords": ["X"],')
    with pytest.raises(TemplateError, match=r"^acme\.json: not valid JSON"):
        TemplateSet.load(str(tmp_path))


def test_keywords_are_substrings_not_regexes(tmp_path: Path) -> None:
    """invoice2data matches keywords with `in`: a keyword that is not a valid regex is fine."""
    write(tmp_path, "paren.yml", BASIC.replace("  - Basic Test\n", "  - Basic Test\n  - 'EUR ('\n"))
    templates = TemplateSet.load(str(tmp_path))
    assert extract_with_templates(templates, [("text", lambda: BASIC_TEXT + "EUR (incl. VAT)")]) is not None
    assert extract_with_templates(templates, [("text", lambda: BASIC_TEXT)]) is None


def test_issuer_given_as_a_field_is_accepted(tmp_path: Path) -> None:
    """The coolblue template has no top-level issuer but an `issuer` field: invoice2data accepts it."""
    write(tmp_path, "acme.yml", BASIC.replace("issuer: Basic Test\n", "").replace("fields:\n", "fields:\n  issuer: Issuer:\\s*(.+)\n"))
    result = extract_with_templates(TemplateSet.load(str(tmp_path)), [("text", lambda: BASIC_TEXT)])
    assert result is not None and result.fields["issuer"] == "Basic Test"


def test_empty_and_missing_folders_are_refused(tmp_path: Path) -> None:
    write(tmp_path / "empty", "notes.txt", "not a template")
    write(tmp_path / "empty", "case.expected.json", "[{}]")
    with pytest.raises(TemplateError, match="holds no .yml, .yaml or .json template") as caught:
        TemplateSet.load(str(tmp_path / "empty"))
    assert str(caught.value).startswith(str(tmp_path / "empty"))
    with pytest.raises(TemplateError, match="does not exist") as caught:
        TemplateSet.load(str(tmp_path / "missing"))
    assert str(tmp_path / "missing") in str(caught.value)
    with pytest.raises(TemplateError):
        template_digest(str(tmp_path / "missing"))


def test_template_error_survives_pickling() -> None:
    error = pickle.loads(pickle.dumps(TemplateError("acme.yml", "missing 'keywords'")))
    assert (str(error), error.file, error.reason) == ("acme.yml: missing 'keywords'", "acme.yml", "missing 'keywords'")


# --------------------------------------------------------------------------- extraction outcomes


def test_no_template_matched_gives_none(tmp_path: Path) -> None:
    templates = TemplateSet.load(str(write(tmp_path, "basic.yml", BASIC)))
    assert extract_with_templates(templates, [("text", lambda: "Some other vendor\nTotal: 1.00")]) is None
    assert extract_with_templates(templates, [("text", lambda: "")]) is None


def test_required_field_missing_with_every_reader_is_a_template_error(tmp_path: Path) -> None:
    templates = TemplateSet.load(str(write(tmp_path, "basic.yml", BASIC)))
    text = BASIC_TEXT.replace("Total: 123.45 EUR", "Sum due: 123.45 EUR")
    readers = [("pdfium", lambda: text), ("pdftotext", lambda: text), ("pypdf", lambda: None)]
    with pytest.raises(DocumentError) as caught:
        extract_with_templates(templates, readers)
    assert caught.value.kind is ErrorKind.template
    message = str(caught.value)
    assert "basic.yml" in message and "amount" in message
    assert "pdfium" in message and "pdftotext" in message and "pypdf" in message


def test_a_later_reader_completes_what_the_first_missed(tmp_path: Path) -> None:
    templates = TemplateSet.load(str(write(tmp_path, "basic.yml", BASIC)))
    partial = BASIC_TEXT.replace("Total:", "Sum:")
    result = extract_with_templates(templates, [("pdfium", lambda: partial), ("pdftotext", lambda: BASIC_TEXT)])
    assert result is not None and result.reader == "pdftotext"
    assert result.fields == {
        "issuer": "Basic Test", "date": "2022-09-27", "invoice_number": "0999/09/2022",
        "amount": 123.45, "currency": "EUR", "desc": "Invoice from Basic Test",
    }


def test_readers_are_lazy(tmp_path: Path) -> None:
    templates = TemplateSet.load(str(write(tmp_path, "basic.yml", BASIC)))
    called = []
    result = extract_with_templates(
        templates, [("pdfium", lambda: BASIC_TEXT), ("pdftotext", lambda: called.append(1) or BASIC_TEXT)]
    )
    assert result is not None and result.reader == "pdfium" and not called


def test_a_template_pinning_pdftotext_uses_it(tmp_path: Path) -> None:
    templates = TemplateSet.load(str(write(tmp_path, "basic.yml", "input_module: pdftotext\n" + BASIC)))
    result = extract_with_templates(templates, [("pdfium", lambda: BASIC_TEXT), ("pdftotext", lambda: BASIC_TEXT + " ")])
    assert result is not None and result.reader == "pdftotext"


def test_template_that_raises_while_coercing_is_a_template_error(tmp_path: Path) -> None:
    text = BASIC.replace("    type: float\n", "    type: float\n  pieces:\n    parser: regex\n    regex: Issuer:\\s*(\\w+)\n    type: int\n")
    templates = TemplateSet.load(str(write(tmp_path, "counting.yml", text)))
    with pytest.raises(DocumentError) as caught:
        extract_with_templates(templates, [("text", lambda: BASIC_TEXT)])
    assert caught.value.kind is ErrorKind.template
    assert "counting.yml" in str(caught.value)


def test_template_engine_exception_is_a_template_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from invoice2data.extract.invoice_template import InvoiceTemplate

    def boom(self: Any, *args: Any) -> Any:
        raise RuntimeError("engine exploded")

    templates = TemplateSet.load(str(write(tmp_path, "basic.yml", BASIC)))
    monkeypatch.setattr(InvoiceTemplate, "extract", boom)
    with pytest.raises(DocumentError) as caught:
        extract_with_templates(templates, [("text", lambda: BASIC_TEXT)])
    assert caught.value.kind is ErrorKind.template
    assert "basic.yml" in str(caught.value) and "RuntimeError" in str(caught.value) and "engine exploded" in str(caught.value)


def test_lineless_result_is_kept_when_no_reader_gives_lines(tmp_path: Path) -> None:
    text = BASIC + "lines:\n  start: Items\n  end: Total\n  line: '(?P<name>\\w+) (?P<qty>\\d+)'\n"
    templates = TemplateSet.load(str(write(tmp_path, "lined.yml", text)))
    result = extract_with_templates(templates, [("pdfium", lambda: BASIC_TEXT), ("pdftotext", lambda: BASIC_TEXT)])
    assert result is not None and result.reader == "pdfium" and not result.fields.get("lines")
    assert any("line items" in w for w in result.warnings)
    with_lines = BASIC_TEXT.replace("Total:", "Items\nApple 2\nTotal:")
    result = extract_with_templates(templates, [("pdfium", lambda: BASIC_TEXT), ("pdftotext", lambda: with_lines)])
    assert result is not None and result.reader == "pdftotext"
    assert result.fields["lines"] == [{"name": "Apple", "qty": "2"}]


def test_missing_pdftotext_is_a_warning_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = (I2D / "compare" / "SammyMaystoneLinesTest" / "SammyMaystoneLinesTest.pdf").read_bytes()
    readers = pdf_text_readers(data, pdfium_text(data))
    monkeypatch.setattr(tpl_mod.shutil, "which", lambda name: None)
    assert readers[1][1]() is None
    templates = TemplateSet.load(str(write(tmp_path, "basic.yml", BASIC)))
    readers = pdf_text_readers(data, pdfium_text(data))
    assert extract_with_templates(templates, readers) is None  # no match; every reader tried
    texts = tpl_mod._Texts(readers)
    assert texts.get("pdftotext") is None
    assert texts.warnings == ["pdftotext (poppler-utils) is not installed"]


def test_pdf_readers_give_invoice2data_pdftotext_text() -> None:
    pdf = I2D / "compare" / "FlipkartInvoice" / "FlipkartInvoice.pdf"
    data = pdf.read_bytes()
    readers = dict(pdf_text_readers(data, pdfium_text(data)))
    from invoice2data.input import pdftotext

    assert readers["pdftotext"]() == pdftotext.to_text(str(pdf))
    assert "Flipkart" in readers["pypdf"]() or "flipkart" in readers["pypdf"]().lower()


def test_invoice2data_logs_nothing_to_the_console_during_extraction() -> None:
    """invoice2data logs ERROR for an ordinary miss: with the usual root handler, none of it shows.

    Run in a subprocess: pytest attaches its capture handlers even to non-propagating loggers.
    """
    code = f"""
import logging, sys
logging.basicConfig(level=logging.INFO)
from blocks.templates import TemplateSet, extract_with_templates
from blocks.errors import DocumentError
templates = TemplateSet.load(sys.argv[1])
assert extract_with_templates(templates, [("text", lambda: "nothing to see")]) is None
try:
    extract_with_templates(templates, [("text", lambda: {BASIC_TEXT.replace("Total:", "Sum:")!r})])
except DocumentError:
    pass
assert extract_with_templates(templates, [("text", lambda: {BASIC_TEXT!r})]) is not None
print("done")
"""
    folder = I2D / "custom" / "basic"
    done = subprocess.run([sys.executable, "-c", code, str(folder)], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "done"
    assert done.stderr == ""


# --------------------------------------------------------------------------- digest and cache


def test_digest_changes_with_template_content(tmp_path: Path) -> None:
    folder = write(tmp_path, "basic.yml", BASIC)
    before = template_digest(str(folder))
    assert before == TemplateSet.load(str(folder)).digest
    write(folder, "case.expected.json", "[{}]")  # not a template: no change
    assert template_digest(str(folder)) == before
    write(folder, "basic.yml", BASIC.replace("Basic Test", "Basic  Test"))
    assert template_digest(str(folder)) != before


def test_load_cached_loads_a_folder_once_per_digest(tmp_path: Path) -> None:
    folder = str(write(tmp_path, "basic.yml", BASIC))
    first = load_cached(folder)
    assert load_cached(folder) is first
    assert load_cached(folder, first.digest) is first
    write(tmp_path, "basic.yml", BASIC.replace("Basic Test", "Other Test"))
    changed = load_cached(folder)
    assert changed is not first and changed.digest != first.digest
    with pytest.raises(TemplateError, match="changed since the batch started"):
        load_cached(folder, first.digest[:-1] + ("0" if first.digest[-1] != "0" else "1"))


def test_importing_the_module_imports_neither_invoice2data_nor_prefect() -> None:
    code = "import sys, blocks.templates; print(sorted(m for m in ('invoice2data', 'prefect') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
