"""Long documents: split by pages into requests that fit the model's context, answers merged,
and every value's provenance (page, verbatim text, span) located in the page texts.

The requests go to the scripted OpenAI-protocol server on 127.0.0.1 (`tests/openai_server.py`)
that answers from 'name: value' lines, so what each request saw decides what it answers. The
PDFs are real, made here with PDFium (one text object per line), and read back by the
extractor's own parser.
"""

from __future__ import annotations

import ctypes
import csv
import io
import json
import math
import re
import uuid
from datetime import date
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_raw
import pytest

from blocks.errors import DocumentError
from blocks.models import ErrorKind
from blocks.openai_compatible import (
    CONTEXT_CHARS_PER_TOKEN,
    OVERFLOW_FACTOR,
    OpenAICompatibleExtractor,
    _accepted_forms,
    _chars_per_token,
    _numbered_pages,
    _partial_target,
    merge_answers,
    split_pages,
)
from blocks import readers
from blocks.provenance import Box, Provenance, from_json, locate, provenance_for, to_json
from tests.openai_server import Script, model_answer, openai_server, pages_seen
from tests.test_cli import docbatch

SCHEMA = {
    "type": "object",
    "properties": {
        "po_number": {"type": "string"},
        "supplier": {"type": ["string", "null"]},
        "amount": {"type": ["number", "null"]},
        "order_date": {"type": ["string", "null"], "format": "date"},
        "skus": {"type": "array", "items": {"type": "string"}},
        "lines": {
            "type": "array",
            "items": {"type": "object", "properties": {"sku": {"type": "string"}, "qty": {"type": "number"}}, "required": ["sku"]},
        },
        "buyer": {
            "type": ["object", "null"],
            "properties": {"name": {"type": ["string", "null"]}, "city": {"type": ["string", "null"]}},
        },
    },
    "required": ["po_number"],
}

FILLER = "Terms: delivery free house, payment within 30 days net, goods remain our property until paid in full."

# Six pages; each line a text line of the PDF. 'buyer_name'/'buyer_city' are answered by the
# test's model as the nested object 'buyer' (the model "corrects" the typo in the name).
PAGES = [
    ["PURCHASE ORDER", "po_number: PO-77", "supplier: Acme GmbH", "amount: 1,234.50", "skus: A-1", FILLER],
    ["skus: B-2", 'lines: {"sku": "A-1", "qty": 2}', "buyer_name: Globex Corporatoin", "Page two marker", FILLER],
    ["skus: A-1", 'lines: {"sku": "A-1", "qty": 2}', "supplier: Acme Trading Ltd", "buyer_city: Springfield", FILLER],
    ["supplier: ACME  gmbh", 'lines: {"sku": "C-3", "qty": 1}', "order_date: 2021-03-05", "Page four marker", FILLER],
    ["Total due 1.234,50 EUR", "Ordered on 05.03.2021", "Page five marker", FILLER, FILLER[:40]],
    ["skus: D-4", "Page six marker", "Thank you for your order.", FILLER, FILLER[:40]],
]


@pytest.fixture(autouse=True)
def _fresh_forms() -> Iterator[None]:
    _accepted_forms.clear()  # each test's server is a new endpoint, but ports can be reused
    _chars_per_token.clear()
    yield
    _chars_per_token.clear()


def make_pdf(pages: list[list[str]]) -> bytes:
    """A real PDF with a text layer: each page's lines as Helvetica text objects."""
    pdf = pdfium.PdfDocument.new()
    for lines in pages:
        page = pdf.new_page(595, 842)
        y = 800.0
        for line in lines:
            obj = pdfium_raw.FPDFPageObj_NewTextObj(pdf.raw, b"Helvetica", 10.0)
            buffer = ctypes.create_string_buffer((line + "\x00").encode("utf-16-le"))
            pdfium_raw.FPDFText_SetText(obj, ctypes.cast(buffer, ctypes.POINTER(pdfium_raw.FPDF_WCHAR)))
            pdfium_raw.FPDFPageObj_Transform(obj, 1, 0, 0, 1, 40, y)
            pdfium_raw.FPDFPage_InsertObject(page.raw, obj)
            y -= 14
        pdfium_raw.FPDFPage_GenerateContent(page.raw)
        page.close()
    out = io.BytesIO()
    pdf.save(out)
    pdf.close()
    return out.getvalue()


def po_model(body: dict[str, Any]) -> str:
    """The scripted model: 'name: value' lines (lists from every such line), plus 'buyer' from
    'buyer_name'/'buyer_city' lines, its name with the document's typo corrected."""
    answer = json.loads(model_answer(body, lists=True))
    document = "\n".join(m["content"] for m in body["messages"] if m["role"] == "user")
    buyer = {}
    for line in document.splitlines():
        if line.startswith("buyer_name: "):
            buyer["name"] = line.split(": ", 1)[1].replace("Corporatoin", "Corporation")
        elif line.startswith("buyer_city: "):
            buyer["city"] = line.split(": ", 1)[1]
    answer["buyer"] = buyer or None
    return json.dumps(answer)


def _schema_file(tmp_path: Path, schema: dict = SCHEMA) -> Path:
    path = tmp_path / "po-long.schema.json"
    path.write_text(json.dumps(schema))
    return path


def _extractor(url: str, tmp_path: Path, **kw: Any) -> OpenAICompatibleExtractor:
    options: dict[str, Any] = {
        "base_url": url, "model": "fake-model", "target_schema": str(_schema_file(tmp_path)), "max_attempts": 2,
        "max_tokens": 64,
    }
    options.update(kw)
    return OpenAICompatibleExtractor(**options)


def _context_for(extractor: OpenAICompatibleExtractor, name: str, room: int) -> int:
    """The context_tokens at which each part may carry about `room` characters (the room is
    linear in context_tokens, CONTEXT_CHARS_PER_TOKEN characters per token)."""
    _, base = extractor._part_room(name, _partial_target(extractor.target()))
    return extractor.context_tokens + int((room - base) // CONTEXT_CHARS_PER_TOKEN)


def _two_pages_a_part(probe: OpenAICompatibleExtractor, name: str, data: bytes) -> int:
    """A context_tokens at which two of the document's pages fit a part and three do not."""
    page_len = max(len(f"--- page 9 ---\n{t.strip()}") for t in _page_texts(probe._read_text(name, data).text))
    return _context_for(probe, name, 2 * page_len + 2 + page_len // 2)


def _page_texts(text: str) -> list[str]:
    return text.split("\f")


# ---------------------------------------------------------------------------- chunking, end to end


def test_a_long_pdf_is_asked_in_parts_that_fit_and_the_answers_merge(tmp_path: Path) -> None:
    data = make_pdf(PAGES)
    script = Script(answer=po_model)
    with openai_server(script) as url:
        probe = _extractor(url, tmp_path)
        extractor = _extractor(url, tmp_path, context_tokens=_two_pages_a_part(probe, "po.pdf", data))
        out = extractor.extract("po.pdf", data)

    # one request per part, each with only its own pages, in order, together all pages once
    seen = [pages_seen(r["body"]) for r in script.requests]
    assert seen == [[1, 2], [3, 4], [5, 6]]
    markers = {2: "Page two marker", 4: "Page four marker", 5: "Page five marker", 6: "Page six marker"}
    for request, pages in zip(script.requests, seen):
        document = request["body"]["messages"][1]["content"]
        assert document.startswith("Document: po.pdf, part ")
        for page, marker in markers.items():
            assert (marker in document) == (page in pages)
    assert any("sent in 3 parts" in w and "pages 1–2, pages 3–4, pages 5–6" in w for w in out.warnings)

    # each part asked against the schema with nothing required and everything nullable
    part_schema = script.requests[0]["body"]["response_format"]["json_schema"]["schema"]
    assert "required" not in part_schema and part_schema["properties"]["po_number"]["type"] == ["string", "null"]
    assert part_schema["properties"]["skus"] == SCHEMA["properties"]["skus"]  # a list stays a list ([] when absent)
    assert part_schema["properties"]["lines"]["items"] == SCHEMA["properties"]["lines"]["items"]  # items stay whole

    # merge: first non-empty scalar, lists concatenated without items an earlier part gave, objects per key
    fields = out.fields
    assert fields["po_number"] == "PO-77"
    assert fields["supplier"] == "Acme GmbH"
    assert fields["amount"] == 1234.5
    assert fields["order_date"] == "2021-03-05"
    assert fields["skus"] == ["A-1", "B-2", "D-4"]  # page 3's A-1 repeats part 1's
    assert fields["lines"] == [{"sku": "A-1", "qty": 2}, {"sku": "C-3", "qty": 1}]
    assert fields["buyer"] == {"name": "Globex Corporation", "city": "Springfield"}
    disagreement = [w for w in out.warnings if w.startswith("the parts disagree")]
    assert len(disagreement) == 1  # 'ACME  gmbh' is the same supplier; 'Acme Trading Ltd' is not
    assert "'supplier'" in disagreement[0] and '"Acme GmbH" (pages 1–2)' in disagreement[0]
    assert '"Acme Trading Ltd" (pages 3–4)' in disagreement[0]

    # tokens summed over the parts, as the server billed them
    billed_in = sum(sum(len(m["content"]) for m in r["body"]["messages"]) // 4 + 1 for r in script.requests)
    billed_out = sum(len(po_model(r["body"])) // 4 + 1 for r in script.requests)
    assert (out.tokens_in, out.tokens_out) == (billed_in, billed_out)

    # provenance: mirrors the fields; page, verbatim text and a span that slices the page's text
    pages = _page_texts(out.text)
    prov = out.provenance
    assert set(prov) == set(fields)
    assert prov["po_number"]["page"] == 1 and prov["po_number"]["text"] == "PO-77"
    assert prov["amount"]["page"] == 1 and prov["amount"]["text"] == "1,234.50" and prov["amount"]["match"] == "exact"
    assert prov["order_date"]["page"] == 4 and prov["order_date"]["text"] == "2021-03-05"
    assert [p["page"] for p in prov["skus"]] == [1, 2, 6]
    assert [p["sku"]["page"] for p in prov["lines"]] == [1, 4]  # 'A-1' is first printed on page 1
    assert prov["buyer"]["name"]["match"] == "fuzzy" and prov["buyer"]["name"]["text"] == "Globex Corporatoin"
    assert 0.8 <= prov["buyer"]["name"]["score"] < 1
    assert prov["buyer"]["city"]["page"] == 3
    for leaf in _leaves(prov):
        assert pages[leaf["page"] - 1][leaf["start"]:leaf["end"]] == leaf["text"]


def _leaves(tree: Any) -> list[dict[str, Any]]:
    if isinstance(tree, dict) and isinstance(tree.get("match"), str):
        return [tree]
    if isinstance(tree, dict):
        return [leaf for item in tree.values() for leaf in _leaves(item)]
    if isinstance(tree, list):
        return [leaf for item in tree for leaf in _leaves(item)]
    return []


def test_a_short_document_is_one_request_as_before_with_provenance(tmp_path: Path) -> None:
    script = Script(answer=po_model)
    with openai_server(script) as url:
        out = _extractor(url, tmp_path).extract("po.pdf", make_pdf(PAGES[:2]))
    assert len(script.requests) == 1
    body = script.requests[0]["body"]
    assert body["messages"][1]["content"].startswith("Document: po.pdf\n\n--- page 1 ---\n")
    assert body["response_format"]["json_schema"]["schema"] == SCHEMA  # the schema as given, not relaxed
    assert not any("parts" in w for w in out.warnings)
    start = out.text.index("Acme GmbH")  # on page 1: 'PURCHASE ORDER\npo_number: PO-77\nsupplier: Acme GmbH'
    assert start == 42
    supplier = out.provenance["supplier"]
    box = supplier.pop("box")
    assert supplier == {"page": 1, "text": "Acme GmbH", "start": 42, "end": 51, "match": "exact", "score": 1.0, "confidence": 1.0}
    # the box of its words on the page (PDF points, top-left origin): on the third line, right of 'supplier:'
    words = {w.text: w for w in readers.read_pdf(make_pdf(PAGES[:2]), max_pages=10).words if w.page == 1}
    assert (box["page_width"], box["page_height"]) == (595.0, 842.0)
    assert box["x"] == pytest.approx(words["Acme"].x0, abs=0.01) and box["y"] == pytest.approx(words["Acme"].top, abs=0.01)
    assert box["x"] + box["w"] == pytest.approx(words["GmbH"].x1, abs=0.01)


def test_a_text_without_pages_longer_than_the_context_is_split_by_characters(tmp_path: Path) -> None:
    body = "\n".join(["po_number: T-1", "supplier: Initech", *[f"row {k}: {FILLER}" for k in range(40)], "skus: Z-9"])
    script = Script(answer=po_model)
    with openai_server(script) as url:
        probe = _extractor(url, tmp_path)
        extractor = _extractor(url, tmp_path, context_tokens=_context_for(probe, "po.txt", 1500))
        out = extractor.extract("po.txt", body.encode())
    (note,) = [w for w in out.warnings if "no pages" in w and "split by characters" in w]
    pieces = int(re.search(r"into (\d+) pieces", note).group(1))
    assert len(script.requests) == pieces >= 3  # pieces of nearly a part each: one request apiece
    assert all("--- page" not in r["body"]["messages"][1]["content"] for r in script.requests)
    sent = [r["body"]["messages"][1]["content"].split("\n\n", 1)[1] for r in script.requests]
    assert all(len(t) <= 1500 for t in sent) and "".join(sent).replace("\n", "") == body.replace("\n", "")  # cut at line breaks
    assert out.fields["po_number"] == "T-1" and out.fields["skus"] == ["Z-9"]
    assert out.provenance["supplier"]["page"] is None  # a text has no pages: offsets into the whole text
    assert body[out.provenance["skus"][0]["start"]:out.provenance["skus"][0]["end"]] == "Z-9"


def test_a_request_the_server_finds_over_its_context_splits_the_document_again(tmp_path: Path) -> None:
    """The estimate of characters a token was too high for this server's tokenizer: the server's
    HTTP 400 context_length_exceeded makes the block split again at a lower figure, and keep it."""
    data = make_pdf(PAGES)
    script = Script(answer=po_model)
    with openai_server(script) as url:
        probe = _extractor(url, tmp_path)
        instructions = probe._instructions(probe.target())
        header = "Document: po.pdf\n\n"
        text = _numbered_pages(probe._read_text("po.pdf", data).text, len(PAGES))
        # the whole document just fits, by the estimate of CONTEXT_CHARS_PER_TOKEN characters a token ...
        room = probe._room(instructions, header)
        extractor = _extractor(url, tmp_path, context_tokens=probe.context_tokens + math.ceil((len(text) + 10 - room) / CONTEXT_CHARS_PER_TOKEN))
        assert len(text) <= extractor._room(instructions, header)
        # ... but the server's tokenizer packs fewer characters a token: it refuses the whole
        script.context_chars = len(instructions) + len(header) + len(text) - 1
        out = extractor.extract("po.pdf", data)
        refused = len(script.requests)
        again = extractor.extract("po.pdf", data)
    first, *rest = script.requests
    assert "--- page 6 ---" in first["body"]["messages"][1]["content"]  # the whole document in one request: refused
    assert all(sum(len(m["content"]) for m in r["body"]["messages"]) <= script.context_chars for r in rest)
    assert any(f"split again, counting {CONTEXT_CHARS_PER_TOKEN * OVERFLOW_FACTOR:.1f} characters a token" in w for w in out.warnings)
    assert any("sent in" in w and "parts" in w for w in out.warnings)
    assert out.fields["skus"] == ["A-1", "B-2", "D-4"] and out.fields["po_number"] == "PO-77"
    # the lower figure is kept for this endpoint and model: no refused request the second time
    assert len(script.requests) - refused == refused - 1
    assert not any("split again" in w for w in again.warnings) and again.fields == out.fields


def test_merged_answers_that_break_the_schema_fail_as_invalid_output(tmp_path: Path) -> None:
    pages = [[line for line in page if not line.startswith("po_number")] for page in PAGES]  # po_number nowhere
    script = Script(answer=po_model)
    with openai_server(script) as url:
        probe = _extractor(url, tmp_path)
        extractor = _extractor(url, tmp_path, context_tokens=_context_for(probe, "po.pdf", 700))
        with pytest.raises(DocumentError) as caught:
            extractor.extract("po.pdf", make_pdf(pages))
    error = caught.value
    assert error.kind is ErrorKind.invalid_output
    assert "merged, do not validate" in error.message and "po_number" in error.message
    assert error.tokens_in and error.tokens_out and len(script.requests) > 1
    assert json.loads(error.raw_output)["supplier"] == "Acme GmbH"


def test_a_dry_run_estimate_counts_one_request_per_part(tmp_path: Path) -> None:
    data = make_pdf(PAGES)
    probe = _extractor("http://127.0.0.1:9/v1", tmp_path)  # nothing is sent
    whole = probe.estimate("po.pdf", data)
    parted = _extractor("http://127.0.0.1:9/v1", tmp_path, context_tokens=_two_pages_a_part(probe, "po.pdf", data)).estimate("po.pdf", data)
    assert whole.requests == 1 and parted.requests == 3
    assert parted.tokens_out_max == 3 * 64 and parted.tokens_in > whole.tokens_in  # instructions once per part


def test_a_context_too_small_for_the_instructions_is_refused(tmp_path: Path) -> None:
    extractor = _extractor("http://127.0.0.1:9/v1", tmp_path, context_tokens=300)
    with pytest.raises(ValueError, match="context_tokens"):
        extractor.check()


# ---------------------------------------------------------------------------- chunking and merging, as functions


def test_split_pages_packs_whole_pages_in_order() -> None:
    pages = [f"page {n} " + "x" * 80 for n in range(1, 6)]
    one = len("--- page 1 ---\n") + 87
    parts, notes = split_pages(pages, room=2 * one + 2, paged=True)
    assert [(p.first_page, p.last_page) for p in parts] == [(1, 2), (3, 4), (5, 5)]
    assert [p.label for p in parts] == ["pages 1–2", "pages 3–4", "page 5"]
    assert parts[0].text == f"--- page 1 ---\n{pages[0]}\n\n--- page 2 ---\n{pages[1]}"
    assert notes == []
    assert all(len(p.text) <= 2 * one + 2 for p in parts)


def test_split_pages_splits_a_page_longer_than_a_part_by_characters_with_a_warning() -> None:
    big = " ".join(f"word{k}" for k in range(200))
    parts, notes = split_pages(["short page", big, "last"], room=300, paged=True)
    assert len(notes) == 1 and "page 2 alone is longer" in notes[0] and "split by characters" in notes[0]
    assert all(len(p.text) <= 300 for p in parts)
    texts = [p.text for p in parts]
    assert texts[0] == "--- page 1 ---\nshort page"  # page 2's first piece does not fit beside it
    assert texts[1].startswith("--- page 2 ---\nword0 ")
    assert sum(t.count("--- page 2 (continued) ---") for t in texts) == len(parts) - 2
    assert texts[-1].endswith("--- page 3 ---\nlast")
    sent = " ".join(t for t in "\n".join(texts).split() if t.startswith("word"))
    assert sent == big  # cut at spaces: no word lost or broken


def test_split_pages_honours_the_total_limit() -> None:
    parts, _ = split_pages(["a" * 100] * 10, room=250, paged=False, limit=330)
    assert sum(len(p.text) for p in parts) <= 330 and all(p.first_page is None for p in parts)


def test_merge_answers_rules() -> None:
    merged, notes = merge_answers(
        [
            {"n": "X-1", "total": None, "tags": ["a", "b"], "items": [{"k": 1}, {"k": 1}], "who": {"name": "Ann", "city": None}, "flag": None},
            {"n": "", "total": 5.0, "tags": ["b", "c"], "items": [{"k": 1}, {"k": 2}], "who": {"name": "ANN ", "city": "Rome"}, "flag": False},
            {"n": "X-2", "total": 5, "tags": [], "items": [], "who": None, "flag": True},
        ],
        ["pages 1–2", "pages 3–4", "page 5"],
    )
    assert merged == {
        "n": "X-1", "total": 5.0, "tags": ["a", "b", "c"],
        "items": [{"k": 1}, {"k": 1}, {"k": 2}],  # a repeat inside one part stays, one across parts goes
        "who": {"name": "Ann", "city": "Rome"}, "flag": False,
    }
    assert len(notes) == 2
    assert notes[0] == "the parts disagree on 'n': kept \"X-1\" (pages 1–2); not \"X-2\" (page 5)"
    assert notes[1].startswith("the parts disagree on 'flag'")


@pytest.mark.parametrize("name", ["invoice", "receipt"])
def test_the_part_schema_of_a_built_in_schema_is_valid_and_takes_an_empty_part(name: str) -> None:
    from jsonschema import Draft202012Validator

    from blocks.schemas import load_target_schema

    target = load_target_schema(name)
    partial = _partial_target(target)
    Draft202012Validator.check_schema(partial.json_schema)
    empty = {key: [] if "array" in json.dumps(spec.get("type")) else None for key, spec in partial.json_schema["properties"].items()}
    assert partial.errors(empty) == []
    assert partial.json_schema["properties"]["line_items"] == target.json_schema["properties"]["line_items"]


# ---------------------------------------------------------------------------- locate


@pytest.mark.parametrize("printed", [
    "Total: 1,234.50", "Summe 1.234,50 €", "Montant 1 234,50", "Montant 1\u00a0234,50", "Montant 1\u202f234,50",
    "Amount 1234.5", "Betrag 1234,50", "CHF 1'234.50",
])
def test_locate_finds_a_number_in_its_printed_forms(printed: str) -> None:
    found = locate(1234.5, ["nothing here", printed])
    assert found is not None and found.page == 2 and found.match == "exact" and found.score == 1.0
    assert printed[found.start:found.end] == found.text and found.text[0] == "1" and found.text[-1] in "05"


def test_locate_numbers_never_inside_a_longer_number() -> None:
    assert locate(234.5, ["Total 1,234.50"]) is None
    assert locate(1234.5, ["11234.50 and 1234.567"]) is None
    assert locate(1234, ["1234.00"]).text == "1234.00"
    assert locate(7, ["invoice 17, item 7."]).start == 17
    credit = locate(-12.5, ["Credit -12.50 EUR"])
    assert credit.text == "-12.50"
    assert locate("1234.50", ["sum 1.234,50"]).text == "1.234,50"  # a number given as text


@pytest.mark.parametrize("printed", [
    "Date: 2021-03-05", "Datum: 05.03.2021", "Datum 5.3.2021", "Date 05/03/2021", "Date 03/05/2021",
    "on 5 March 2021", "March 5, 2021", "am 5. März 2021", "05-Mar-2021",
])
def test_locate_finds_an_iso_date_as_printed(printed: str) -> None:
    found = locate("2021-03-05", [printed])
    assert found is not None and found.match == "exact"
    assert printed[found.start:found.end] == found.text and "2021" in found.text
    assert locate(date(2021, 3, 5), [printed]) == found


def test_locate_does_not_take_another_date() -> None:
    assert locate("2021-03-06", ["Datum: 05.03.2021", "2021-03-05"]) is None
    assert locate("2021-03-05", ["105.03.20215"]) is None


def test_locate_strings_ignore_case_and_whitespace_not_word_boundaries() -> None:
    pages = ["Seller:\nACME\n   GmbH, Berlin", "Invoice INV-77"]
    found = locate("Acme GmbH", pages)
    assert (found.page, found.text, found.match) == (1, "ACME\n   GmbH", "exact")
    assert pages[0][found.start:found.end] == found.text
    assert locate("INV-7", pages) is None  # not inside INV-77, and too short to be fuzzy
    assert locate("inv-77", pages).page == 2


def test_locate_fuzzy_and_absent_values() -> None:
    pages = ["Buyer: GLOBEX Corporatoin, Springfield"]
    found = locate("Globex Corporation", pages)
    assert found.match == "fuzzy" and found.text == "GLOBEX Corporatoin" and 0.8 <= found.score < 1
    assert pages[0][found.start:found.end] == found.text
    assert locate("Initech Limited", pages) is None
    assert locate("Springfeld", pages).text == "Springfield"
    for nothing in (None, "", "   ", True, False, float("nan")):
        assert locate(nothing, pages) is None


def test_locate_without_pages_has_no_page_number() -> None:
    found = locate("world", ["hello\fworld"], paged=False)
    assert (found.page, found.start, found.end) == (None, 6, 11)


def test_provenance_mirrors_the_fields_and_round_trips_as_json() -> None:
    pages = ["Order PO-1 of 05.03.2021", "Lines: A-1 x 2, B-2 x 3\nTotal 1.234,50"]
    fields = {"po": "PO-1", "date": "2021-03-05", "total": 1234.5, "lines": [{"sku": "A-1", "qty": 2}, {"sku": "Q-9", "qty": None}],
              "tags": ["B-2"], "buyer": None, "paid": True, "empty": {}}
    tree = provenance_for(fields, pages)
    assert tree["lines"][1] == {"sku": None, "qty": None} and tree["buyer"] is None and tree["paid"] is None
    assert tree["empty"] == {} and isinstance(tree["tags"][0], Provenance) and tree["tags"][0].page == 2
    stored = to_json(tree)
    assert stored["total"] == {"page": 2, "text": "1.234,50", "start": 30, "end": 38, "match": "exact", "score": 1.0}
    assert json.loads(json.dumps(stored)) == stored
    assert from_json(stored) == tree
    # later sources fill fields the form already has: the shape does not change
    declared = Provenance(page=1, text="PO-1", match="declared", xml_path="/rsm:CrossIndustryInvoice/rsm:ExchangedDocument/ram:ID",
                          box=Box(x=10, y=20, w=30, h=8, page_width=595, page_height=842), confidence=0.9)
    assert from_json(to_json({"po": declared})) == {"po": declared}


def test_provenance_for_a_big_document_finishes() -> None:
    """200 pages of 3,000 characters, 50 fields (many absent, some fuzzy): a sanity run, no timing asserted."""
    words = ["invoice", "total", "amount", "delivery", "customer", "street", "order", "article", "quantity", "price"]
    pages = [" ".join(f"{words[(p * 7 + k) % 10]} {p * 1000 + k},{k % 100:02}" for k in range(300))[:3000] for p in range(200)]
    fields = {f"n{k}": 90000 + k + 0.5 for k in range(20)}  # absent numbers
    fields.update({f"s{k}": f"nowhere company number {k}" for k in range(15)})  # absent strings: fuzzy tried
    fields.update({f"p{k}": k * 1000 + 3.03 for k in range(15)})  # printed as '3,03', '1003,03', … on page k + 1
    tree = provenance_for(fields, pages)
    assert all(tree[f"n{k}"] is None for k in range(20))
    assert all(tree[f"p{k}"].page == k + 1 for k in range(15))


# ---------------------------------------------------------------------------- a batch, through the CLI


def test_a_long_pdf_in_a_batch_keeps_provenance_in_json_exports_not_in_tables(
    cli_env: dict[str, str], prefect_api: str, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "long.pdf").write_bytes(data := make_pdf(PAGES))
    script = Script(answer=po_model)
    with openai_server(script) as url:
        context = _two_pages_a_part(_extractor(url, tmp_path), "long.pdf", data)
        block = f"long-{uuid.uuid4().hex[:8]}"
        OpenAICompatibleExtractor(base_url=url, model="fake-model", max_tokens=64, context_tokens=context).save(block)
        done = docbatch(
            cli_env, "run", str(folder), "-o", str(tmp_path / "out"), "--json", "-c", "1",
            "--extractor", f"openai-compatible-extractor/{block}", "--schema", str(_schema_file(tmp_path)),
            "-f", "csv", "-f", "jsonl", "-f", "json", "-f", "xlsx", "-f", "parquet",
        )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["status"] == "completed", report["message"]
    (result,) = report["results"]
    assert [pages_seen(r["body"]) for r in script.requests] == [[1, 2], [3, 4], [5, 6]]
    assert result["tokens_in"] == report["totals"]["tokens_in"] > 0
    assert result["fields"]["skus"] == ["A-1", "B-2", "D-4"]
    assert result["provenance"]["amount"]["text"] == "1,234.50" and result["provenance"]["amount"]["page"] == 1

    out = Path(report["output_dir"])
    stored = json.loads((out / "report.json").read_text())["results"][0]
    assert stored["provenance"] == result["provenance"]
    (line,) = (out / "documents.jsonl").read_text().splitlines()
    assert json.loads(line)["provenance"] == result["provenance"]
    assert json.loads((out / "documents.json").read_text())[0]["provenance"] == result["provenance"]

    with (out / "documents.csv").open(newline="") as handle:
        header = next(csv.reader(handle))
    assert "amount" in header and not any("provenance" in column for column in header)
    import pandas as pd

    assert not any("provenance" in c for c in pd.read_parquet(out / "documents.parquet").columns)
    assert not any("provenance" in str(c) for c in pd.read_excel(out / "documents.xlsx", sheet_name="documents").columns)
