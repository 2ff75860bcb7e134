"""The built-in receipt schema: what a till receipt or a card slip says, smaller than an invoice.

A receipt names a merchant, not a seller and a buyer; it has a time of day, a payment method and
usually one total with the tax included. Model extractors fill it from its JSON Schema when a
batch asks for `receipt`; the key names are the ones receipt datasets (SROIE) and the hosted
receipt APIs use. Every key is always present; `None` means "not on the receipt".
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReceiptLine(_Part):
    name: str | None = Field(default=None, description="What was bought, as printed.")
    quantity: float | None = Field(default=None, description="How many (1 when not printed).")
    unit_price: float | None = Field(default=None, description="Price of one, as a number.")
    total: float | None = Field(default=None, description="Line amount, as a number.")


class ReceiptFields(_Part):
    merchant_name: str | None = Field(default=None, description="The shop or company that issued the receipt.")
    merchant_address: str | None = Field(default=None, description="The merchant's address, one line.")
    date: str | None = Field(default=None, description="Date of the purchase, ISO 8601 (YYYY-MM-DD).")
    time: str | None = Field(default=None, description="Time of the purchase, 24-hour HH:MM.")
    total: float | None = Field(default=None, description="Amount paid, tax included, as a number.")
    tax: float | None = Field(default=None, description="Tax (VAT, GST, sales tax) included or added, as a number.")
    currency: str | None = Field(default=None, description="ISO 4217 code, e.g. EUR, USD, MYR.")
    payment_method: str | None = Field(default=None, description="cash, card, or what the receipt names.")
    line_items: list[ReceiptLine] = Field(default_factory=list, description="One entry per purchased item.")


def receipt_columns() -> list[str]:
    """The receipt schema's scalar fields as export columns (line items go to line_items.csv)."""
    return [name for name, field in ReceiptFields.model_fields.items() if name != "line_items"]
