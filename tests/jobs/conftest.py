"""Fixtures for the job tests: where the real datasets are, and one embedding cache per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(os.environ.get("ROUTEBOOK_DATASETS", "/work/shared/datasets"))
needs_data = pytest.mark.skipif(not DATA.exists(), reason=f"{DATA} not present")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Embeddings computed once per session, shared by every job test."""
    return tmp_path_factory.mktemp("embeddings")
