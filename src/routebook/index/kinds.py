"""The three FAISS index kinds a namespace can use, and how each is made and tuned.

Exact search (flat) is the default: it is simple, needs no training and is fast enough for tens
of thousands of examples. Above that, an approximate index: HNSW answers in roughly logarithmic
time, can grow from empty and keeps full vectors, but builds slowly (about 200 s per 100k
vectors on one core) and weighs more than the vectors themselves. IVF is the one for large
namespaces: at a million examples it builds in about two minutes on one busy core and stores
each vector as float16, half the memory of float32 at the same recall (8-bit codes would halve
it again but lose recall, 0.96 instead of 0.98, and similarity precision). It must be trained
on the vectors it will hold, so it is only built in one go, and falls back to flat when there
are too few vectors to train it well. Past `APPROXIMATE_ABOVE` the kind is HNSW unless the
caller asks for IVF (`choose_kind`'s `approximate`); at a million examples only IVF fits the
memory and build-time budget.

Every kind scores by inner product over unit vectors, i.e. cosine similarity.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt


class IndexKind(enum.StrEnum):
    FLAT = "flat"
    HNSW = "hnsw"
    IVF = "ivf"


APPROXIMATE_ABOVE = 50_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 200
DEFAULT_EF_SEARCH = 128
DEFAULT_NPROBE = 16
# FAISS's k-means warns below 39 training points per centroid; fewer lists than this is not
# worth an IVF index at all.
IVF_MIN_POINTS_PER_LIST = 39
IVF_MIN_LISTS = 8
#: k-means on that minimum sample (FAISS's default samples 256 points a list) for 10 rounds: at
#: 1M vectors (4000 lists) training takes about 60 s on one busy core instead of an estimated
#: 10 minutes, and recall@10 is unchanged (measured with `routebook.jobs.bench_index`).
IVF_TRAIN_POINTS_PER_LIST = IVF_MIN_POINTS_PER_LIST
IVF_TRAIN_ITERATIONS = 10
#: Vectors stored as float16: similarities stay within ~1e-5 of float32, recall unchanged.
IVF_STORAGE = "SQfp16"


@dataclass(frozen=True, slots=True)
class SearchParams:
    """Recall/speed knobs applied at search time: HNSW's efSearch and IVF's nprobe."""

    ef_search: int = DEFAULT_EF_SEARCH
    nprobe: int = DEFAULT_NPROBE

    def __post_init__(self) -> None:
        if self.ef_search < 1 or self.nprobe < 1:
            raise ValueError(
                f"ef_search and nprobe must be at least 1 (got {self.ef_search}, {self.nprobe})"
            )


def parse_kind(value: str) -> IndexKind:
    """`value` as an IndexKind, or a ValueError that lists the valid kinds."""
    try:
        return IndexKind(value)
    except ValueError:
        valid = ", ".join(k.value for k in IndexKind)
        raise ValueError(f"unknown index kind {value!r}; expected one of: {valid}") from None


def choose_kind(
    n_examples: int,
    approximate_above: int = APPROXIMATE_ABOVE,
    approximate: IndexKind | str = IndexKind.IVF,
) -> IndexKind:
    """Exact search up to `approximate_above` examples, the `approximate` kind beyond."""
    if n_examples <= approximate_above:
        return IndexKind.FLAT
    return parse_kind(approximate)


def why_not(requested: str, built: str, n_vectors: int) -> str:
    """Why an index of `requested` kind came out as `built` (empty when they agree): a reindex
    asked for IVF on a small namespace said only "succeeded", and the kind it served was flat."""
    if requested == built:
        return ""
    if requested == IndexKind.IVF.value and ivf_lists(n_vectors) == 0:
        least = IVF_MIN_LISTS * IVF_MIN_POINTS_PER_LIST
        return (
            f"{n_vectors} examples are too few to train IVF, which needs at least {least}; "
            "flat is exact search and as fast at this size"
        )
    return f"the index is {built}"


def ivf_lists(n_vectors: int) -> int:
    """About 4·√n lists, capped so each gets enough training points; 0 means "too few to train"."""
    wanted = max(1, round(4 * math.sqrt(n_vectors)))
    lists = min(wanted, n_vectors // IVF_MIN_POINTS_PER_LIST)
    return lists if lists >= IVF_MIN_LISTS else 0


def new_flat(dim: int) -> faiss.Index:
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def new_hnsw(dim: int) -> faiss.Index:
    """A bare HNSW graph: its labels are insertion rows, which the caller maps to example ids.

    Not wrapped in IndexIDMap2 because HNSW cannot remove vectors: a replaced example leaves its
    old vector in the graph, and only a row-level label lets search tell the two apart.
    """
    index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    return index


def new_ivf(training: npt.NDArray[np.float32]) -> faiss.Index | None:
    """An IVF index trained on `training`, or None when there are too few vectors.

    IVF keeps example ids in its inverted lists itself (add_with_ids, remove_ids). Wrapping it in
    IndexIDMap2 would be wrong: IDMap compacts its id table on removal while IVF keeps the old
    internal numbers, so later searches would report the wrong ids.
    """
    lists = ivf_lists(len(training))
    if lists == 0:
        return None
    dim = int(training.shape[1])
    index = faiss.index_factory(dim, f"IVF{lists},{IVF_STORAGE}", faiss.METRIC_INNER_PRODUCT)
    ivf = concrete_index(index)
    ivf.cp.niter = IVF_TRAIN_ITERATIONS
    ivf.cp.max_points_per_centroid = IVF_TRAIN_POINTS_PER_LIST  # FAISS samples this many
    index.train(training)
    return index


def kind_of(index: faiss.Index) -> IndexKind:
    """Which kind a (possibly freshly read) FAISS index is, or ValueError for anything else."""
    concrete = faiss.downcast_index(index)
    if concrete.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise ValueError("the FAISS index does not score by inner product")
    if isinstance(concrete, faiss.IndexIDMap2):
        inner = faiss.downcast_index(concrete.index)
        if isinstance(inner, faiss.IndexFlat):
            return IndexKind.FLAT
    elif isinstance(concrete, faiss.IndexHNSWFlat):
        return IndexKind.HNSW
    elif isinstance(concrete, faiss.IndexIVFScalarQuantizer | faiss.IndexIVFFlat):
        return IndexKind.IVF  # IVFFlat: written by routebook before float16 storage
    raise ValueError(f"unsupported FAISS index type {type(concrete).__name__}")


def apply_params(index: faiss.Index, kind: IndexKind, params: SearchParams) -> None:
    """Set the search-time knob of `index` (none for flat)."""
    concrete = concrete_index(index)
    if kind is IndexKind.HNSW:
        concrete.hnsw.efSearch = params.ef_search
    elif kind is IndexKind.IVF:
        concrete.nprobe = min(params.nprobe, int(concrete.nlist))


def concrete_index(index: faiss.Index) -> Any:
    """`index` as its concrete SWIG class; typed Any because the stubs only know `Index`."""
    return faiss.downcast_index(index)
