"""docbatch blocks: sources, extractors and destinations, registered with
`prefect block register -m blocks`. Blocks import nothing from `tasks` or `flows`.

The block classes are imported on first access, not with the package: the processes that parse
documents (`blocks.isolation`) import `blocks.readers` and must not pay for importing Prefect.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from blocks.aws import AwsCredentials
    from blocks.s3 import S3Destination, S3Source
    from blocks.embedded import EmbeddedExtractor
    from blocks.extractor import Extractor
    from blocks.local import LocalDirectory, LocalFolder
    from blocks.hosted_extractor import HostedExtractor
    from blocks.openai_compatible import OpenAICompatibleExtractor
    from blocks.routing import RoutingExtractor
    from blocks.schemas import ExtractionSchema
    from prefect_sqlalchemy import SqlAlchemyConnector

_LAZY = {
    "AwsCredentials": "blocks.aws",
    "S3Destination": "blocks.s3",
    "S3Source": "blocks.s3",
    "EmbeddedExtractor": "blocks.embedded",
    "Extractor": "blocks.extractor",
    "LocalDirectory": "blocks.local",
    "LocalFolder": "blocks.local",
    "OpenAICompatibleExtractor": "blocks.openai_compatible",
    "HostedExtractor": "blocks.hosted_extractor",
    "ExtractionSchema": "blocks.schemas",
    "RoutingExtractor": "blocks.routing",
    # Prefect's own SQL connection block (prefect-sqlalchemy): a batch's `database` may name one
    # as 'sqlalchemy-connector/NAME' (tasks/database.py); registered with the others.
    "SqlAlchemyConnector": "prefect_sqlalchemy",
}

__all__ = [
    "AwsCredentials", "S3Destination", "S3Source", "EmbeddedExtractor", "Extractor", "LocalDirectory", "LocalFolder",
    "OpenAICompatibleExtractor", "HostedExtractor", "ExtractionSchema", "RoutingExtractor", "SqlAlchemyConnector",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'blocks' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    # `prefect block register -m blocks` finds the blocks through dir() and getattr().
    return sorted({*globals(), *__all__})
