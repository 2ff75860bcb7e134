"""How fast a batch's results load into its SQL database: N synthetic invoice results (each with
a few line items) through `tasks.database.DatabaseSink`, as a batch feeds it, into a real
PostgreSQL started here (Debian's binaries, initdb in a temporary folder) and into SQLite.

Prints, per database: seconds to upsert N documents the first time, seconds to upsert the same
N again (a re-run: every row conflicts and is updated), rows per second, and checks the row
counts. The baseline is the same rows written one statement per document (`--baseline`), the
plain way a hand-written loader would do it.

    .venv/bin/python benchmarks/database.py --n 10000 [--json] [--baseline]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert  # noqa: E402

from blocks.models import BatchReport, BatchTotals, DocumentRef, DocumentResult  # noqa: E402
from tasks.database import DatabaseSink, Target, count_rows, document_row, documents, prepare  # noqa: E402
from tests.postgres_server import PostgresServer  # noqa: E402 - the tests' throw-away server

LINES = 3


def results(n: int) -> list[DocumentResult]:
    made = []
    for index in range(n):
        fields: dict[str, Any] = {
            "invoice_number": f"INV-{index:06d}", "issue_date": "2026-11-30", "currency": "EUR",
            "seller": {"name": f"Seller {index % 97}", "vat_id": "DE123456789"}, "buyer": {"name": "Buyer GmbH"},
            "totals": {"tax_basis_total": 100.0 + index, "tax_total": 19.0, "grand_total": 119.0 + index},
            "line_items": [{"name": f"item {k}", "quantity": 1.0, "net_unit_price": 10.0 * k, "line_total": 10.0 * k} for k in range(LINES)],
        }
        ref = DocumentRef(index=index, uri=f"/bench/in/doc-{index:06d}.pdf", name=f"doc-{index:06d}.pdf", size=1000, fingerprint="1:1")
        made.append(DocumentResult(ref=ref, status="succeeded", fields=fields, pages=1, media_type="application/pdf"))
    return made


def report(batch: list[DocumentResult]) -> BatchReport:
    now = datetime.now(timezone.utc)
    return BatchReport(
        name="bench", source="/bench/in", status="completed", message="", totals=BatchTotals(total=len(batch), succeeded=len(batch)),
        progress=100.0, started=now, finished=now, duration_s=0.0, extractor="bench",
    )


def load(target: Target, batch: list[DocumentResult], feed: int = 50) -> float:
    """Seconds from the first result to the batch's last row, fed `feed` results at a time."""
    started = time.perf_counter()
    sink = DatabaseSink(target, "bench-batch", "bench-config")
    for start in range(0, len(batch), feed):
        sink.add(batch[start:start + feed])
    outcome = sink.finish(report(batch))
    assert outcome.error is None, outcome.error
    return time.perf_counter() - started


def one_by_one(target: Target, batch: list[DocumentResult]) -> float:
    """The baseline: one INSERT statement and one transaction per document (no line items)."""
    engine = target.engine()
    prepare(engine)
    now = datetime.now(timezone.utc)
    started = time.perf_counter()
    for result in batch:
        with engine.begin() as connection:
            connection.execute(insert(documents), document_row(result, "baseline", "baseline-config", now))
    seconds = time.perf_counter() - started
    engine.dispose()
    return seconds


def measure(label: str, target: Target, batch: list[DocumentResult], baseline: bool) -> dict[str, Any]:
    first = load(target, batch)
    again = load(target, batch)
    engine = target.engine()
    counts = count_rows(engine, "bench-batch")
    engine.dispose()
    assert counts["documents"] == len(batch) and counts["line_items"] == len(batch) * LINES, counts
    row: dict[str, Any] = {
        "database": label, "documents": len(batch), "first_s": round(first, 2), "again_s": round(again, 2),
        "documents_per_s": round(len(batch) / first), "rows": counts,
    }
    if baseline:
        row["one_by_one_s"] = round(one_by_one(target, batch), 2)
        row["speedup"] = round(row["one_by_one_s"] / first, 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--baseline", action="store_true", help="also time one INSERT per document")
    args = parser.parse_args()
    batch = results(args.n)
    rows = []
    with PostgresServer() as pg:
        database = pg.new_database()
        url = pg.url(database, password=True)
        rows.append(measure("postgresql", Target(url=url, shown=pg.url(database)), batch, args.baseline))
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/bench.db"
        rows.append(measure("sqlite", Target(url=url, shown=url), batch, args.baseline))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'database':<12}{'documents':>10}{'first s':>9}{'again s':>9}{'docs/s':>9}{'1-by-1 s':>10}")
    for row in rows:
        print(f"{row['database']:<12}{row['documents']:>10}{row['first_s']:>9}{row['again_s']:>9}{row['documents_per_s']:>9}"
              f"{row.get('one_by_one_s', ''):>10}")


if __name__ == "__main__":
    main()
