"""The schema, as SQLAlchemy models. Alembic's env.py compares migrations against `metadata`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    FetchedValue,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.expression import false

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL gets 64-bit ids.
BigId = BigInteger().with_variant(Integer(), "sqlite")

#: Tables whose ids replicas follow: on SQLite they are declared AUTOINCREMENT, so the id of
#: a deleted newest row is never handed out again (a replica would apply the old row's
#: tombstone, or its seen outcome id, to the new row).
NEVER_REUSE_IDS = {"sqlite_autoincrement": True}


def transaction_column() -> Mapped[int | None]:
    """The PostgreSQL transaction that inserted the row, set by the database itself (a
    default the migrations install); None on SQLite. See store/follow.py."""
    return mapped_column(BigInteger, nullable=True, server_default=FetchedValue())


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; they were written in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = metadata


class NamespaceRow(Base):
    __tablename__ = "namespaces"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    # The namespace's policy (tiers, budgets, PII tags) as policyspec.policy_to_json writes it.
    policy: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Bumped at every catalog or policy change: optimistic concurrency, and replicas refresh.
    catalog_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CatalogModelRow(Base):
    __tablename__ = "catalog_models"
    __table_args__ = (UniqueConstraint("namespace_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("namespaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    provider: Mapped[str] = mapped_column(String(64))
    input_usd_per_mtok: Mapped[float] = mapped_column(Float)
    output_usd_per_mtok: Mapped[float] = mapped_column(Float)
    latency_ms: Mapped[float] = mapped_column(Float)
    context_window: Mapped[int] = mapped_column(Integer)
    tags: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ExampleRow(Base):
    __tablename__ = "examples"
    __table_args__ = (
        UniqueConstraint("namespace_id", "source", "text_hash"),
        Index("ix_examples_namespace_id_id", "namespace_id", "id"),
        Index("ix_examples_namespace_id_xact", "namespace_id", "xact"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("namespaces.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(Text)
    text_hash: Mapped[str] = mapped_column(String(64))
    route: Mapped[str | None] = mapped_column(String(128), nullable=True)
    source: Mapped[str] = mapped_column(String(16))
    best_model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    #: Who added a reference example: "routefile" or "admin" (None: from before this was
    #: kept, treated as "routefile"). `routes sync --prune` removes route-file examples only.
    origin: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # History examples: the tenant whose query it was.
    tenant: Mapped[str | None] = mapped_column(String(128), nullable=True)
    #: A history example whose query a caller marked `contains_pii` (on its Decide or its
    #: outcome report): it is evidence like any other, but its text is shown to no request.
    #: Once set it stays set, whatever later reports of the same text say.
    contains_pii: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The vector is cached beside the text so a restart need not re-embed; `embedding_model`
    # says which model made it, and a mismatch means re-embed.
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    embedding_model: Mapped[str | None] = mapped_column(String(256), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    xact: Mapped[int | None] = transaction_column()


class OutcomeRow(Base):
    __tablename__ = "outcomes"
    __table_args__ = (
        Index("ix_outcomes_tenant_created_at", "tenant", "created_at"),
        Index("ix_outcomes_xact", "xact"),
        # The history retention sweep reads outcomes by age (store/history.py).
        Index("ix_outcomes_created_at", "created_at"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    outcome_id: Mapped[str] = mapped_column(String(128), unique=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("namespaces.id", ondelete="CASCADE"))
    # None once its example is deleted: the outcome stays, as the record of what was spent
    # (tenant budgets sum these), but no longer counts as evidence about any query.
    example_id: Mapped[int | None] = mapped_column(
        ForeignKey("examples.id", ondelete="SET NULL"), index=True, nullable=True
    )
    decision_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    tenant: Mapped[str | None] = mapped_column(String(128), nullable=True)
    model: Mapped[str] = mapped_column(String(128))
    quality: Mapped[float] = mapped_column(Float)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    xact: Mapped[int | None] = transaction_column()


class DecisionRow(Base):
    __tablename__ = "decisions"
    __table_args__ = (Index("ix_decisions_created_at", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("namespaces.id", ondelete="CASCADE"))
    query_hash: Mapped[str] = mapped_column(String(64))
    # Kept only so RecordOutcome by decision id can add the query to the index: NULL once
    # `decision_text_hours` have passed (service/retention.py clears it), or from the start
    # when that setting is 0. The hash stays, so a later outcome still finds the query's
    # history example when one exists.
    query_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: The request was marked `contains_pii`: an outcome reported on it marks its example.
    contains_pii: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    tenant: Mapped[str | None] = mapped_column(String(128), nullable=True)
    strategy: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(128))
    estimated_cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Shadow mode: what the candidate configuration would have decided (never answered).
    shadow_model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    shadow_estimated_cost_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    shadow_confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    # The models the decision told the caller to call (its model, fallbacks, cascade steps),
    # space-separated: only their failures reported against it are cooldown evidence. NULL in
    # rows written before it was kept: those offered their model.
    offered: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The tokens Decide estimated for the call (the whole conversation in, the expected answer
    # out): a report without usage for any model is charged that model's price for them, as
    # the plan estimated. NULL in rows written before they were kept.
    input_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    output_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TombstoneRow(Base):
    """An example deleted, or relabelled in place, so replicas tailing the store by id read
    it again: one gone leaves their index, one still there gets its new label."""

    __tablename__ = "example_tombstones"
    __table_args__ = (
        Index("ix_example_tombstones_namespace_id_xact", "namespace_id", "xact"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("namespaces.id", ondelete="CASCADE"))
    example_id: Mapped[int] = mapped_column(BigInteger)
    deleted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    xact: Mapped[int | None] = transaction_column()


class IndexGenerationRow(Base):
    """A published index snapshot: servers swap to the newest one of their namespace."""

    __tablename__ = "index_generations"
    __table_args__ = (UniqueConstraint("namespace_id", "generation"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("namespaces.id", ondelete="CASCADE"))
    generation: Mapped[int] = mapped_column(Integer)
    snapshot_path: Mapped[str] = mapped_column(Text)
    embedding_model: Mapped[str] = mapped_column(String(256))
    dim: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    examples: Mapped[int] = mapped_column(Integer)
    high_water_example_id: Mapped[int] = mapped_column(BigInteger)
    high_water_outcome_id: Mapped[int] = mapped_column(BigInteger)
    high_water_tombstone_id: Mapped[int] = mapped_column(BigInteger)
    #: PostgreSQL: the oldest transaction open when the marks were taken (store/follow.py).
    high_water_xact: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class StoreIdentityRow(Base):
    """The store's one identity row: a random id that snapshots record, so a server never
    loads a snapshot another store (another database sharing the snapshot folder) wrote."""

    __tablename__ = "store_identity"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1: one row
    store_id: Mapped[str] = mapped_column(String(32))


class DriftReferenceRow(Base):
    """A namespace's drift reference window, per embedding model (its similarities are that
    model's), so the reference outlives the process that froze it and every replica on the
    store compares with the same one (service/drift_keeper.py). A row with no `frozen_at` is a
    rebaseline's marker: the next decisions make the reference."""

    __tablename__ = "drift_references"

    namespace_id: Mapped[int] = mapped_column(
        ForeignKey("namespaces.id", ondelete="CASCADE"), primary_key=True
    )
    embedding_model: Mapped[str] = mapped_column(String(256), primary_key=True)
    #: Random, new at every write: a server tells the reference it holds from a new one.
    token: Mapped[str] = mapped_column(String(32))
    #: The index generation the reference was observed on (a new one starts a new reference).
    generation: Mapped[int] = mapped_column(Integer)
    #: The reference's first decision; for a marker, the rebaseline.
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    frozen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    top_similarity: Mapped[list[float]] = mapped_column(JSON)
    cold: Mapped[list[bool]] = mapped_column(JSON)
    #: Model → success of each outcome reported while the reference was made.
    outcomes: Mapped[dict[str, list[bool]]] = mapped_column(JSON)


class ReindexJobRow(Base):
    __tablename__ = "reindex_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    namespace: Mapped[str] = mapped_column(String(128), default="")
    state: Mapped[str] = mapped_column(String(16))
    total: Mapped[int] = mapped_column(BigInteger, default=0)
    done: Mapped[int] = mapped_column(BigInteger, default=0)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: Touched every few seconds while the job runs; a stale one means its process died.
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: The interval its process promised: readers judge staleness by the writer's own pace.
    heartbeat_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)


class ModelFailureRow(Base):
    """A failed call (rate limit, error, timeout, filter): cooldown evidence, never quality."""

    __tablename__ = "model_failures"
    __table_args__ = (
        Index("ix_model_failures_ns_model_created", "namespace_id", "model", "created_at"),
        # An outcome asks which models failed on its decision (the escalation cap's fallbacks).
        Index("ix_model_failures_decision_id", "decision_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    outcome_id: Mapped[str] = mapped_column(String(128), unique=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("namespaces.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))
    decision_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    retry_after_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    cooldown_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    # Reported against a decision that offered the model: evidence of a real call, which may
    # cool the model for every tenant. Other failures are kept but cool nothing.
    counted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CooldownRow(Base):
    """A model left out of decisions until `until`; shared by every replica on the store."""

    __tablename__ = "cooldowns"
    __table_args__ = (UniqueConstraint("namespace_id", "model"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("namespaces.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(String(128))
    until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    reason: Mapped[str] = mapped_column(String(256), default="")
