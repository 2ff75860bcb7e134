"""Receipts in the embedded extractor: detection, the receipt schema's fields, and a batch that mixes
receipts and invoices (real OCR on a SROIE receipt photo; text receipts written here)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from blocks.document import ReadDocument
from blocks.embedded import EmbeddedExtractor
from blocks.receipts import fill_receipt, looks_like_receipt
from tests.conftest import corpus

US_RECEIPT = """\
      Corner Coffee Co.
   1200 Market Street, Suite 4
     San Francisco, CA 94103
       Tel: (415) 555-0142
Server: Dana        Table 12
03/04/2024          07:45 PM
2  Latte                 9.50
1  Bagel                 3.25
Subtotal                12.75
Sales Tax 8.625%         1.10
TOTAL                  $13.85
VISA ************4242   13.85
Thank you, come again!
"""

INVOICE = """\
ACME Tools GmbH
Invoice number: RE-2024-001
Invoice date: 05.03.2024
Due date: 04.04.2024
Bill to: Beta Bau AG
Net amount: 100.00 EUR
VAT 19%: 19.00
Total: 119.00 EUR
IBAN: DE89 3704 0044 0532 0130 00
"""


def doc(text: str) -> ReadDocument:
    return ReadDocument(text=text, pages=None, media_type="text/plain")


def test_a_us_receipt_fills_the_receipt_schema() -> None:
    assert looks_like_receipt(doc(US_RECEIPT))
    fields = fill_receipt(doc(US_RECEIPT))
    assert fields["merchant_name"] == "Corner Coffee Co"
    assert fields["merchant_address"] == "1200 Market Street, Suite 4, San Francisco, CA 94103"
    assert (fields["date"], fields["time"]) == ("2024-03-04", "19:45")  # $: month first
    assert (fields["total"], fields["tax"], fields["currency"], fields["payment_method"]) == (13.85, 1.10, "USD", "visa")
    assert fields["line_items"] == []


TABLE_RECEIPT = """\
KEDAI RUNCIT MAJU SDN BHD
(123456-A)
LOT 5, JALAN MAWAR 2, 43000 KAJANG
CASH RECEIPT
Date: 17/03/2018        Time: 15:02:00
Cashier: USER
Item          Qty    U/P     Amount  Tax
100088         3     2.50      7.50  SR
COOKING OIL 1KG
200417         1    12.90     12.90  SR
RICE 5KG
  DISCOUNT                      0.00
  Sub Total:                   20.40
  GST Payable:                  1.22
  Rounding:                    -0.02
  TOTAL:                       21.60
  CASH:                        50.00
  CHANGE:                      28.40
"""

TWO_ROW_ITEMS = """\
SUSHI KING SDN BHD
No 1, Jalan Dutamas, 50480 KL
Date: 20/10/2016 Time: 3:08:19PM
Description
Unit Price   Unit   Discount   Amount   Tax
ALACARTE SUSHI 2.80
RM2.80   2   0.00   RM5.60SR
ALACARTE SUSHI 1.80
RM1.80   2   0.00   RM3.60 SR
Total Excl GST          RM9.20
GST:                    RM0.55
Total Sales:            RM9.75
Tendered:              RM10.00
Change:                 RM0.25
"""


def test_an_item_table_gives_line_items_with_names_under_their_codes() -> None:
    fields = fill_receipt(doc(TABLE_RECEIPT))
    assert fields["line_items"] == [
        {"name": "COOKING OIL 1KG", "quantity": 3.0, "unit_price": 2.5, "total": 7.5},
        {"name": "RICE 5KG", "quantity": 1.0, "unit_price": 12.9, "total": 12.9},
    ]  # the discount, subtotal and the rest are labelled lines, not items
    assert (fields["total"], fields["tax"], fields["currency"]) == (21.6, 1.22, None)  # 'GST Payable' is the tax


def test_an_item_printed_on_two_rows_is_one_line_item() -> None:
    fields = fill_receipt(doc(TWO_ROW_ITEMS))
    assert [(i["name"], i["quantity"], i["unit_price"], i["total"]) for i in fields["line_items"]] == [
        ("ALACARTE SUSHI", 2.0, 2.8, 5.6), ("ALACARTE SUSHI", 2.0, 1.8, 3.6),
    ]
    assert (fields["total"], fields["tax"], fields["time"]) == (9.75, 0.55, "15:08:19")


def test_the_tax_comes_from_the_tax_summary_when_no_line_labels_it() -> None:
    text = (
        "HARDWARE CENTRE SDN BHD\nCASH\nCashier: A\nTotal Amt Incl. GST @ 6 % : 156.00\nTotal Amt Payable : 156.00\n"
        "GST Summary     Amount (RM)    GST(RM)\nSR = 6 %             147.17         8.83\nThank you\n"
    )
    assert (fill_receipt(doc(text))["total"], fill_receipt(doc(text))["tax"]) == (156.0, 8.83)
    # OCR's letter O for a leading zero is read as 0
    assert fill_receipt(doc("YAM FRESH\nCash RM10.50\n6% GST RMO.47\nGrand Total RM8.35\nChange RM2.15\n"))["tax"] == 0.47


def test_without_an_item_table_no_line_items_are_guessed() -> None:
    assert fill_receipt(doc("SHOP LTD\nCASH\nCashier: A\nCoffee 3.50\nTOTAL 3.50\nCASH 5.00\nCHANGE 1.50\n"))["line_items"] == []


def test_an_invoice_is_not_taken_for_a_receipt() -> None:
    assert not looks_like_receipt(doc(INVOICE))
    # 'Receipt No.' and 'thank you' alone (a statement, an invoice) are no till receipt
    assert not looks_like_receipt(doc("Receipt # No.: 2468\nSold To Fabrikam\nTotal $4,950\nThank you for your business!"))


FRENCH_TICKET = """\
        Contoso
     1 RUE DE LA DURANCE
      75012 PARIS FRANCE
21-10-21            13:10:48
TABLE 1
     GRAINE DE CHIA  3.00 B
     POKE           20.00 C
   TOTAL             21.00
 VOUS REMERCIE DE VOTRE VISITE
"""

SHOP_RECEIPT = """\
             Contoso
 123 Main Street
 Redmond, WA 98052
 123-456-7890
 6/10/2019 13:59
 Sales Associate: Paul
 1 SurfacePen            $99.99
       Sub-Total         $99.99
           Tax            $9.50
          Total         $109.49
"""


def test_receipts_without_a_cash_line_are_receipts_by_their_till_or_table() -> None:
    # a served table and a time (French, thanks in French), a sales associate's label and a time
    assert looks_like_receipt(doc(FRENCH_TICKET)) and looks_like_receipt(doc(SHOP_RECEIPT))
    french = fill_receipt(doc(FRENCH_TICKET))
    assert (french["merchant_name"], french["date"], french["time"], french["total"], french["currency"]) == (
        "Contoso", "2021-10-21", "13:10:48", 21.0, None,  # no currency printed: none guessed
    )
    shop = fill_receipt(doc(SHOP_RECEIPT))
    # the address ends at the bare telephone number; the date's line gives the time
    assert shop["merchant_address"] == "123 Main Street, Redmond, WA 98052"
    assert (shop["date"], shop["time"], shop["total"], shop["tax"], shop["currency"]) == ("2019-06-10", "13:59", 109.49, 9.5, "USD")


def test_invoice_columns_and_positions_are_no_till_marks() -> None:
    # a US invoice with a SALESPERSON column and a thank-you; a German one numbering its lines 'Pos.'
    # and printing a time: neither was sold at a till
    us = "CONTOSO LTD.\nINVOICE\nSALESPERSON   P.O. NUMBER   SHIP DATE\nJohn   12345   11/15/2019\nTOTAL $110.00\nTHANK YOU"
    german = "Lieferant GmbH\nRechnung 471102\nDatum 18.03.2018 15:39\nPos.  Artikel  Menge  Preis\n1  Bahnfahrt  1  17,15\nGesamt 17,15 EUR"
    assert not looks_like_receipt(doc(us)) and not looks_like_receipt(doc(german))


def test_a_folio_total_with_equal_charges_and_credits_is_read() -> None:
    text = "Contoso Inn\n5600 148th Ave NE\nClerk: MVB\nRoom Charge 88.00\nAmerican Express 104.92\nTotal 104.92 104.92\n"
    assert looks_like_receipt(doc(text))
    fields = fill_receipt(doc(text))
    assert (fields["merchant_name"], fields["total"], fields["payment_method"]) == ("Contoso Inn", 104.92, "amex")


def test_the_total_is_the_final_one_not_a_subtotal_tax_or_table_row() -> None:
    text = (
        "SHOP SDN BHD\n(12345-A)\nCASH\nCashier: A\nSub Total : 7.55\nTotal GST : 0.45\nRounding : 0.00\n"
        "Total Sales (Inclusive of GST) : 8.00\nCASH : 10.00\nChange : 2.00\nGST SUMMARY\nTotal : 7.55 0.45\n"
    )
    fields = fill_receipt(doc(text))
    assert (fields["merchant_name"], fields["total"], fields["tax"], fields["payment_method"]) == ("SHOP SDN BHD", 8.0, 0.45, "cash")


def test_a_receipt_photo_goes_through_ocr_into_the_receipt_schema() -> None:
    photo = corpus("sroie", "receipts", "sroie_151", "sroie_151.jpg")
    expected = json.loads(photo.with_name("sroie_151.expected.json").read_text())
    result = EmbeddedExtractor().extract(photo.name, photo.read_bytes())
    assert (result.schema_name, result.fields_source, result.ocr) == ("receipt", "receipt-layout", True)
    assert result.fields["merchant_name"] == expected["company"]
    assert result.fields["date"] == "2018-03-21" and result.fields["total"] == float(expected["total"])
    total = result.provenance["total"]
    assert total["page"] == 1 and total["box"] and 0 < total["confidence"] <= 1


def test_a_receipt_photo_from_another_country_is_read_too() -> None:
    # Microsoft's Contoso receipt (a US shop, MIT), not one of the SROIE receipts the rules were measured on
    photo = corpus("azure-form-recognizer", "unlabeled", "contoso-receipt.png")
    result = EmbeddedExtractor().extract(photo.name, photo.read_bytes())
    assert (result.schema_name, result.ocr) == ("receipt", True)
    fields = result.fields
    assert (fields["merchant_name"], fields["date"], fields["time"]) == ("Contoso", "2019-06-10", "13:59")
    assert (fields["total"], fields["tax"], fields["currency"]) == (1203.39, 104.4, "USD")
    assert fields["merchant_address"] == "123 Main Street, Redmond, WA 98052"


def test_the_schema_can_be_forced_either_way() -> None:
    receipt = EmbeddedExtractor(document_schema="invoice").extract("r.txt", US_RECEIPT.encode())
    assert receipt.schema_name == "invoice" and receipt.fields_source == "layout"
    invoice = EmbeddedExtractor(document_schema="receipt").extract("i.txt", INVOICE.encode())
    assert invoice.schema_name == "receipt" and invoice.fields["merchant_name"] == "ACME Tools GmbH"
    batch = EmbeddedExtractor().with_batch_settings(schema="receipt", prompt="")
    assert batch.document_schema == "receipt" and "merchant_name" in batch.output_fields
    with pytest.raises(ValueError, match="invoice or receipt"):
        EmbeddedExtractor().with_batch_settings(schema='{"type": "object"}', prompt="")


@pytest.mark.usefixtures("prefect_api")
def test_a_batch_of_receipts_and_invoices_exports_both_schemas(tmp_path: Path) -> None:
    from flows.batch import extract_batch
    from flows.params import ExportSettings, ExtractionSettings

    source = tmp_path / "in"
    source.mkdir()
    (source / "a-receipt.txt").write_text(US_RECEIPT)
    (source / "c-receipt.txt").write_text(TABLE_RECEIPT)
    (source / "b-invoice.txt").write_text(INVOICE)
    report = extract_batch(
        source=str(source), extraction=ExtractionSettings(), export=ExportSettings(output_dir=str(tmp_path / "out"))
    )
    assert [(r.ref.name, r.schema_name) for r in report.results] == [
        ("a-receipt.txt", "receipt"), ("b-invoice.txt", "invoice"), ("c-receipt.txt", "receipt"),
    ]
    receipt = report.results[2]
    assert receipt.review != "needs_review", receipt.review_reasons  # its lines and tax add up to its total
    assert receipt.provenance["line_items"][1]["name"]["text"] == "RICE 5KG"
    with open(report.exports["documents.csv"], newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["merchant_name"] == "Corner Coffee Co" and rows[0]["total"] == "13.85"
    assert rows[1]["invoice_number"] == "RE-2024-001" and rows[1]["merchant_name"] == ""
    with open(report.exports["line_items.csv"], newline="", encoding="utf-8") as handle:
        items = list(csv.DictReader(handle))
    assert [(item["file"], item["name"], item["total"]) for item in items if item["file"] == "c-receipt.txt"] == [
        ("c-receipt.txt", "COOKING OIL 1KG", "7.5"), ("c-receipt.txt", "RICE 5KG", "12.9"),
    ]
