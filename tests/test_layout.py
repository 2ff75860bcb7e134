"""Layout heuristics: amounts, dates, positioned words and the invoice schema filled from layout."""

from __future__ import annotations

import json

import pytest

from blocks.amounts import parse_amount, parse_date
from blocks.document import ReadDocument, Word
from blocks.layout import fill_invoice
from tests.conftest import corpus


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1.234,56", 1234.56), ("1,234.56", 1234.56), ("1 234,56", 1234.56), ("1\u00a0234,56", 1234.56),
        ("1'234.56", 1234.56), ("-12,50", -12.5), ("12.50-", -12.5), ("(12.50)", -12.5), ("€ 399,00", 399.0),
        ("$4.11", 4.11), ("EUR 1.589,80", 1589.8), ("12,50 EUR", 12.5), ("0.025 €", 0.025), ("-218,48 €", -218.48),
        ("1.000", 1000.0), ("300", 300.0), ("3,9000", 3.9), ("1.234.567,00", 1234567.0),
    ],
)
def test_parse_amount(raw: str, expected: float) -> None:
    assert parse_amount(raw) == pytest.approx(expected)


@pytest.mark.parametrize("raw", ["", "abc", "7 %", "1 Stk", "Nr. 42"])
def test_parse_amount_refuses_non_amounts(raw: str) -> None:
    assert parse_amount(raw) is None


def test_parse_amount_decimal_separator_hint() -> None:
    assert parse_amount("1.234", decimal_separator=".") == pytest.approx(1.234)
    assert parse_amount("1,234", decimal_separator=",") == pytest.approx(1.234)
    assert parse_amount("1,234", decimal_separator=".") == pytest.approx(1234.0)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("31.01.2014", "2014-01-31"), ("2019-06-10", "2019-06-10"), ("20-10-2015", "2015-10-20"), ("05/11/2017", "2017-11-05"),
        ("vom 05.06.2018", "2018-06-05"), ("8/20/2020", "2020-08-20"),  # second number > 12: month first
        ("5 March 2018", "2018-03-05"), ("19 avril 2014", "2014-04-19"), ("5. März 2021", "2021-03-05"),
        ("August 3 , 2014", "2014-08-03"), ("Jan 1, 2022", "2022-01-01"), ("02 Juillet 2015", "2015-07-02"),
        ("12 mei 2014", "2014-05-12"), ("3 de marzo de 2020", "2020-03-03"), ("5 marzo 2021", "2021-03-05"),
    ],
)
def test_parse_date(raw: str, expected: str) -> None:
    assert parse_date(raw) == expected


def test_parse_date_order_and_languages() -> None:
    assert parse_date("05/06/2018") == "2018-06-05"
    assert parse_date("05/06/2018", order="MDY") == "2018-05-06"
    assert parse_date("13/06/2018", order="MDY") == "2018-06-13"  # 13 cannot be a month
    assert parse_date("19 avril 2014", languages=["fr"]) == "2014-04-19"
    assert parse_date("no date here") is None
    assert parse_date("31.02.2020") is None


def _read_pdf(path) -> ReadDocument:
    import pypdfium2 as pdfium

    from blocks.words import page_words

    pdf = pdfium.PdfDocument(str(path))
    texts, words, sizes = [], [], []
    try:
        for number in range(len(pdf)):
            page = pdf[number]
            textpage = page.get_textpage()
            texts.append(textpage.get_text_bounded())
            page_list, size = page_words(page, textpage, number + 1)
            words.extend(page_list)
            sizes.append(size)
            textpage.close()
            page.close()
    finally:
        pdf.close()
    return ReadDocument(text="\n\f".join(texts), pages=len(sizes), media_type="application/pdf", words=words, page_sizes=sizes)


def test_page_words_reading_order_and_boxes() -> None:
    doc = _read_pdf(corpus("zugferd", "embedded", "Konik__acme_invoice-42_ZUGFeRD", "acme_invoice-42_ZUGFeRD.pdf"))
    size = doc.page_sizes[0]
    assert doc.words and all(w.page == 1 for w in doc.words)
    for w in doc.words:
        assert 0 <= w.x0 < w.x1 <= size.width + 1 and 0 <= w.top < w.bottom <= size.height + 1
        assert w.text == w.text.strip() and w.text
    texts = [w.text for w in doc.words]
    # reading order: the sender line before the date, the date label before its value, the footer last
    assert texts.index("Rechnungsdatum:") + 1 == texts.index("31.01.2014")
    assert texts.index("Acme") < texts.index("Rechnungsdatum:") < texts.index("IBAN:")
    tops = [w.top for w in doc.words]
    assert tops[0] < 200 and tops[-1] > 700
    label = doc.words[texts.index("Rechnungsdatum:")]
    value = doc.words[texts.index("31.01.2014")]
    assert value.x0 > label.x1 and abs(value.top - label.top) < 2


def _expected(*parts: str) -> dict:
    return json.loads(corpus(*parts).read_text(encoding="utf-8"))


def test_fill_invoice_zugferd_visual_only() -> None:
    folder = ("zugferd", "embedded", "MustangGnuaccountingBeispielRE-20190610_507".join(("Mustangproject__", "")))
    doc = _read_pdf(corpus(*folder, "MustangGnuaccountingBeispielRE-20190610_507.pdf"))
    doc.attachments = []  # the embedded XML is not read by this path
    expected = _expected(*folder, "MustangGnuaccountingBeispielRE-20190610_507.expected.json")
    got = fill_invoice(doc)
    for key in ("invoice_number", "issue_date", "due_date", "currency", "document_type_code"):
        assert got[key] == expected[key], key
    assert got["seller"]["name"] == expected["seller"]["name"]
    assert got["seller"]["vat_id"] == expected["seller"]["vat_id"]
    assert got["totals"]["grand_total"] == pytest.approx(expected["totals"]["grand_total"])
    assert len(got["line_items"]) == len(expected["line_items"])
    assert [item["line_total"] for item in got["line_items"]] == pytest.approx(
        [item["line_total"] for item in expected["line_items"]]
    )


def test_fill_invoice_xml_rechnung_credit_and_correction() -> None:
    for case, code in (("EN16931_Rechnungskorrektur", "384"), ("EN16931_Einfach", "380")):
        doc = _read_pdf(corpus("zugferd", "xml-rechnung", case, f"{case}.pdf"))
        expected = _expected("zugferd", "xml-rechnung", case, f"{case}.expected.json")
        got = fill_invoice(doc)
        assert expected["document_type_code"] == code
        assert got["document_type_code"] == code
        assert got["invoice_number"] == expected["invoice_number"]
        assert got["issue_date"] == expected["issue_date"]
        assert got["seller"]["name"] == expected["seller"]["name"]
        assert got["totals"]["grand_total"] == pytest.approx(expected["totals"]["grand_total"])
        assert got["totals"]["tax_total"] == pytest.approx(expected["totals"]["tax_total"])
        assert len(got["line_items"]) == len(expected["line_items"])


def test_fill_invoice_factur_x_credit_note_in_french() -> None:
    folder = ("zugferd", "embedded", "FNFE-factur-x-examples__Avoir_FR_type381_BASIC")
    got = fill_invoice(_read_pdf(corpus(*folder, "Avoir_FR_type381_BASIC.pdf")))
    expected = _expected(*folder, "Avoir_FR_type381_BASIC.expected.json")
    assert got["document_type_code"] == "381" == expected["document_type_code"]
    assert got["invoice_number"] == expected["invoice_number"]
    assert got["issue_date"] == expected["issue_date"] and got["due_date"] == expected["due_date"]
    assert got["totals"]["grand_total"] == pytest.approx(expected["totals"]["grand_total"])
    assert got["seller"]["vat_id"] == expected["seller"]["vat_id"]
    assert got["buyer"]["vat_id"] == expected["buyer"]["vat_id"]


def test_fill_invoice_invoice2data_dutch() -> None:
    folder = ("invoice2data", "compare", "coolblue1")
    got = fill_invoice(_read_pdf(corpus(*folder, "coolblue1.pdf")))
    expected = _expected(*folder, "coolblue1.expected.json")[0]
    assert got["invoice_number"] == expected["invoice_number"]
    assert got["issue_date"] == expected["date"]
    assert got["currency"] == expected["currency"]
    assert got["totals"]["grand_total"] == pytest.approx(expected["amount"])
    assert got["seller"]["name"] == expected["partner_name"]
    assert got["seller"]["vat_id"] == expected["vat"]
    assert got["payment"]["iban"] == expected["iban"] and got["payment"]["bic"] == expected["bic"]
    assert len(got["line_items"]) == len([line for line in expected["lines"] if set(line) - {"line_note"}])


def test_fill_invoice_azure_us_dates() -> None:
    folder = ("azure-form-recognizer", "prebuilt-invoice", "sample-invoice")
    got = fill_invoice(_read_pdf(corpus(*folder, "sample-invoice.pdf")))
    fields = _expected(*folder, "sample-invoice.azure-output.json")["analyzeResult"]["documentResults"][0]["fields"]
    assert got["invoice_number"] == fields["InvoiceId"]["valueString"]
    assert got["issue_date"] == fields["InvoiceDate"]["valueDate"]
    assert got["due_date"] == fields["DueDate"]["valueDate"]
    assert got["totals"]["grand_total"] == pytest.approx(fields["InvoiceTotal"]["valueNumber"])
    assert got["seller"]["name"] == fields["VendorName"]["valueString"]
    assert got["currency"] == "USD"


def _words(*cells: tuple[str, float, float]) -> list[Word]:
    """Words of cells given as (text, x, top); each word 5 pt wide per character, 10 pt high."""
    words: list[Word] = []
    for text, x, top in cells:
        for part in text.split():
            words.append(Word(part, x, top, x + 5 * len(part), top + 10, 1))
            x += 5 * len(part) + 3
    return words


def test_label_to_the_right() -> None:
    words = _words(
        ("Muster Handel GmbH", 40, 40),
        ("Rechnungsnummer:", 300, 100), ("RE-2024-0042", 420, 100),
        ("Rechnungsdatum:", 300, 115), ("05.03.2024", 420, 115),
        ("Zahlbar bis:", 300, 130), ("04.04.2024", 420, 130),
        ("Gesamtbetrag", 300, 400), ("1.190,00 €", 460, 400),
    )
    doc = ReadDocument(text="", pages=1, media_type="application/pdf", words=words)
    got = fill_invoice(doc)
    assert got["invoice_number"] == "RE-2024-0042"
    assert got["issue_date"] == "2024-03-05"
    assert got["due_date"] == "2024-04-04"
    assert got["totals"]["grand_total"] == pytest.approx(1190.0)
    assert got["seller"]["name"] == "Muster Handel GmbH"
    assert got["currency"] is None or got["currency"] == "EUR"


def test_label_above() -> None:
    words = _words(
        ("Invoice No", 40, 100), ("Invoice Date", 200, 100), ("Due Date", 360, 100),
        ("INV-7781", 40, 114), ("5 March 2018", 200, 114), ("4 April 2018", 360, 114),
        ("Bill to:", 40, 160), ("Client Corp Ltd", 40, 174),
        ("Amount due", 360, 300), ("£ 250.00", 360, 314),
    )
    doc = ReadDocument(text="Invoice No Invoice Date Due Date £ 250.00", pages=1, media_type="application/pdf", words=words)
    got = fill_invoice(doc)
    assert got["invoice_number"] == "INV-7781"
    assert got["issue_date"] == "2018-03-05"
    assert got["due_date"] == "2018-04-04"
    assert got["totals"]["grand_total"] == pytest.approx(250.0)
    assert got["currency"] == "GBP"
    assert got["seller"]["name"] != "Client Corp Ltd"  # the buyer block is never the seller


def test_a_vat_breakdown_column_does_not_beat_the_labelled_vat_total() -> None:
    """Two rates: the breakdown's 'VAT amount' column heads one value per rate; the document's tax
    total is the amount printed beside 'VAT total', wherever the two labels' lengths put them."""
    words = _words(
        ("Invoice # 2024-17", 40, 100),
        ("Net total:", 40, 300), ("600.00 €", 200, 300),
        ("VAT", 40, 330), ("Net amount", 120, 330), ("VAT amount", 260, 330),
        ("7%", 40, 344), ("100.00 €", 120, 344), ("7.00 €", 260, 344),
        ("19%", 40, 358), ("500.00 €", 120, 358), ("95.00 €", 260, 358),
        ("VAT total:", 200, 380), ("102.00 €", 300, 380),
        ("Due payable:", 40, 400), ("702.00 €", 200, 400),
    )
    doc = ReadDocument(text="Invoice # 2024-17", pages=1, media_type="application/pdf", words=words)
    totals = fill_invoice(doc)["totals"]
    assert totals["tax_total"] == pytest.approx(102.0)
    assert totals["tax_basis_total"] == pytest.approx(600.0) and totals["grand_total"] == pytest.approx(702.0)


def test_a_column_header_s_value_below_is_still_read_when_nothing_is_beside_a_label() -> None:
    words = _words(("Invoice # 2024-18", 40, 100), ("VAT amount", 300, 330), ("19.00 €", 300, 344), ("Total", 40, 380), ("119.00 €", 300, 380))
    doc = ReadDocument(text="Invoice # 2024-18", pages=1, media_type="application/pdf", words=words)
    assert fill_invoice(doc)["totals"]["tax_total"] == pytest.approx(19.0)


def test_the_recipient_under_a_return_address_line_is_the_buyer() -> None:
    """A window-envelope letter: the small sender line, a salutation, then the recipient."""
    words = _words(
        ("Muster Handel GmbH", 300, 40),
        ("Muster Handel GmbH • Hauptstr. 5 • 10115 Berlin", 40, 120),
        ("Frau", 40, 134), ("Erika Beispiel", 40, 146), ("Bahnweg 7", 40, 158), ("80331 München", 40, 170),
        ("Rechnung Nr. 2024-9", 40, 240), ("Gesamtbetrag", 40, 400), ("119,00 €", 300, 400),
    )
    got = fill_invoice(ReadDocument(text="Rechnung Nr. 2024-9", pages=1, media_type="application/pdf", words=words))
    assert got["buyer"]["name"] == "Erika Beispiel"
    assert got["seller"]["name"] == "Muster Handel GmbH"


def test_a_letterhead_line_with_a_phone_under_it_names_no_buyer() -> None:
    """Parts joined by ' - ' are a letterhead's, and a line with digits under it is no name."""
    words = _words(
        ("Au bon moulin SARL - 1242 chemin de l'olive - 84340 Malaucène - France", 40, 40),
        ("Tel +33 4 50 44 68 99 | 84340 Malaucène | France", 40, 54), ("+33 4 50 44 68 98", 40, 68),
        ("Facture FA-2017-9", 40, 120), ("Total TTC", 40, 400), ("120,00 €", 300, 400),
    )
    got = fill_invoice(ReadDocument(text="Facture FA-2017-9", pages=1, media_type="application/pdf", words=words))
    assert got["buyer"]["name"] is None


def test_a_buyer_label_wins_over_the_window() -> None:
    words = _words(
        ("Acme GmbH | Europa-Allee 1 | 60486 Frankfurt", 40, 120), ("Karl Coyote", 40, 134),
        ("Rechnungsempfänger:", 300, 200), ("Road Runner AG", 300, 214),
        ("Rechnung Nr. 42", 40, 260),
    )
    got = fill_invoice(ReadDocument(text="Rechnung Nr. 42", pages=1, media_type="application/pdf", words=words))
    assert got["buyer"]["name"] == "Road Runner AG"


@pytest.mark.parametrize(
    ("title", "code"),
    [
        ("Baurechnung (204) Nr. 181301674 vom 25.04.2018", "204"),  # the printed BT-3 code wins over the word
        ("Rechnung des Versicherers (575) Nr. 0815 vom 06.12.2018", "575"),
        ("Gutschrift (Selbst ausgestellte Rechnung) (389) Nr. 7", "389"),
        ("Rechnung Nr. 42 (999)", "380"),  # not an EN 16931 invoice type code: the word decides
        ("Rechnung Nr. 42\nLieferschein (80)", "380"),  # a code on another line is not the title's
    ],
)
def test_an_invoice_type_code_printed_after_the_title_is_read(title: str, code: str) -> None:
    got = fill_invoice(ReadDocument(text=f"{title}\nGesamtbetrag 119,00 EUR", pages=1, media_type="text/plain"))
    assert got["document_type_code"] == code


def test_docx_like_tables() -> None:
    tables = [
        [["Fattura n.", "2024/118"], ["Data", "12/03/2024"], ["Scadenza", "11/04/2024"]],
        [
            ["Descrizione", "Quantità", "Prezzo", "Importo"],
            ["Consulenza", "2", "100,00", "200,00"],
            ["Trasferta", "1", "50,00", "50,00"],
            ["Totale", "", "", "305,00"],
        ],
    ]
    text = "Rossi S.r.l.\nP.IVA IT12345678903\nIBAN IT60X0542811101000000123456\n" + "\n".join(
        "\t".join(row) for table in tables for row in table
    )
    doc = ReadDocument(text=text, pages=None, media_type="application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                       tables=tables)
    got = fill_invoice(doc)
    assert got["invoice_number"] == "2024/118"
    assert got["issue_date"] == "2024-03-12"
    assert got["due_date"] == "2024-04-11"
    assert got["totals"]["grand_total"] == pytest.approx(305.0)
    assert got["seller"]["vat_id"] == "IT12345678903"
    assert got["payment"]["iban"] == "IT60X0542811101000000123456"
    assert [item["line_total"] for item in got["line_items"]] == [200.0, 50.0]
    assert [item["quantity"] for item in got["line_items"]] == [2.0, 1.0]
    assert got["line_items"][0]["name"] == "Consulenza"


def test_fill_invoice_empty_and_shape() -> None:
    from blocks.invoice_schema import Invoice

    got = fill_invoice(ReadDocument(text="", pages=0, media_type="text/plain"))
    assert got == Invoice().model_dump()
    Invoice.model_validate(fill_invoice(ReadDocument(text="Invoice 123\nTotal 10,00 EUR", pages=None, media_type="text/plain")))


def test_a_series_letter_printed_apart_from_its_number_stays_with_it() -> None:
    from blocks.document import ReadDocument
    from blocks.layout import fill_invoice

    text = "Muster GmbH\nRechnung Nr.: A 2021-17\nRechnungsdatum: 03.02.2021\nGesamtbetrag: 119,00 EUR\n"
    fields = fill_invoice(ReadDocument(text=text, pages=None, media_type="text/plain"))
    assert fields["invoice_number"] == "A 2021-17"
    text = "Muster GmbH\nRechnung Nr.: 2021-17 vom 03.02.2021\nGesamtbetrag: 119,00 EUR\n"
    assert fill_invoice(ReadDocument(text=text, pages=None, media_type="text/plain"))["invoice_number"] == "2021-17"


def test_the_buyer_is_the_name_of_the_block_under_its_label() -> None:
    from blocks.document import ReadDocument
    from blocks.layout import fill_invoice

    text = (
        "Lieferant GmbH\nRechnung Nr. 4711\nDatum: 05.06.2018\nKäufer/Leistungsempfänger\nNummer: GE2020211\n"
        "Name: Kunden AG Mitte\nAnschrift: Kundenstraße 15\nGesamtbetrag: 119,00 EUR\n"
    )
    fields = fill_invoice(ReadDocument(text=text, pages=None, media_type="text/plain"))
    assert fields["buyer"]["name"] == "Kunden AG Mitte"
    text = "ACME Ltd\nInvoice No. 17\nBill to: Contoso Inc.\nTotal: 10.00 USD\n"
    assert fill_invoice(ReadDocument(text=text, pages=None, media_type="text/plain"))["buyer"]["name"] == "Contoso Inc."
