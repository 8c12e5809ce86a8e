"""Route files (routes/*.yaml): a namespace, its model catalog and its routes, validated with
pydantic. Errors name the file, the route and what is wrong. No database here."""

from __future__ import annotations

import hashlib
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import regex
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from routebook.catalog import (
    MAX_CONTEXT_WINDOW,
    MAX_LATENCY_MS,
    MAX_USD_PER_MTOK,
    Catalog,
    ModelSpec,
)
from routebook.errors import ConfigError
from routebook.policyspec import Budget, EscalationCap, Policy, Rule

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$"

#: Longest tag key or value, and namespace description: what the Admin API accepts, so that a
#: catalog read from a route file (`admin create-namespace --catalog`) is not refused there.
MAX_TAG_CHARS = 256
MAX_DESCRIPTION_CHARS = 2000

Tag = Annotated[str, Field(max_length=MAX_TAG_CHARS)]


class _Entry(BaseModel):
    """What every part of a route file shares: unknown keys, NaN and infinity are refused, and
    so is a NUL character in any string. The Admin API refuses NUL too; PostgreSQL cannot
    store it (`routes sync` and a first `serve` died with a DataError), and SQLite stored
    text no API client could have written."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        found = _with_nul(value)
        if found is not None:
            raise ValueError(f"{_short(found)!r} contains a NUL character (\\0)")
        return value


def _with_nul(value: Any) -> str | None:
    """The first string in `value` (a string, or a list or mapping of them) holding a NUL."""
    if isinstance(value, str):
        return value if "\x00" in value else None
    items: list[Any] = []
    if isinstance(value, dict):
        items = [part for pair in value.items() for part in pair]
    elif isinstance(value, list | tuple):
        items = list(value)
    return next((found for item in items if (found := _with_nul(item)) is not None), None)


def _short(text: str) -> str:
    return text if len(text) <= 60 else text[:60] + "…"


class ModelEntry(_Entry):
    name: str = Field(pattern=NAME_PATTERN)
    provider: str = Field(min_length=1, max_length=64)
    input_usd_per_mtok: float = Field(ge=0, le=MAX_USD_PER_MTOK)
    output_usd_per_mtok: float = Field(ge=0, le=MAX_USD_PER_MTOK)
    latency_ms: float = Field(ge=0, le=MAX_LATENCY_MS)
    context_window: int = Field(gt=0, le=MAX_CONTEXT_WINDOW)
    tags: dict[Tag, Tag] = Field(default_factory=dict)


class RouteEntry(_Entry):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    best_model: str
    utterances: list[str] = Field(min_length=1)

    @field_validator("utterances")
    @classmethod
    def _no_blank_utterances(cls, utterances: list[str]) -> list[str]:
        cleaned = [u.strip() for u in utterances]
        if any(not u for u in cleaned):
            raise ValueError("an utterance is empty")
        return cleaned


#: The longest rolling window a budget or an escalation cap may use: a year (a longer one
#: would overflow date arithmetic and mean nothing for a budget anyway).
MAX_WINDOW_HOURS = 366 * 24


class BudgetEntry(_Entry):
    usd_per_window: float = Field(gt=0)
    window_hours: float = Field(24.0, gt=0, le=MAX_WINDOW_HOURS)
    near_limit_fraction: float = Field(0.8, gt=0, le=1)
    near_limit_ceiling: str | None = None
    when_exhausted: Literal["cheapest", "reject"] = "cheapest"


class TenantEntry(_Entry):
    tier: str | None = None
    budget_usd: float | None = Field(None, gt=0)


class EscalationCapEntry(_Entry):
    max_strong_share: float = Field(gt=0, le=1)
    window_minutes: float = Field(60.0, gt=0, le=MAX_WINDOW_HOURS * 60)
    min_decisions: int = Field(20, ge=1)


class RuleEntry(_Entry):
    """when: conditions that must all hold; then: the model (or tier) to route to."""

    name: str = Field(pattern=NAME_PATTERN)
    metadata: dict[str, str] = Field(default_factory=dict)
    keywords: list[str] = Field(default_factory=list)
    regex: str | None = None
    min_tokens: int | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=0)
    model: str | None = None
    tier: str | None = None

    @model_validator(mode="after")
    def _well_formed(self) -> RuleEntry:
        if (self.model is None) == (self.tier is None):
            raise ValueError(f"rule {self.name!r}: give exactly one of model or tier")
        if (
            self.min_tokens is not None
            and self.max_tokens is not None
            and self.min_tokens > self.max_tokens
        ):
            raise ValueError(
                f"rule {self.name!r}: min_tokens {self.min_tokens} is above max_tokens "
                f"{self.max_tokens}, so it could never match"
            )
        if not (
            self.metadata
            or self.keywords
            or self.regex
            or self.min_tokens is not None
            or self.max_tokens is not None
        ):
            raise ValueError(f"rule {self.name!r} has no condition, so it would match everything")
        for keyword in self.keywords:
            if not regex.search(r"\w", keyword):
                raise ValueError(
                    f"rule {self.name!r}: keyword {keyword!r} has no letter or digit, so it "
                    "never matches (keywords match whole words)"
                )
        if self.regex is not None:
            try:
                regex.compile(self.regex)
            except regex.error as exc:
                raise ValueError(f"rule {self.name!r}: bad regex {self.regex!r}: {exc}") from None
        return self


class PolicyEntry(_Entry):
    """Tiers map to a ceiling model; budgets are per tenant over a rolling window."""

    tiers: dict[str, str] = Field(default_factory=dict)
    default_tier: str | None = None
    tenants: dict[str, TenantEntry] = Field(default_factory=dict)
    budget: BudgetEntry | None = None
    pii_tags: list[str] = Field(default_factory=lambda: ["on-prem"])
    escalation_cap: EscalationCapEntry | None = None
    rules: list[RuleEntry] = Field(default_factory=list)

    def check(self, models: list[str]) -> None:
        for tier, ceiling in self.tiers.items():
            if ceiling not in models:
                raise ValueError(
                    f"policy: tier {tier!r} names model {ceiling!r}, not in the catalog"
                )
        if self.default_tier is not None and self.default_tier not in self.tiers:
            raise ValueError(f"policy: default_tier {self.default_tier!r} is not a tier")
        for tenant, entry in self.tenants.items():
            if entry.tier is not None and entry.tier not in self.tiers:
                raise ValueError(f"policy: tenant {tenant!r} has unknown tier {entry.tier!r}")
            if entry.budget_usd is not None and self.budget is None:
                raise ValueError(f"policy: tenant {tenant!r} has a budget but there is no budget")
        names = [rule.name for rule in self.rules]
        if len(set(names)) != len(names):
            raise ValueError("policy: two rules have the same name")
        for rule in self.rules:
            if rule.model is not None and rule.model not in models:
                raise ValueError(f"rule {rule.name!r}: model {rule.model!r} is not in the catalog")
            if rule.tier is not None and rule.tier not in self.tiers:
                raise ValueError(f"rule {rule.name!r}: tier {rule.tier!r} is not a policy tier")
        near = self.budget.near_limit_ceiling if self.budget else None
        if near is not None and near not in models:
            raise ValueError(f"policy: near_limit_ceiling {near!r} is not in the catalog")

    def to_policy(self) -> Policy:
        budget = self.budget
        return Policy(
            tiers=dict(self.tiers),
            default_tier=self.default_tier,
            tenant_tiers={t: e.tier for t, e in self.tenants.items() if e.tier is not None},
            budget=Budget(**budget.model_dump()) if budget is not None else None,
            tenant_budgets={
                t: e.budget_usd for t, e in self.tenants.items() if e.budget_usd is not None
            },
            pii_tags=tuple(self.pii_tags),
            rules=tuple(
                Rule(**{**r.model_dump(), "keywords": tuple(r.keywords)}) for r in self.rules
            ),
            escalation_cap=(
                EscalationCap(**self.escalation_cap.model_dump())
                if self.escalation_cap is not None
                else None
            ),
        )


class RouteFile(_Entry):
    namespace: str = Field(pattern=NAME_PATTERN)
    description: str = Field("", max_length=MAX_DESCRIPTION_CHARS)
    catalog: list[ModelEntry] = Field(min_length=1)
    policy: PolicyEntry = Field(default_factory=PolicyEntry)
    routes: list[RouteEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> RouteFile:
        names = [m.name for m in self.catalog]
        if len(set(names)) != len(names):
            raise ValueError("the catalog names a model twice")
        self.policy.check(names)
        seen: set[str] = set()
        for route in self.routes:
            if route.name in seen:
                raise ValueError(f"route {route.name!r} is defined twice")
            seen.add(route.name)
            if route.best_model not in names:
                raise ValueError(
                    f"route {route.name!r}: best_model {route.best_model!r} is not in the "
                    f"catalog ({', '.join(names)})"
                )
        return self

    def to_catalog(self) -> Catalog:
        return Catalog(
            ModelSpec(
                name=m.name,
                provider=m.provider,
                input_usd_per_mtok=m.input_usd_per_mtok,
                output_usd_per_mtok=m.output_usd_per_mtok,
                latency_ms=m.latency_ms,
                context_window=m.context_window,
                tags=dict(m.tags),
            )
            for m in self.catalog
        )

    def reference_examples(self) -> list[ReferenceExample]:
        """One example per distinct utterance (a repeat in a later route is an error)."""
        examples: dict[str, ReferenceExample] = {}
        for route in self.routes:
            for text in route.utterances:
                h = text_hash(text)
                if h in examples and examples[h].route != route.name:
                    raise ValueError(
                        f"utterance {text!r} is in routes {examples[h].route!r} and {route.name!r}"
                    )
                examples[h] = ReferenceExample(text, h, route.name, route.best_model)
        return list(examples.values())


@dataclass(frozen=True, slots=True)
class ReferenceExample:
    text: str
    text_hash: str
    route: str
    best_model: str


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping: by default the last one
    silently wins, so a second `routes:` block would drop the first (and `--prune` delete its
    examples).

    Only the keys written in the mapping itself count. A merge key (`<<: *base`) is YAML's way of
    sharing a block, and a key it brings in that the mapping then sets again is an override, not
    a duplicate. A key that cannot be a dict key (`? [a, b]`) is a ConstructorError like any other
    YAML mistake, not a TypeError traceback."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<`: flatten_mapping (in super) merges it; it has no constructor
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"a key must be a plain value, not {type(key).__name__} {key!r}",
                    key_node.start_mark,
                )
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_route_file(path: Path) -> RouteFile:
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read route file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a route file is a mapping with namespace, catalog and routes")
    try:
        parsed = RouteFile.model_validate(raw)
        parsed.reference_examples()
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc, raw)}") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return parsed


def load_routes(path: Path) -> list[tuple[Path, RouteFile]]:
    """One route file, or every route file in a folder: what `routes_dir`, `serve --routes`,
    `routes sync --routes` and `shadow_rules` all accept, so that a path one of them takes is
    not ignored by another."""
    if path.is_file():
        return [(path, load_route_file(path))]
    return load_route_dir(path)


def route_file_paths(folder: Path) -> list[Path]:
    """The route files in `folder`, sorted."""
    return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])


def load_route_dir(folder: Path) -> list[tuple[Path, RouteFile]]:
    """Every route file in `folder`; a folder with none is an error (a sync of it did nothing
    and said nothing, so a wrong folder looked like a sync with no changes)."""
    if not folder.is_dir():
        raise ConfigError(f"routes folder {folder} does not exist")
    files = route_file_paths(folder)
    if not files:
        raise ConfigError(f"routes folder {folder} holds no route files (*.yaml, *.yml)")
    loaded = [(path, load_route_file(path)) for path in files]
    first: dict[str, Path] = {}
    for path, parsed in loaded:
        other = first.setdefault(parsed.namespace, path)
        if other != path:
            # The last file would win the catalog and policy, and with --prune each file
            # would delete the other's examples on every sync.
            raise ConfigError(
                f"{path} and {other} both define namespace {parsed.namespace!r}: one route "
                "file per namespace"
            )
    return loaded


def _describe(exc: ValidationError, raw: dict[str, object]) -> str:
    parts = []
    for error in exc.errors():
        loc = list(error["loc"])
        where = ".".join(str(p) for p in loc) or "file"
        if len(loc) >= 2 and loc[0] == "routes" and isinstance(loc[1], int):
            routes = raw.get("routes")
            if (
                isinstance(routes, list)
                and loc[1] < len(routes)
                and isinstance(routes[loc[1]], dict)
            ):
                where = f"route {routes[loc[1]].get('name', loc[1])!r}: " + ".".join(
                    str(p) for p in loc[2:]
                )
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(message if where == "file" else f"{where}: {message}")
    return "; ".join(parts)
