"""A whole batch through `docbatch run`: e-invoices, templated invoices and office files in one folder.

The report and the exports must carry the same records the extractor gives (the corpus'
expected values), say how each was obtained, and flatten the invoice schema into CSV columns
with one line_items.csv row per line item.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from tests.conftest import CORPUS, copy_into, corpus
from tests.test_cli import docbatch

ZUGFERD = ["xml-rechnung/EN16931_Einfach", "embedded/Konik__acme_invoice-42_ZUGFeRD", "embedded/FNFE-factur-x-examples__Avoir_FR_type381_BASIC"]
TEMPLATED = ["AmazonWebServices", "coolblue1", "Orlen"]


def _batch_folder(tmp_path: Path) -> tuple[Path, Path, dict[str, dict]]:
    """Documents and templates in tmp_path; returns (documents, templates, expected fields by file name)."""
    documents, templates = tmp_path / "in", tmp_path / "templates"
    templates.mkdir()
    expected: dict[str, dict] = {}
    for case in ZUGFERD:
        folder = CORPUS / "zugferd" / case
        pdf = next(folder.glob("*.pdf"))
        copy_into(documents / "e-invoices", pdf)
        truth = json.loads(next(folder.glob("*.expected.json")).read_text())
        truth.pop("source_xml")
        expected[f"e-invoices/{pdf.name}"] = truth
    bare = corpus("zugferd", "xml-rechnung", "EN16931_Gutschrift", "EN16931_Gutschrift.cii.xml")
    copy_into(documents / "e-invoices", (bare, "gutschrift.xml"))
    truth = json.loads(bare.with_name("EN16931_Gutschrift.expected.json").read_text())
    truth.pop("source_xml")
    expected["e-invoices/gutschrift.xml"] = truth
    for case in TEMPLATED:
        folder = corpus("invoice2data", "compare", case)
        source = next(p for p in folder.iterdir() if p.suffix in (".pdf", ".txt"))
        copy_into(documents / "templated", source)
        for template in folder.glob("template_*"):
            shutil.copyfile(template, templates / template.name)
        expected[f"templated/{source.name}"] = json.loads(next(folder.glob("*.expected.json")).read_text())[0]
    copy_into(documents / "office", corpus("office", "docx", "tbl-2x2-table.docx"))
    return documents, templates, expected


def test_one_batch_gives_full_records_from_xml_templates_and_layout(cli_env: dict[str, str], tmp_path: Path) -> None:
    documents, templates, expected = _batch_folder(tmp_path)
    done = docbatch(
        cli_env, "run", str(documents), "-o", str(tmp_path / "out"), "--templates", str(templates), "--json", "-c", "2",
        "-f", "csv", "-f", "json",
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "| ERROR" not in done.stderr
    report = json.loads(done.stdout)
    assert report["status"] == "completed", report["message"]
    by_name = {r["ref"]["name"]: r for r in report["results"]}
    for name, truth in expected.items():
        result = by_name[name]
        assert {key: result["fields"].get(key) for key in truth} == truth, name
    assert by_name["e-invoices/gutschrift.xml"]["fields_source"] == "xml"
    assert {by_name[n]["fields_source"] for n in expected if n.endswith(".pdf") and n.startswith("e-invoices/")} == {"embedded-xml"}
    assert by_name["templated/Orlen.txt"]["fields_source"] == "template:template_pl.orlen.yml"
    assert by_name["templated/AmazonWebServices.pdf"]["reader"] == "pdftotext"  # the template pins it
    assert by_name["office/tbl-2x2-table.docx"]["fields_source"] == "layout"

    folder = Path(report["output_dir"])
    table = pd.read_csv(folder / "documents.csv").set_index("file")
    assert table.loc["e-invoices/EN16931_Einfach.pdf", "seller.name"] == expected["e-invoices/EN16931_Einfach.pdf"]["seller"]["name"]
    assert table.loc["e-invoices/EN16931_Einfach.pdf", "totals.grand_total"] == expected["e-invoices/EN16931_Einfach.pdf"]["totals"]["grand_total"]
    assert table.loc["templated/Orlen.txt", "fields_source"] == "template:template_pl.orlen.yml"
    items = pd.read_csv(folder / "line_items.csv")
    einfach = items[items["file"] == "e-invoices/EN16931_Einfach.pdf"]
    assert len(einfach) == len(expected["e-invoices/EN16931_Einfach.pdf"]["line_items"])
    assert list(einfach["name"]) == [item["name"] for item in expected["e-invoices/EN16931_Einfach.pdf"]["line_items"]]


def test_no_embedded_xml_reads_the_same_pdfs_from_their_text(cli_env: dict[str, str], tmp_path: Path) -> None:
    folder = CORPUS / "zugferd" / ZUGFERD[0]
    copy_into(tmp_path / "in", next(folder.glob("*.pdf")))
    done = docbatch(cli_env, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--json", "--no-embedded-xml", "-f", "json")
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)["results"]
    assert result["status"] == "succeeded" and result["fields_source"] == "layout"
    assert "syntax" not in result["fields"]


def test_a_broken_template_is_refused_with_exit_2_before_any_document(cli_env: dict[str, str], tmp_path: Path) -> None:
    copy_into(tmp_path / "in", corpus("invoice2data", "compare", "Orlen", "Orlen.txt"))
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "broken.yml").write_text("issuer: X\nkeywords: [X]\nfields:\n  amount: 'Total ([0-9]+'\n")
    done = docbatch(cli_env, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--templates", str(tmp_path / "templates"))
    assert done.returncode == 2, done.stderr
    assert "broken.yml" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("report.json"))
