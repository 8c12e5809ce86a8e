"""Text → unit vectors. The seam is the Embedder protocol; the real one is sentence-transformers."""

from routebook.embed.protocol import Embedder

__all__ = ["Embedder"]
