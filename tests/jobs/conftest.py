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


@pytest.fixture
def index_slice(tmp_path: Path) -> Path:
    """GSM8K's dev index cut to its first 300 rows, for jobs that need a quick index file."""
    path = tmp_path / "index.jsonl"
    lines = (DATA / "routellm" / "gsm8k.dev_index.jsonl").read_text(encoding="utf-8")
    path.write_text("".join(lines.splitlines(keepends=True)[:300]), encoding="utf-8")
    return path
