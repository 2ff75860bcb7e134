"""docbatch blocks: sources, extractors and destinations, registered with
`prefect block register -m blocks`. Blocks import nothing from `tasks` or `flows`."""

from blocks.embedded import EmbeddedExtractor
from blocks.extractor import Extractor
from blocks.local import LocalDirectory, LocalFolder

__all__ = ["EmbeddedExtractor", "Extractor", "LocalDirectory", "LocalFolder"]
