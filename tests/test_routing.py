"""Mixed folders through the routing-extractor: path, content type, keyword and model-classification
rules, the default route, skipped documents, and the route as a column; the model side is the
scripted OpenAI-protocol server on 127.0.0.1."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pandas as pd
import pytest

from blocks.errors import DocumentError
from blocks.openai_compatible import OpenAICompatibleExtractor
from blocks.routing import Route, RoutingExtractor
from tests.conftest import corpus
from tests.openai_server import Script, openai_server
from tests.test_cli import docbatch

PO_SCHEMA = {"type": "object", "properties": {"po_number": {"type": "string"}}, "required": ["po_number"]}


def _model_block(url: str) -> str:
    name = f"m-{uuid.uuid4().hex[:8]}"
    OpenAICompatibleExtractor(base_url=url, model="fake-model").save(name)
    return f"openai-compatible-extractor/{name}"


def _folder(root: Path) -> Path:
    (root / "orders").mkdir(parents=True)
    (root / "orders" / "po-1.txt").write_text("PURCHASE ORDER\npo_number: PO-1\n")
    (root / "letters").mkdir()
    (root / "letters" / "invoice.txt").write_text("INVOICE\nInvoice No: 4711\nDate: 05.03.2021\nTotal: 119.00 EUR\n")
    (root / "letters" / "hello.txt").write_text("Dear friend, nothing to extract here.\n")
    (root / "xml").mkdir()
    bare = corpus("zugferd", "xml-rechnung", "EN16931_Einfach", "EN16931_Einfach.cii.xml")
    (root / "xml" / "einfach.xml").write_bytes(bare.read_bytes())
    return root


def _router(model: str, schema: Path, **kw: object) -> RoutingExtractor:
    return RoutingExtractor(routes=[
        Route(name="e-invoices", media_types=["application/xml"]),
        Route(name="orders", paths=["orders/"], extractor=model, target_schema=str(schema), prompt="Purchase orders."),
        Route(name="invoices", keywords=["invoice", "rechnung"]),
    ], **kw)  # type: ignore[arg-type]


def test_each_rule_sends_its_documents_to_its_extractor(prefect_api: str, tmp_path: Path) -> None:
    folder = _folder(tmp_path / "in")
    schema = tmp_path / "po.json"
    schema.write_text(json.dumps(PO_SCHEMA))
    script = Script()
    with openai_server(script) as url:
        router = _router(_model_block(url), schema)
        router.check()
        order = router.extract("orders/po-1.txt", (folder / "orders" / "po-1.txt").read_bytes())
        xml = router.extract("xml/einfach.xml", (folder / "xml" / "einfach.xml").read_bytes())
        invoice = router.extract("letters/invoice.txt", (folder / "letters" / "invoice.txt").read_bytes())
        with pytest.raises(DocumentError) as caught:
            router.extract("letters/hello.txt", (folder / "letters" / "hello.txt").read_bytes())
    assert (order.route, order.fields, order.fields_source) == ("orders", {"po_number": "PO-1"}, "model:fake-model")
    assert (xml.route, xml.fields_source, xml.fields["invoice_number"]) == ("e-invoices", "xml", "471102")
    assert (invoice.route, invoice.fields_source, invoice.fields["invoice_number"]) == ("invoices", "layout", "4711")
    assert caught.value.skip and "no route took it" in caught.value.message
    assert len(script.requests) == 1  # only the order went to the model
    assert "Purchase orders." in script.requests[0]["body"]["messages"][0]["content"]


def test_a_model_classifies_for_routes_with_a_document_type(prefect_api: str, tmp_path: Path) -> None:
    script = Script()
    with openai_server(script) as url:
        model = _model_block(url)
        router = RoutingExtractor(classifier=model, routes=[
            Route(name="orders", document_type="purchase_order", description="A buyer orders goods", extractor="embedded"),
            Route(name="rest", document_type="contract", description="An agreement"),
        ], default_route="rest")
        router.check()
        order = router.extract("a.txt", b"Some text\ndocument_type: purchase_order\n")
        other = router.extract("b.txt", b"Some text\ndocument_type: other\n")
    assert order.route == "orders" and other.route == "rest"
    assert any("default route 'rest'" in w for w in other.warnings)
    assert order.tokens_in and order.tokens_out  # the classification's tokens are the document's
    schema = script.requests[0]["body"]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["document_type"]["enum"] == ["purchase_order", "contract", "other"]
    assert "A buyer orders goods" in script.requests[0]["body"]["messages"][0]["content"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"routes": []}, "no routes"),
        ({"routes": [Route(name="a", paths=["*"]), Route(name="a", keywords=["x"])]}, "must differ"),
        ({"routes": [Route(name="a", paths=["*"])], "default_route": "b"}, "is not one of the routes"),
        ({"routes": [Route(name="a", document_type="x")]}, "needs a classifier"),
        ({"routes": [Route(name="a")]}, "has no condition"),
        ({"routes": [Route(name="a", paths=["*"], extractor="openai-compatible-extractor/absent-block")]}, "route 'a'"),
        ({"routes": [Route(name="a", paths=["*"], target_schema='{"type": "object", "properties": {"po": {"type": "string"}}}')]}, "model extractor"),
    ],
)
def test_a_routing_block_that_cannot_work_is_refused(prefect_api: str, settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RoutingExtractor(**settings).check()


def test_a_mixed_folder_through_the_cli_records_the_route_per_document(cli_env: dict[str, str], prefect_api: str, tmp_path: Path) -> None:
    folder = _folder(tmp_path / "in")
    schema = tmp_path / "po.json"
    schema.write_text(json.dumps(PO_SCHEMA))
    with openai_server(Script()) as url:
        name = f"inbox-{uuid.uuid4().hex[:8]}"
        _router(_model_block(url), schema).save(name)
        done = docbatch(cli_env, "run", str(folder), "-o", str(tmp_path / "out"), "--json", "--extractor",
                        f"routing-extractor/{name}", "-f", "csv", "-f", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    routes = {r["ref"]["name"]: (r["status"], r["route"]) for r in report["results"]}
    assert routes == {
        "letters/hello.txt": ("skipped", None), "letters/invoice.txt": ("succeeded", "invoices"),
        "orders/po-1.txt": ("succeeded", "orders"), "xml/einfach.xml": ("succeeded", "e-invoices"),
    }
    assert report["status"] == "completed" and report["totals"]["skipped"] == 1
    table = pd.read_csv(Path(report["output_dir"]) / "documents.csv")
    assert list(table["route"].fillna("")) == ["", "invoices", "orders", "e-invoices"]
