"""Tests for routebook.routefiles: valid files parse; every mistake is a ConfigError naming the
file, the route (where there is one) and what is wrong."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest

from routebook.catalog import Catalog
from routebook.errors import ConfigError
from routebook.routefiles import (
    ReferenceExample,
    RouteFile,
    load_route_dir,
    load_route_file,
    text_hash,
)

SHIPPED = Path(__file__).resolve().parents[2] / "routes" / "default.yaml"

CATALOG_YAML = """\
catalog:
  - name: small
    provider: test
    input_usd_per_mtok: 0.10
    output_usd_per_mtok: 0.40
    latency_ms: 300
    context_window: 128000
    tags: {tier: small}
  - name: frontier
    provider: test
    input_usd_per_mtok: 3.00
    output_usd_per_mtok: 15.00
    latency_ms: 1500
    context_window: 200000
"""

VALID = (
    "namespace: shop\n"
    "description: a test shop\n"
    + CATALOG_YAML
    + """\
routes:
  - name: order_status
    description: where is my stuff
    best_model: small
    utterances:
      - where is my order?
      - "  track my package please  "
      - where is my order?
  - name: code_review
    best_model: frontier
    utterances:
      - review this function for race conditions
"""
)


def write(tmp_path: Path, text: str, name: str = "shop.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def with_routes(routes_yaml: str) -> str:
    """A file with the standard catalog and the given `routes:` body."""
    return (
        "namespace: shop\n"
        + CATALOG_YAML
        + "routes:\n"
        + textwrap.indent(textwrap.dedent(routes_yaml), "  ")
    )


def load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_route_file(path)
    message = str(info.value)
    assert str(path) in message, f"the message does not name the file: {message}"
    return message


# --------------------------------------------------------------------------------------------
# Valid files
# --------------------------------------------------------------------------------------------


def test_valid_file_parses(tmp_path: Path) -> None:
    parsed = load_route_file(write(tmp_path, VALID))
    assert isinstance(parsed, RouteFile)
    assert parsed.namespace == "shop"
    assert parsed.description == "a test shop"
    assert [r.name for r in parsed.routes] == ["order_status", "code_review"]
    assert parsed.routes[0].best_model == "small"
    # Utterances are stripped.
    assert parsed.routes[0].utterances[1] == "track my package please"


def test_valid_file_catalog(tmp_path: Path) -> None:
    catalog = load_route_file(write(tmp_path, VALID)).to_catalog()
    assert isinstance(catalog, Catalog)
    assert catalog.names == ("small", "frontier")
    small = catalog.get("small")
    assert small.provider == "test"
    assert small.input_usd_per_mtok == 0.10
    assert small.output_usd_per_mtok == 0.40
    assert small.latency_ms == 300
    assert small.context_window == 128000
    assert dict(small.tags) == {"tier": "small"}
    assert dict(catalog.get("frontier").tags) == {}


def test_valid_file_reference_examples(tmp_path: Path) -> None:
    examples = load_route_file(write(tmp_path, VALID)).reference_examples()
    # 4 utterances, one repeated within its own route → 3 distinct examples.
    assert len(examples) == 3
    assert examples[0] == ReferenceExample(
        text="where is my order?",
        text_hash=text_hash("where is my order?"),
        route="order_status",
        best_model="small",
    )
    by_text = {e.text: e for e in examples}
    assert by_text["track my package please"].route == "order_status"
    assert by_text["review this function for race conditions"].best_model == "frontier"


def test_text_hash_is_stable_sha256() -> None:
    # sha256("hello"), a well-known digest.
    assert text_hash("hello") == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    text = "où est ma commande ? 📦"
    assert text_hash(text) == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert text_hash(text) == text_hash(text)
    assert text_hash("hello") != text_hash("hello ")


def test_file_without_routes_is_valid(tmp_path: Path) -> None:
    parsed = load_route_file(write(tmp_path, "namespace: empty\n" + CATALOG_YAML))
    assert parsed.routes == []
    assert parsed.reference_examples() == []


def test_load_route_dir_reads_yaml_and_yml_sorted(tmp_path: Path) -> None:
    write(tmp_path, VALID, "b.yaml")
    write(tmp_path, VALID.replace("namespace: shop", "namespace: other"), "a.yml")
    write(tmp_path, "not: a route file", "ignored.txt")
    loaded = load_route_dir(tmp_path)
    assert [p.name for p, _ in loaded] == ["a.yml", "b.yaml"]
    assert [f.namespace for _, f in loaded] == ["other", "shop"]


def test_two_files_for_one_namespace_are_refused_naming_both(tmp_path: Path) -> None:
    write(tmp_path, VALID, "shop.yaml")
    write(tmp_path, VALID, "shop-copy.yaml")  # a copy kept as a template, say
    with pytest.raises(ConfigError) as caught:
        load_route_dir(tmp_path)
    message = str(caught.value)
    assert "shop.yaml" in message and "shop-copy.yaml" in message
    assert "both define namespace 'shop'" in message


def test_load_route_dir_of_a_folder_without_route_files(tmp_path: Path) -> None:
    """`routes sync` of such a folder did nothing and said nothing, with exit 0."""
    (tmp_path / "notes.txt").write_text("not a route file")
    with pytest.raises(ConfigError, match="holds no route files") as info:
        load_route_dir(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_load_route_dir_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "routes"
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_route_dir(missing)
    assert str(missing) in str(info.value)


def test_load_route_dir_reports_the_bad_file(tmp_path: Path) -> None:
    write(tmp_path, VALID, "a.yaml")
    bad = write(tmp_path, "namespace: [unclosed\n", "b.yaml")
    with pytest.raises(ConfigError) as info:
        load_route_dir(tmp_path)
    assert str(bad) in str(info.value)


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def test_best_model_not_in_catalog(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        with_routes(
            """\
            - name: maths
              best_model: gpt-9
              utterances: [what is 2 + 2]
            """
        ),
    )
    message = load_error(path)
    assert "'maths'" in message
    assert "'gpt-9'" in message
    assert "not in the catalog" in message
    assert "small, frontier" in message


def test_duplicate_route_name(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        with_routes(
            """\
            - name: refunds
              best_model: small
              utterances: [I want my money back]
            - name: refunds
              best_model: frontier
              utterances: [return these shoes]
            """
        ),
    )
    message = load_error(path)
    assert "'refunds'" in message
    assert "defined twice" in message


def test_empty_utterance(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        with_routes(
            """\
            - name: greetings
              best_model: small
              utterances: [hello]
            - name: refunds
              best_model: small
              utterances: [I want my money back, "   "]
            """
        ),
    )
    message = load_error(path)
    assert "'refunds'" in message
    assert "'greetings'" not in message
    assert "utterance is empty" in message


def test_route_without_utterances(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        with_routes(
            """\
            - name: refunds
              best_model: small
              utterances: []
            """
        ),
    )
    message = load_error(path)
    assert "'refunds'" in message
    assert "utterances" in message


def test_unknown_key_in_a_route(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        with_routes(
            """\
            - name: refunds
              best_model: small
              model: frontier
              utterances: [I want my money back]
            """
        ),
    )
    message = load_error(path)
    assert "'refunds'" in message
    assert "model" in message
    assert "Extra inputs are not permitted" in message


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path, VALID + "colour: blue\n")
    message = load_error(path)
    assert "colour" in message
    assert "Extra inputs are not permitted" in message


def test_bad_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "namespace: shop\ncatalog: [unclosed\n")
    message = load_error(path)
    assert "not valid YAML" in message


@pytest.mark.parametrize("text", ["- a\n- list\n", "just a string\n", "42\n", ""])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    message = load_error(write(tmp_path, text))
    assert "mapping" in message


def test_same_utterance_in_two_routes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        with_routes(
            """\
            - name: refunds
              best_model: small
              utterances: [can I return this]
            - name: returns
              best_model: small
              utterances: ["  can I return this  "]
            """
        ),
    )
    message = load_error(path)
    assert "'can I return this'" in message
    assert "'refunds'" in message
    assert "'returns'" in message


def test_negative_price(tmp_path: Path) -> None:
    text = VALID.replace("output_usd_per_mtok: 15.00", "output_usd_per_mtok: -15.00")
    message = load_error(write(tmp_path, text))
    assert "catalog.1.output_usd_per_mtok" in message
    assert "greater than or equal to 0" in message


def test_duplicate_model_in_catalog(tmp_path: Path) -> None:
    text = VALID.replace("name: frontier", "name: small").replace(
        "best_model: frontier", "best_model: small"
    )
    message = load_error(write(tmp_path, text))
    assert "names a model twice" in message


def test_empty_catalog(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, "namespace: shop\ncatalog: []\n"))
    assert "catalog" in message


def test_bad_route_name(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        with_routes(
            """\
            - name: "has spaces"
              best_model: small
              utterances: [hi]
            """
        ),
    )
    message = load_error(path)
    assert "'has spaces'" in message
    assert "name" in message


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "gone.yaml"
    with pytest.raises(ConfigError, match="cannot read") as info:
        load_route_file(missing)
    assert str(missing) in str(info.value)


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(VALID.replace("a test shop", "caf\xe9 shop").encode("latin-1"))
    load_error(path)


# --------------------------------------------------------------------------------------------
# The shipped default routes
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped() -> RouteFile:
    return load_route_file(SHIPPED)


def test_shipped_routes_load(shipped: RouteFile) -> None:
    assert shipped.namespace == "default"
    assert shipped.routes


def test_shipped_routes_have_enough_utterances(shipped: RouteFile) -> None:
    examples = shipped.reference_examples()
    assert len(examples) >= 150
    # Every utterance in the file is distinct (the header asks for it).
    assert len(examples) == sum(len(r.utterances) for r in shipped.routes)


def test_shipped_catalog_has_at_least_three_models(shipped: RouteFile) -> None:
    assert len(shipped.to_catalog()) >= 3


def test_shipped_routes_cover_every_catalog_model(shipped: RouteFile) -> None:
    catalog = shipped.to_catalog()
    assert {r.best_model for r in shipped.routes} == set(catalog.names)


def test_shipped_dir_loads() -> None:
    loaded = load_route_dir(SHIPPED.parent)
    assert SHIPPED in [p.resolve() for p, _ in loaded]


def test_a_key_given_twice_is_refused(tmp_path: Path) -> None:
    """YAML lets the last of two equal keys win silently: a second `routes:` block dropped
    the first one's routes, and `routes sync --prune` would delete their examples."""
    doubled = VALID + "routes:\n  - name: maths\n    best_model: small\n    utterances: [2+2]\n"
    with pytest.raises(ConfigError, match=r"not valid YAML.*key 'routes' given twice"):
        load_route_file(write(tmp_path, doubled))


@pytest.mark.parametrize(
    ("field", "value"),
    [("input_usd_per_mtok", ".inf"), ("output_usd_per_mtok", ".nan"), ("latency_ms", ".inf")],
)
def test_infinite_prices_and_latencies_are_refused(tmp_path: Path, field: str, value: str) -> None:
    """An infinite price made a 0-token cost NaN: its decision row was dropped (RecordOutcome by
    decision_id then NOT_FOUND) and the tenant's spend never moved. The Admin API refused it."""
    original = {"input_usd_per_mtok": "0.10", "output_usd_per_mtok": "0.40", "latency_ms": "300"}
    text = VALID.replace(f"    {field}: {original[field]}\n", f"    {field}: {value}\n", 1)
    assert text != VALID
    message = load_error(write(tmp_path, text))
    assert field in message and "finite" in message


def test_a_rule_that_can_never_match_is_refused(tmp_path: Path) -> None:
    text = VALID + (
        "policy:\n  rules:\n    - name: impossible\n      min_tokens: 100\n"
        "      max_tokens: 10\n      model: small\n"
    )
    message = load_error(write(tmp_path, text))
    assert "min_tokens 100 is above max_tokens 10" in message


def test_a_merge_key_shares_a_catalog_entry(tmp_path: Path) -> None:
    """`<<: *base` is standard YAML for sharing a block: the duplicate-key check ran on it
    before the loader merged it, and refused the file as "not valid YAML" (no constructor for
    the merge tag). A key the merge brings in that the mapping sets again is an override."""
    text = textwrap.dedent("""\
        namespace: shop
        catalog:
          - &base {name: small, provider: test, input_usd_per_mtok: 0.1,
                   output_usd_per_mtok: 0.4, latency_ms: 300, context_window: 128000}
          - <<: *base
            name: big
            input_usd_per_mtok: 3
        routes:
          - {name: order_status, best_model: big, utterances: ["where is my order?"]}
        """)
    big = load_route_file(write(tmp_path, text)).catalog[1]
    assert (big.name, big.provider, big.input_usd_per_mtok, big.output_usd_per_mtok) == (
        "big",
        "test",
        3,
        0.4,
    )


def test_a_key_given_twice_next_to_a_merge_key_is_still_refused(tmp_path: Path) -> None:
    text = "namespace: shop\nbase: &b {a: 1}\nother:\n  <<: *b\n  a: 2\n  a: 3\n"
    with pytest.raises(ConfigError, match=r"key 'a' given twice"):
        load_route_file(write(tmp_path, text))


@pytest.mark.parametrize("key", ["? [a, b]\n: 1\n", "? {a: 1}\n: 1\n"])
def test_a_list_or_mapping_as_a_key_is_a_config_error(tmp_path: Path, key: str) -> None:
    """A complex key reached the duplicate check's set and raised a bare TypeError traceback."""
    message = load_error(write(tmp_path, "namespace: shop\n" + key))
    assert "not valid YAML" in message and "a key must be a plain value" in message


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        (
            "- where is my order?\n",
            '- "where is\\0 my order?"\n',
            "route 'order_status': utterances",
        ),
        ("description: a test shop", 'description: "a test\\0shop"', "description"),
        ("provider: test\n", 'provider: "te\\0st"\n', "catalog.0.provider"),
        ("tags: {tier: small}", 'tags: {"ti\\0er": small}', "catalog.0.tags"),
        ("tags: {tier: small}", 'tags: {tier: "sm\\0all"}', "catalog.0.tags"),
        (
            "routes:\n",
            'policy: {pii_tags: ["on\\0prem"]}\nroutes:\n',
            "policy.pii_tags",
        ),
    ],
)
def test_a_nul_character_anywhere_is_refused(
    tmp_path: Path, old: str, new: str, where: str
) -> None:
    """PostgreSQL cannot store a NUL: `routes sync` and a first `serve` died with a DataError
    traceback, while SQLite stored text the Admin API refuses."""
    text = VALID.replace(old, new, 1)
    assert text != VALID
    message = load_error(write(tmp_path, text))
    assert where in message and "contains a NUL character" in message, message


@pytest.mark.parametrize(
    ("old", "new", "where", "said"),
    [
        (
            "context_window: 128000",
            "context_window: 5000000000",
            "catalog.0.context_window",
            "less than or equal to 2147483647",
        ),
        (
            "input_usd_per_mtok: 0.10",
            "input_usd_per_mtok: 1.0e+308",
            "catalog.0.input_usd_per_mtok",
            "less than or equal to 1000000",
        ),
        (
            "output_usd_per_mtok: 0.40",
            "output_usd_per_mtok: 4000000.0",
            "catalog.0.output_usd_per_mtok",
            "less than or equal to 1000000",
        ),
        (
            "latency_ms: 300",
            "latency_ms: 1.0e+12",
            "catalog.0.latency_ms",
            "less than or equal to 86400000",
        ),
        (
            "tags: {tier: small}",
            "tags: {tier: " + "x" * 257 + "}",
            "catalog.0.tags",
            "at most 256 characters",
        ),
        (
            "description: a test shop",
            "description: " + "x" * 2001,
            "description",
            "at most 2000 characters",
        ),
    ],
)
def test_numbers_and_strings_the_contract_cannot_carry_are_refused(
    tmp_path: Path, old: str, new: str, where: str, said: str
) -> None:
    """A context window past the proto's and the store's int32 made GetNamespace INTERNAL and
    `admin create-namespace` a traceback; a price of 1e308 made an infinite cost "the
    cheapest", logged as invalid JSON. Tags and descriptions past the Admin API's limits were
    refused there only."""
    text = VALID.replace(old, new, 1)
    assert text != VALID
    message = load_error(write(tmp_path, text))
    assert where in message and said in message, message
