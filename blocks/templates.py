"""Run invoice2data templates on text docbatch already read.

The template semantics are invoice2data's own: templates are built with its
`prepare_template` and `InvoiceTemplate`, matched with `matches_input`, and run with
`prepare_input` + `extract`. What docbatch adds is around that engine:

- templates are loaded one file at a time and checked up front, so a broken template
  folder is refused before any document is read (invoice2data would log and skip it);
- the text comes from docbatch's own readers (the PDFium text already read, then
  ``pdftotext -layout``, then pypdf's layout mode), tried lazily in invoice2data's
  cascade order, so a document matched on the first text costs no second read;
- failures become `DocumentError(ErrorKind.template)` instead of log lines.

This module runs in small parsing worker processes: it never imports Prefect, and
invoice2data is imported inside functions, so documents that use no templates do not
pay its import cost.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from blocks.errors import DocumentError
from blocks.models import ErrorKind

log = logging.getLogger("docbatch.templates")

TEMPLATE_SUFFIXES = (".yml", ".yaml", ".json")
# A corpus case folder holds the expected output next to the template: never a template.
EXPECTED_SUFFIX = ".expected.json"
# pdftotext on a pathological PDF can run for minutes; the template path must not hang a worker.
PDFTOTEXT_TIMEOUT = 60.0
# Field types invoice2data's coerce_type knows; anything else raises during extraction.
FIELD_TYPES = {"int", "float", "date", "datetime"}
# invoice2data backend names docbatch has a reader for (a template's `input_module` pin).
PINNABLE_READERS = {"pdfium", "pdftotext", "text"}

Reader = tuple[str, Callable[[], "str | None"]]


class TemplateError(ValueError):
    """A template folder that cannot be used: refused before any document is read. str() = '<file>: <reason>'."""

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(f"{file}: {reason}")
        self.file = file
        self.reason = reason

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Keeps (file, reason) through pickling: worker processes send exceptions back.
        return type(self), (self.file, self.reason)


# --------------------------------------------------------------------------- loading


def _template_files(folder: str) -> list[tuple[str, Path]]:
    """(relative posix name, path) of every template file under `folder`, sorted by name.

    Sorted so the digest and the template order (within a priority) do not depend on the
    file system's listing order; `.expected.json` files are corpus answers, not templates.
    """
    root = Path(folder)
    if not root.is_dir():
        raise TemplateError(folder, "the template folder does not exist or is not a folder")
    found = []
    for path in root.rglob("*"):
        name = path.name
        if path.is_file() and name.lower().endswith(TEMPLATE_SUFFIXES) and not name.endswith(EXPECTED_SUFFIX):
            found.append((path.relative_to(root).as_posix(), path))
    if not found:
        raise TemplateError(folder, "the folder holds no .yml, .yaml or .json template")
    return sorted(found)


def _digest(files: list[tuple[str, bytes]]) -> str:
    """sha256 over (name, bytes) pairs, length-prefixed so no two folders can collide by concatenation."""
    hasher = hashlib.sha256()
    for name, data in files:
        encoded = name.encode("utf-8")
        hasher.update(len(encoded).to_bytes(8, "big") + encoded)
        hasher.update(len(data).to_bytes(8, "big") + data)
    return hasher.hexdigest()


def template_digest(folder: str) -> str:
    """The folder's digest without parsing or building templates (cheap: used in the batch key)."""
    return _digest([(name, path.read_bytes()) for name, path in _template_files(folder)])


def _parse_file(name: str, data: bytes) -> dict[str, Any]:
    """The file's top-level mapping, loaded like invoice2data's read_templates (YAML safe loader / json)."""
    import yaml

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TemplateError(name, f"the file is not UTF-8 text ({exc})") from None
    if name.lower().endswith(".json"):
        try:
            tpl = json.loads(text)
        except ValueError as exc:
            raise TemplateError(name, f"not valid JSON: {exc}") from None
    else:
        try:
            tpl = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except yaml.YAMLError as exc:
            raise TemplateError(name, f"not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(tpl, dict):
        raise TemplateError(name, f"the top level must be a mapping of template keys, not {type(tpl).__name__}")
    return tpl


def _build(name: str, tpl: dict[str, Any]) -> Any:
    """An invoice2data InvoiceTemplate, built exactly as its loader builds one."""
    from invoice2data.extract.invoice_template import InvoiceTemplate
    from invoice2data.extract.loader import prepare_template

    tpl["template_name"] = Path(name).name  # invoice2data's template_name is the file name
    try:
        prepared = prepare_template(tpl)
        if prepared is None:
            raise TemplateError(name, "invoice2data refused the template")
        return InvoiceTemplate(prepared)
    except TemplateError:
        raise
    except Exception as exc:  # e.g. its AssertionError on a language code that is not 2 letters
        raise TemplateError(name, f"invoice2data cannot build the template: {exc}") from None


@dataclass(frozen=True)
class TemplateSet:
    """A validated template folder, with the digest of exactly the bytes that were loaded."""

    folder: str
    digest: str  # sha256 over (relative file name, file bytes) of every template file, sorted
    names: tuple[str, ...]
    # invoice2data InvoiceTemplates, highest priority first (its _by_priority order).
    templates: tuple[Any, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def load(cls, folder: str) -> TemplateSet:
        """Read, check and build every template of `folder`; raises TemplateError on the first bad file."""
        _quiet_invoice2data()
        files = [(name, path.read_bytes()) for name, path in _template_files(folder)]
        built = []
        for name, data in files:
            tpl = _parse_file(name, data)
            validate_template(name, tpl)
            built.append(_build(name, tpl))
        ordered = sorted(built, key=lambda t: t.get("priority", 5), reverse=True)  # stable, as invoice2data
        return cls(
            folder=folder,
            digest=_digest(files),
            names=tuple(t["template_name"] for t in ordered),
            templates=tuple(ordered),
        )


_CACHE: dict[tuple[str, str], TemplateSet] = {}
_CACHE_LOCK = threading.Lock()


def load_cached(folder: str, digest: str | None = None) -> TemplateSet:
    """The folder's TemplateSet, loaded once per process per (folder, digest).

    A parsing worker handles many documents: building templates once is the point. With a
    `digest` (the batch key's), a folder whose templates changed since the batch started is
    refused rather than silently giving documents of one batch different templates.
    """
    key_folder = os.path.abspath(folder)
    key_digest = digest or template_digest(folder)
    with _CACHE_LOCK:
        cached = _CACHE.get((key_folder, key_digest))
        if cached is not None:
            return cached
        loaded = TemplateSet.load(folder)
        if loaded.digest != key_digest:
            raise TemplateError(folder, "the templates changed since the batch started (digest differs): start a new batch")
        _CACHE[(key_folder, key_digest)] = loaded
        return loaded


# --------------------------------------------------------------------------- validation


def validate_template(name: str, tpl: dict[str, Any]) -> None:
    """Refuse, with the file and the reason, what would only fail (or silently do nothing) per document."""
    _check_keywords(name, tpl)
    fields = tpl.get("fields")
    if not isinstance(fields, dict) or not fields:
        raise TemplateError(name, "missing 'fields' (a mapping of field name to regex or parser settings)")
    issuer = tpl.get("issuer")
    if issuer is None and "issuer" not in fields:
        raise TemplateError(name, "missing 'issuer' (give it at the top level or as a field)")
    if issuer is not None and not isinstance(issuer, str):
        raise TemplateError(name, "'issuer' must be a string")
    for key, settings in fields.items():
        _check_field(name, str(key), settings)
    if "lines" in tpl:
        _check_lines(name, "lines", tpl["lines"])
    if "tables" in tpl:
        _check_tables(name, tpl["tables"])
    if "camelot" in tpl:
        raise TemplateError(name, "the 'camelot' plugin reads the PDF file itself, which docbatch does not support")
    _check_options(name, tpl.get("options", {}))
    _check_top_level(name, tpl)


def _check_keywords(name: str, tpl: dict[str, Any]) -> None:
    """Keywords are plain substrings in invoice2data (`keyword in text`), not regexes: check their type only."""
    if "keywords" not in tpl:
        raise TemplateError(name, "missing 'keywords' (the text that identifies the issuer's documents)")
    for key in ("keywords", "exclude_keywords"):
        value = tpl.get(key)
        if value is None and key == "exclude_keywords":
            continue
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) and v for v in values):
            raise TemplateError(name, f"'{key}' must be a non-empty string or a list of non-empty strings")
        if key == "keywords" and not values:
            raise TemplateError(name, "'keywords' is empty: the template would match every document")


def _compile(name: str, where: str, pattern: Any) -> None:
    """Compile `pattern` with invoice2data's own regex engine (its _regex: `re`, or `regex` when configured)."""
    from invoice2data.extract import _regex

    if not isinstance(pattern, str):
        raise TemplateError(name, f"{where}: the regex must be a string, not {type(pattern).__name__}")
    try:
        _regex.compile(pattern)
    except Exception as exc:  # re.error / regex.error
        raise TemplateError(name, f"{where}: the regex {pattern!r} does not compile: {exc}") from None


def _compile_all(name: str, where: str, patterns: Any) -> None:
    """A regex setting given as one string or a list of strings."""
    for pattern in patterns if isinstance(patterns, list) else [patterns]:
        _compile(name, where, pattern)


def _check_type(name: str, where: str, type_name: Any) -> None:
    if type_name not in FIELD_TYPES:
        raise TemplateError(name, f"{where}: unknown type {type_name!r} (use one of {', '.join(sorted(FIELD_TYPES))})")


def _check_replace_pairs(name: str, where: str, spec: Any) -> None:
    """A field-level `replace`: one [pattern, repl] pair or a list of pairs (invoice2data's _normalize_replacements)."""
    if isinstance(spec, list) and len(spec) == 2 and all(isinstance(item, str) for item in spec):
        spec = [spec]
    if not isinstance(spec, list):
        raise TemplateError(name, f"{where}: 'replace' must be a [pattern, replacement] pair or a list of them")
    for pair in spec:
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], str)):
            raise TemplateError(name, f"{where}: each 'replace' entry must be a [pattern, replacement] pair")
        _compile(name, f"{where} replace", pair[0])


def _check_field(name: str, key: str, settings: Any) -> None:
    """One entry of `fields`, in each form invoice2data's extract accepts."""
    where = f"field {key!r}"
    if isinstance(settings, dict):
        parser = settings.get("parser")
        if parser is None:
            return  # invoice2data ignores a mapping without a parser (it only reads its `area`)
        if parser == "regex":
            if "regex" not in settings:
                raise TemplateError(name, f"{where}: 'parser: regex' needs a 'regex'")
            _compile_all(name, where, settings["regex"])
            if "type" in settings:
                _check_type(name, where, settings["type"])
            if "replace" in settings:
                _check_replace_pairs(name, where, settings["replace"])
        elif parser == "lines":
            _check_lines(name, where, settings)
        elif parser != "static":
            raise TemplateError(name, f"{where}: unknown parser {parser!r} (use regex, lines or static)")
    elif key.startswith("static_"):
        return  # a literal value, not a regex
    elif isinstance(settings, (str, list)):
        _compile_all(name, where, settings)
    else:
        raise TemplateError(name, f"{where}: expected a regex, a list of regexes or parser settings")


def _check_lines(name: str, where: str, settings: Any) -> None:
    """`lines:` (top level) or a `parser: lines` field: inline settings or a `rules:` list of them."""
    if not isinstance(settings, dict):
        raise TemplateError(name, f"{where}: lines settings must be a mapping")
    rules = settings.get("rules", [settings])
    if not isinstance(rules, list) or not rules:
        raise TemplateError(name, f"{where}: 'rules' must be a non-empty list of lines settings")
    for number, rule in enumerate(rules, start=1):
        rule_where = f"{where} rule {number}" if "rules" in settings else where
        if not isinstance(rule, dict):
            raise TemplateError(name, f"{rule_where}: must be a mapping")
        for required in ("start", "end", "line"):
            if required not in rule:
                raise TemplateError(name, f"{rule_where}: missing '{required}' regex")
        for key in ("start", "end", "line", "first_line", "last_line", "skip_line", "line_separator"):
            if key in rule:
                _compile_all(name, f"{rule_where} {key}", rule[key])
        for sub, type_name in (rule.get("types") or {}).items():
            _check_type(name, f"{rule_where} types.{sub}", type_name)


def _check_tables(name: str, tables: Any) -> None:
    """`tables:` is a list of {start, end, body} blocks (invoice2data's tables plugin)."""
    if not isinstance(tables, list):
        raise TemplateError(name, "'tables' must be a list of table settings")
    for number, table in enumerate(tables, start=1):
        where = f"tables {number}"
        if not isinstance(table, dict):
            raise TemplateError(name, f"{where}: must be a mapping")
        for key in ("start", "end", "body"):
            if key not in table:
                raise TemplateError(name, f"{where}: missing '{key}' regex")
            _compile(name, f"{where} {key}", table[key])
        if "line_separator" in table:
            _compile(name, f"{where} line_separator", table["line_separator"])
        for sub, type_name in (table.get("types") or {}).items():
            _check_type(name, f"{where} types.{sub}", type_name)


def _check_options(name: str, options: Any) -> None:
    """The `options` whose mistakes invoice2data only reports while extracting."""
    if not isinstance(options, dict):
        raise TemplateError(name, "'options' must be a mapping")
    replace = options.get("replace", [])
    for pair in replace if isinstance(replace, list) else [replace]:
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], str)):
            raise TemplateError(name, "options.replace: each entry must be a [pattern, replacement] pair")
        _compile(name, "options.replace", pair[0])
    if not isinstance(options.get("decimal_separator", "."), str):
        raise TemplateError(name, "options.decimal_separator must be a string")


def _check_top_level(name: str, tpl: dict[str, Any]) -> None:
    """priority, required_fields and input_module, which invoice2data uses without checking."""
    if not isinstance(tpl.get("priority", 5), int):
        raise TemplateError(name, "'priority' must be an integer")
    required = tpl.get("required_fields", [])
    if not (isinstance(required, list) and all(isinstance(f, str) for f in required)):
        raise TemplateError(name, "'required_fields' must be a list of field names")
    pinned = tpl.get("input_module")
    if pinned is not None and not isinstance(pinned, str):
        raise TemplateError(name, "'input_module' must be a reader name such as pdftotext")


# --------------------------------------------------------------------------- readers


class _LazyReader:
    """A text getter that reads once and says why it gave no text (a missing tool is not an error)."""

    def __init__(self, read: Callable[[], str | None]) -> None:
        self._read = read
        self._done = False
        self._text: str | None = None
        self.warning: str | None = None

    def __call__(self) -> str | None:
        if not self._done:
            self._done = True
            try:
                self._text = self._read()
            except _Unavailable as exc:
                self.warning = str(exc)
        return self._text


class _Unavailable(Exception):
    """A reader that cannot give text, for a reason worth a warning."""


def _pdftotext(data: bytes) -> str:
    """The text of invoice2data's pdftotext module (`pdftotext -layout -q -enc UTF-8`), from stdin."""
    if not shutil.which("pdftotext"):
        raise _Unavailable("pdftotext (poppler-utils) is not installed")
    try:
        done = subprocess.run(
            ["pdftotext", "-layout", "-q", "-enc", "UTF-8", "-", "-"],
            input=data, capture_output=True, timeout=PDFTOTEXT_TIMEOUT, check=False,
        )
    except subprocess.TimeoutExpired:
        raise _Unavailable(f"pdftotext gave no text within {PDFTOTEXT_TIMEOUT:g} s") from None
    if done.returncode != 0 and not done.stdout.strip():
        raise _Unavailable(f"pdftotext could not read the PDF (exit code {done.returncode})")
    return done.stdout.decode("utf-8", errors="replace")


def _pypdf_layout(data: bytes) -> str:
    """pypdf's layout-mode text, pages joined by form feeds: a third opinion on column layout."""
    import pypdf

    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        return "\f".join(page.extract_text(extraction_mode="layout") or "" for page in reader.pages)
    except Exception as exc:  # pypdf raises many types on damaged files
        raise _Unavailable(f"pypdf could not read the text: {type(exc).__name__}: {exc}") from None


def _pdfium_compatible(text: str) -> str:
    """docbatch's PDFium text as invoice2data's pdfium module would clean it.

    invoice2data drops U+FEFF and U+FFFE (PDFium artefacts around hyphenation) and joins
    pages with '\\n'; docbatch joins them with '\\n\\f'. On the invoice2data corpus both
    joins give equal fields, so the text already read is reused rather than re-read.
    """
    return text.replace("\ufeff", "").replace("\ufffe", "")


def pdf_text_readers(data: bytes, pdfium_text: str) -> list[Reader]:
    """The cascade for a PDF: the PDFium text already read, then pdftotext, then pypdf's layout text.

    Each later reader only runs if the cascade gets to it (or a template pins it).
    """
    return [
        ("pdfium", lambda: _pdfium_compatible(pdfium_text)),
        ("pdftotext", _LazyReader(lambda: _pdftotext(data))),
        ("pypdf", _LazyReader(lambda: _pypdf_layout(data))),
    ]


# --------------------------------------------------------------------------- extraction


@dataclass
class TemplateResult:
    """One document's template output, and which reader's text gave it (so a user can tell why)."""

    template: str  # template file name, e.g. 'com.amazon.aws.yml' (invoice2data's template_name)
    fields: dict[str, Any]  # the template's own output keys, JSON-ready, without 'template_name'
    reader: str  # 'pdfium', 'pdftotext', 'pypdf' or 'text'
    warnings: list[str] = field(default_factory=list)


class _Texts:
    """Each reader's text, read at most once, with the warnings of readers that gave none."""

    def __init__(self, readers: list[Reader]) -> None:
        self.getters = dict(readers)
        self.cache: dict[str, str | None] = {}
        self.warnings: list[str] = []

    def get(self, name: str) -> str | None:
        if name not in self.cache:
            getter = self.getters[name]
            try:
                text = getter()
            except Exception as exc:  # invoice2data's _safe_to_text: a failing backend gives no text
                text = None
                self.warnings.append(f"the {name} reader failed: {type(exc).__name__}: {exc}")
            warning = getattr(getter, "warning", None)
            if warning:
                self.warnings.append(warning)
            self.cache[name] = text if text and text.strip() else None
        return self.cache[name]


def _match(templates: TemplateSet, text: str) -> Any:
    """invoice2data's _match_template: the first template (by priority) whose keywords match."""
    return next((t for t in templates.templates if t.matches_input(text)), None)


def _pinned(templates: TemplateSet, texts: _Texts, name: str, text: str, template: Any) -> tuple[str, str, Any]:
    """invoice2data's _preferred_module: re-read with the reader a template pins, when it gives a match."""
    pinned = template.get("input_module")
    if not pinned or pinned == name:
        return name, text, template
    if pinned not in texts.getters:
        if name != "text":
            texts.warnings.append(f"template {template['template_name']} prefers the {pinned} reader, which is not available: used {name}")
        return name, text, template
    pinned_text = texts.get(pinned)
    pinned_template = _match(templates, pinned_text) if pinned_text else None
    if pinned_template is None:
        return name, text, template
    return pinned, pinned_text, pinned_template


def _declares_lines(template: Any) -> bool:
    """invoice2data's _line_items_missing, first half: the template has a lines/tables block."""
    return (
        "lines" in template
        or "tables" in template
        or any(isinstance(f, dict) and f.get("parser") in ("lines", "tables") for f in template["fields"].values())
    )


def _has_items(template: Any, output: dict[str, Any]) -> bool:
    """invoice2data's _line_items_missing, second half (a non-empty list), plus tables rows.

    The tables plugin gives a scalar per body group when the table has one row (free_fiber's
    line_number), which invoice2data counts as "no items" and so reads the next backend for
    nothing; a filled body group counts as items here.
    """
    from invoice2data.extract import _regex

    if any(isinstance(value, list) and value for value in output.values()):
        return True
    for table in template.get("tables") or []:
        if any(output.get(group) not in (None, "") for group in _regex.compile(table["body"]).groupindex):
            return True
    return False


def _run(template: Any, text: str, reader: str) -> dict[str, Any]:
    """prepare_input + extract; ValueError (a missing required field) propagates for the cascade.

    Any other exception is the template's fault (or invoice2data's) on this document.
    The input module passed is invoice2data's `text` module, which has no area support:
    docbatch passes no file, so an `area` field is searched in the whole text.
    """
    from invoice2data.input import text as text_module

    try:
        return template.extract(template.prepare_input(text), "", text_module)
    except ValueError:
        raise
    except Exception as exc:
        raise DocumentError(
            ErrorKind.template,
            f"template {template['template_name']} raised {type(exc).__name__} on the {reader} text: {exc}",
        ) from exc


def _failure_message(failures: list[tuple[str, str, ValueError]], tried: list[str]) -> str:
    """Which template(s) matched, what stayed missing with which reader, and every reader tried."""
    from invoice2data.exceptions import RequiredFieldsMissingError

    parts = []
    for reader, template, exc in failures:
        if isinstance(exc, RequiredFieldsMissingError):
            parts.append(f"{template} with {reader}: missing required field(s) {', '.join(sorted(exc.fields))}")
        else:
            parts.append(f"{template} with {reader}: {exc}")
    templates = ", ".join(sorted({template for _, template, _ in failures}))
    if all(isinstance(exc, RequiredFieldsMissingError) for _, _, exc in failures):
        outcome = "its required fields stayed missing with every reader"
    else:
        outcome = "it failed with every reader"
    return f"template {templates} matched but {outcome} ({'; '.join(parts)}); readers tried: {', '.join(tried)}"


def extract_with_templates(templates: TemplateSet, readers: list[Reader]) -> TemplateResult | None:
    """invoice2data's extract_data cascade over docbatch's readers (no OCR, no AI fallback).

    For each reader in order: match the first template by priority; honour its
    `input_module` pin; run it. A missing required field tries the next reader; a result
    that declares line items but got none is kept as a fallback while the next reader is
    tried. Returns None when no template matched any reader's text.
    """
    _quiet_invoice2data()
    texts = _Texts(readers)
    failures: list[tuple[str, str, ValueError]] = []
    fallback: TemplateResult | None = None
    ran: set[str] = set()
    for name, _ in readers:
        text = texts.get(name)
        if text is None:
            continue
        template = _match(templates, text)
        if template is None:
            continue
        used, used_text, template = _pinned(templates, texts, name, text, template)
        if used in ran:
            continue  # a pin already ran this reader's text: same text, same outcome
        ran.add(used)
        try:
            output = _run(template, used_text, used)
        except ValueError as exc:
            failures.append((used, template["template_name"], exc))
            continue
        result = TemplateResult(template["template_name"], json_ready(output), used, list(texts.warnings))
        if _declares_lines(template) and not _has_items(template, output):
            fallback = fallback or result
            continue
        return result
    if fallback is not None:
        fallback.warnings = [
            *texts.warnings,
            f"template {fallback.template} declares line items but no reader's text gave any (used {fallback.reader})",
        ]
        return fallback
    if failures:
        raise DocumentError(ErrorKind.template, _failure_message(failures, list(texts.cache)))
    return None


def json_ready(output: dict[str, Any]) -> dict[str, Any]:
    """invoice2data's output as JSON values: dates as 'YYYY-MM-DD', Decimals as floats, no template_name."""
    return {key: _json_value(value) for key, value in output.items() if key != "template_name"}


def _json_value(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.strftime("%Y-%m-%d")
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_json_value(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


# --------------------------------------------------------------------------- logging


class _ToDebug(logging.Handler):
    """Re-logs invoice2data's records at DEBUG under docbatch.templates.

    invoice2data logs ERROR for an ordinary miss ('Unable to match all required fields',
    'No template for ...') and WARNING for every field that did not match; docbatch
    reports those outcomes itself (a DocumentError or a warning), and a healthy run
    prints no ERROR line. The records stay available with debug logging on.
    """

    def emit(self, record: logging.LogRecord) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("invoice2data %s: %s", record.levelname, record.getMessage())


_QUIET_LOCK = threading.Lock()
_quiet = False


def _quiet_invoice2data() -> None:
    """Route the `invoice2data` logger to `_ToDebug` instead of the root handlers (once per process)."""
    global _quiet
    with _QUIET_LOCK:
        if _quiet:
            return
        logger = logging.getLogger("invoice2data")
        logger.addHandler(_ToDebug())
        logger.propagate = False
        _quiet = True
