"""Tests for routebook.catalog: price order (which is also strength order), lookups and costs."""

from __future__ import annotations

import dataclasses

import pytest

from routebook.catalog import CHARS_PER_TOKEN, Catalog, ModelSpec, estimate_tokens
from routebook.errors import InvalidArgument, RoutebookError


def spec(name: str, input_price: float, output_price: float) -> ModelSpec:
    return ModelSpec(
        name=name,
        provider="test",
        input_usd_per_mtok=input_price,
        output_usd_per_mtok=output_price,
        latency_ms=100.0,
        context_window=128_000,
    )


# Total price per Mtok (input + output): nano 0.5, mini 2.0, sonnet 18.0, opus 90.0.
NANO = spec("nano", 0.10, 0.40)
MINI = spec("mini", 0.40, 1.60)
SONNET = spec("sonnet", 3.00, 15.00)
OPUS = spec("opus", 15.00, 75.00)


@pytest.fixture
def catalog() -> Catalog:
    return Catalog([SONNET, NANO, OPUS, MINI])


def test_models_are_ordered_cheapest_first(catalog: Catalog) -> None:
    assert catalog.models == (NANO, MINI, SONNET, OPUS)
    assert catalog.names == ("nano", "mini", "sonnet", "opus")


def test_order_does_not_depend_on_input_order() -> None:
    forwards = Catalog([NANO, MINI, SONNET, OPUS])
    backwards = Catalog([OPUS, SONNET, MINI, NANO])
    assert forwards.names == backwards.names


def test_equal_total_price_orders_by_output_price_then_name() -> None:
    # Totals are all 3.0 per Mtok; "out_heavy" pays more for output, so it counts as pricier.
    out_heavy = spec("out_heavy", 1.0, 2.0)
    in_heavy = spec("in_heavy", 2.0, 1.0)
    twin_b = spec("twin_b", 1.5, 1.5)
    twin_a = spec("twin_a", 1.5, 1.5)
    catalog = Catalog([out_heavy, twin_b, in_heavy, twin_a])
    # price keys: in_heavy (3, 1), twin_a (3, 1.5, "twin_a"), twin_b (3, 1.5, "twin_b"),
    # out_heavy (3, 2)
    assert catalog.names == ("in_heavy", "twin_a", "twin_b", "out_heavy")


def test_price_key() -> None:
    assert SONNET.price_key == (18.0, 15.0, "sonnet")


def test_rank_is_the_position_cheapest_first(catalog: Catalog) -> None:
    assert [catalog.rank(n) for n in ("nano", "mini", "sonnet", "opus")] == [0, 1, 2, 3]


def test_rank_of_an_unknown_model_is_invalid_argument(catalog: Catalog) -> None:
    with pytest.raises(InvalidArgument, match="gpt-9"):
        catalog.rank("gpt-9")


def test_strongest_is_the_priciest(catalog: Catalog) -> None:
    assert catalog.strongest is OPUS
    assert Catalog([MINI]).strongest is MINI


def test_the_strongest_tier_is_every_model_at_the_top_price(catalog: Catalog) -> None:
    assert catalog.strongest_tier == {"opus"}
    twin = spec("opus-twin", 15.00, 75.00)
    assert Catalog([*catalog.models, twin]).strongest_tier == {"opus", "opus-twin"}
    assert Catalog([]).strongest_tier == frozenset()


def test_strongest_of_an_empty_catalog_raises() -> None:
    with pytest.raises(IndexError):
        _ = Catalog([]).strongest


def test_len_contains_and_get(catalog: Catalog) -> None:
    assert len(catalog) == 4
    assert "mini" in catalog
    assert "gpt-9" not in catalog
    assert 42 not in catalog
    assert catalog.get("sonnet") is SONNET


def test_get_unknown_names_the_model_and_the_known_ones(catalog: Catalog) -> None:
    with pytest.raises(InvalidArgument) as info:
        catalog.get("gpt-9")
    message = str(info.value)
    assert "'gpt-9'" in message
    assert "nano, mini, sonnet, opus" in message  # known models, cheapest first
    assert isinstance(info.value, RoutebookError)


def test_get_on_an_empty_catalog_says_none() -> None:
    with pytest.raises(InvalidArgument, match="catalog has none"):
        Catalog([]).get("anything")


def test_duplicate_names_are_rejected() -> None:
    with pytest.raises(InvalidArgument, match="twice"):
        Catalog([NANO, spec("nano", 5.0, 5.0)])


def test_catalog_accepts_any_iterable() -> None:
    catalog = Catalog(m for m in (MINI, NANO))
    assert catalog.names == ("nano", "mini")


def test_empty_catalog() -> None:
    empty = Catalog([])
    assert len(empty) == 0
    assert empty.models == ()
    assert empty.names == ()


def test_model_spec_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        NANO.name = "other"  # type: ignore[misc]


def test_model_spec_tags_default_to_empty() -> None:
    assert NANO.tags == {}


@pytest.mark.parametrize(
    ("model", "input_tokens", "output_tokens", "expected"),
    [
        # (1000 * 3 + 500 * 15) / 1e6 = (3000 + 7500) / 1e6 = 0.0105
        (SONNET, 1000, 500, 0.0105),
        # (1_000_000 * 0.10 + 0) / 1e6 = 0.10
        (NANO, 1_000_000, 0, 0.10),
        # (0 + 1_000_000 * 0.40) / 1e6 = 0.40
        (NANO, 0, 1_000_000, 0.40),
        # (250 * 15 + 4000 * 75) / 1e6 = (3750 + 300000) / 1e6 = 0.30375
        (OPUS, 250, 4000, 0.30375),
        (MINI, 0, 0, 0.0),
    ],
)
def test_cost_usd(model: ModelSpec, input_tokens: int, output_tokens: int, expected: float) -> None:
    assert model.cost_usd(input_tokens, output_tokens) == pytest.approx(expected)


def test_cost_is_linear_in_tokens() -> None:
    one = SONNET.cost_usd(123, 456)
    assert SONNET.cost_usd(246, 912) == pytest.approx(2 * one)


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", 1),  # never zero
        ("a", 1),
        ("abcd", 1),  # 4 / 4 = 1
        ("abcde", 2),  # ceil(5 / 4) = 2
        ("x" * 400, 100),
        ("x" * 401, 101),
    ],
)
def test_estimate_tokens(text: str, tokens: int) -> None:
    assert CHARS_PER_TOKEN == 4
    assert estimate_tokens(text) == tokens


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("请总结附件中的季度报告，并列出三个最大的风险。", 23),  # noqa: RUF001 (a token each)
        ("注文の返金をお願いします", 12),  # kanji and kana
        ("환불해 주세요", 6 + 1),  # six Hangul syllables, and the space
        ("ฉันต้องการคืนเงิน", 17),  # Thai: every code point, marks included
        ("refund 退款 please", 4 + 2),  # "refund " and " please": 14 characters as English
        ("héllo wörld, ça va? Привет", 7),  # other scripts as English: unchanged
    ],
)
def test_scripts_without_spaces_count_a_token_per_character(text: str, tokens: int) -> None:
    """Counted as English, Chinese text came out about 4x short of a tokenizer's count."""
    assert estimate_tokens(text) == tokens


def test_an_unknown_namespace_is_named_with_the_closest_and_a_bounded_list() -> None:
    from routebook.service.namespaces import LISTED_NAMESPACES, unknown_namespace

    assert unknown_namespace("shop", []) == (
        "namespace 'shop' does not exist; there are none yet (run `routebook routes sync`)"
    )
    assert unknown_namespace("shpo", ["default", "shop"]) == (
        "namespace 'shpo' does not exist (did you mean 'shop'?); known namespaces: default, shop"
    )
    many = [f"tenant-{n:05d}" for n in range(5000)]
    message = unknown_namespace("nope", many)
    assert message.startswith("namespace 'nope' does not exist; 5000 namespaces are known")
    assert message.count("tenant-") == LISTED_NAMESPACES and len(message) < 400


def test_an_unknown_price_sorts_as_the_dearest_and_leaves_the_others_in_order() -> None:
    """A NaN price (a catalog stored before prices were bounded) in the sort key left the
    other models out of order: `dear` ranked below `mid`, so a tier ceiling at `mid` let
    `dear`, five times its price, through."""
    nan = float("nan")
    catalog = Catalog([spec("dear", 10, 10), spec("broken", nan, nan), spec("cheap", 1, 1)])
    catalog = Catalog([*catalog.models, spec("mid", 2, 2)])
    assert catalog.names == ("cheap", "mid", "dear", "broken")
    assert [catalog.tier(n) for n in catalog.names] == [0, 1, 2, 3]
    assert catalog.strongest_tier == frozenset({"broken"})
