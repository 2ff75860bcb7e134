"""Which path fills a document's fields, in order of trust: e-invoice XML, a template, the layout.

1. **XML**: a bare CII/UBL e-invoice (`xml`), or the Factur-X / ZUGFeRD / XRechnung XML a PDF
   embeds (`embedded-xml`, unless `embedded_xml` is off): exact, so nothing else is tried.
   Embedded XML that cannot be read is ignored with a warning naming what was wrong.
2. **Template** (when a templates folder is set): invoice2data's engine on the text, trying the
   text readers in turn (`blocks.templates`); its fields are the template's own
   (`template:<file>`). No match falls back to the layout with a warning, or fails the
   document when `on_no_template` is `fail`.
3. **Receipt** (`receipt-layout`): when the batch asks for receipts, or (`auto`, the default)
   when the document looks like a till receipt (`blocks.receipts.looks_like_receipt`): the
   receipt schema (`blocks.receipt_schema`) from the receipt's lines (`blocks.receipts`).
4. **Layout** (`layout`): labels and their neighbours, tables read as tables (`blocks.layout`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from blocks import sniff
from blocks.document import ReadDocument
from blocks.errors import DocumentError
from blocks.models import ErrorKind


@dataclass
class FieldsOutcome:
    fields: dict[str, Any]
    source: str
    reader: str | None = None
    warnings: list[str] = field(default_factory=list)
    # what the extractor declares about each value's source, mirroring `fields` (blocks.provenance.Provenance
    # trees: an e-invoice's element paths); blocks.source_provenance completes it
    declared: Any = None
    # which schema `fields` follow: 'invoice', 'receipt', or None for a template's own fields
    schema: str | None = "invoice"


def extract_fields(document: ReadDocument, data: bytes, settings: Any) -> FieldsOutcome:
    """The fields of one read document and how they were obtained (see the module docstring)."""
    warnings: list[str] = []
    found = _from_xml(document, data, settings, warnings)
    if found is not None:
        found.warnings[:0] = warnings
        return found
    folder = settings.get("templates")
    if folder:
        found = _from_templates(document, data, folder, settings, warnings)
        if found is not None:
            return found
    if document.media_type == sniff.PDF and folder and len(document.ocr_pages) < (document.pages or 0):
        if not any(word.score is None for word in document.words):  # the text layer's words were not read yet
            from blocks.readers import pdf_words

            read = pdf_words(data, settings.get("passwords"))
            document.page_sizes = [size for _, size in read.values()]
            text_words = [word for found, _ in read.values() for word in found]
            document.words = sorted([*text_words, *document.words], key=lambda word: word.page)
    reader = reader_of(document)
    languages = settings.get("languages") or None
    wanted = settings.get("document_schema", "auto")
    from blocks.receipts import fill_receipt, looks_like_receipt

    if wanted == "receipt" or (wanted == "auto" and looks_like_receipt(document)):
        return FieldsOutcome(fill_receipt(document, languages), "receipt-layout", reader, warnings, schema="receipt")
    from blocks.layout import fill_invoice

    return FieldsOutcome(fill_invoice(document, languages), "layout", reader, warnings)


def _from_xml(document: ReadDocument, data: bytes, settings: Any, warnings: list[str]) -> FieldsOutcome | None:
    from blocks.einvoice import EInvoiceError, is_einvoice, read_einvoice_with_sources

    if document.media_type == sniff.XML and is_einvoice(data):
        try:
            fields, declared = read_einvoice_with_sources(data)
        except EInvoiceError as exc:
            raise DocumentError(ErrorKind.corrupt, str(exc)) from None
        return FieldsOutcome(fields, "xml", "xml", declared=declared)
    if not settings.get("embedded_xml", True):
        return None
    for name, xml in document.attachments:  # only .xml attachments (blocks.einvoice.pdf_attachments)
        try:
            fields, declared = read_einvoice_with_sources(xml)
        except EInvoiceError as exc:
            warnings.append(f"embedded XML {name!r} ignored, fields read from the text instead: {exc}")
            continue
        missing = missing_core_terms(fields)
        if missing:
            warnings.append(
                f"embedded XML {name!r} ignored, fields read from the text instead: it lacks EN 16931 "
                f"mandatory terms ({', '.join(missing)})"
            )
            continue
        outcome = FieldsOutcome(fields, "embedded-xml", f"attachment:{name}", declared=declared)
        if fields.get("profile") and not _KNOWN_GUIDELINE.match(fields["profile"]):
            outcome.warnings.append(
                f"embedded XML {name!r} declares the guideline {fields['profile']!r}, which is no Factur-X, ZUGFeRD "
                "or XRechnung profile identifier (BT-24): its fields were read as CII all the same"
            )
        return outcome
    return None


# Guideline identifiers (BT-24) of the profiles in use: EN 16931 itself, its #compliant# /
# #conformant# specialisations (Factur-X, ZUGFeRD 2, XRechnung, Peppol) and Factur-X 1.0's
# earlier ':compliant:' form, the two profiles below it (MINIMUM, BASIC WL) and ZUGFeRD 1.0's own.
_KNOWN_GUIDELINE = re.compile(
    r"^urn:(?:cen\.eu:en16931:2017(?:#(?:compliant|conformant)#urn:\S+|:compliant:factur-x\.eu:1p0:\w+)?"
    r"|factur-x\.eu:1p0:(?:minimum|basicwl)"
    r"|zugferd\.de:2p0:\w+"
    r"|ferd:CrossIndustryDocument:invoice:1p0:\w+"
    r"|fdc:peppol\.eu:\S+)$"
)


# EN 16931 terms every invoice must carry (BT-1, BT-2, BT-3, BT-5, BT-27, BT-112): an embedded
# XML without one of them is no exact record, and the page usually shows what it lacks.
_CORE_TERMS = (
    ("invoice_number", "BT-1 invoice number"),
    ("issue_date", "BT-2 issue date"),
    ("document_type_code", "BT-3 type code"),
    ("currency", "BT-5 currency"),
    ("seller.name", "BT-27 seller name"),
    ("totals.grand_total", "BT-112 total with VAT"),
)


def missing_core_terms(fields: dict[str, Any]) -> list[str]:
    """The mandatory EN 16931 terms an e-invoice's fields lack, by name."""
    missing = []
    for path, label in _CORE_TERMS:
        value: Any = fields
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value in (None, ""):
            missing.append(label)
    return missing


def _from_templates(
    document: ReadDocument, data: bytes, folder: str, settings: Any, warnings: list[str]
) -> FieldsOutcome | None:
    from blocks.templates import TemplateError, extract_with_templates, load_cached, pdf_text_readers

    try:
        templates = load_cached(folder, settings.get("templates_digest"))
    except TemplateError as exc:  # changed or broken since the batch checked it
        raise DocumentError(ErrorKind.template, f"the templates folder cannot be used now: {exc}") from None
    if document.ocr_pages:
        # scanned pages: the other PDF readers see only the text layer, which these pages lack
        readers = [("ocr", lambda: document.text)]
    elif document.media_type == sniff.PDF:
        readers = pdf_text_readers(data, document.text)
    else:
        readers = [("text", lambda: document.text)]
    result = extract_with_templates(templates, readers)
    if result is None:
        message = f"no template of the {len(templates.names)} in {folder} matched this document"
        if settings.get("on_no_template", "layout") == "fail":
            raise DocumentError(ErrorKind.template, f"{message} (its text was read: {len(document.text)} characters)")
        warnings.append(f"{message}: fields read from the layout instead")
        return None
    return FieldsOutcome(
        result.fields, f"template:{result.template}", result.reader, [*warnings, *result.warnings], schema=None
    )


def reader_of(document: ReadDocument) -> str | None:
    """'ocr' when OCR read all of the text, 'pdfium+ocr' for a PDF with some scanned pages."""
    if document.ocr_pages:
        return "ocr" if len(document.ocr_pages) >= (document.pages or 1) else "pdfium+ocr"
    return "pdfium" if document.media_type == sniff.PDF else None
