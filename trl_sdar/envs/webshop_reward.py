"""WebShop's purchase score (pure): attributes, options, price and the type factor, as WebShop's `get_reward`.

score = (matched attributes + matched options + price ok) / (attributes + options + 1) × type factor.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from rapidfuzz import fuzz

from trl_sdar.envs.webshop_catalog import Goal, Product


def normalize_option(value: str) -> str:
    """Canonical option value: lowercase, "grey" → "gray", words sorted unless the value holds a number.

    Sorting makes "Blue Navy" equal "navy blue"; sizes keep their order because "52 x 84" ≠ "84 x 52". Options are
    compared by equality after this, not by WebShop's token-set fuzzy ratio, which also accepts "xx-large" for
    "x-large" and would turn the generated hard negatives into correct purchases.
    """
    words = re.split(r"[\s,/]+", value.lower().replace("grey", "gray").strip())
    words = [w for w in words if w]
    if any(ch.isdigit() for ch in value):
        return " ".join(words)
    return " ".join(sorted(words))


def option_matches(goal_options: Iterable[str], chosen: Iterable[str]) -> int:
    """Number of goal option values among the chosen ones (after normalisation)."""
    picked = {normalize_option(v) for v in chosen}
    return sum(normalize_option(g) in picked for g in goal_options)


def attribute_matched(attribute: str, product: Product) -> bool:
    """WebShop's rule: fuzzy match (token-set ratio > 85) against the product's attributes, else a substring of its
    title, description or feature bullets."""
    if any(fuzz.token_set_ratio(attribute.lower(), a.lower()) > 85 for a in product.attributes):
        return True
    text = " ".join((product.title, product.description, *product.features)).lower()
    return attribute.lower() in text


# Words WebShop's spaCy noun filter (NOUN / PROPN tags) drops from titles: function words, common adjectives,
# colours and measure words. spaCy is not a dependency; this list approximates its tagging on product titles.
_NOT_NOUNS = frozenset(
    "a an the and or of for with without in on at to by from as is are be this that these those it its your my our "
    "x to up out new best premium high low soft large small medium big mini extra super ultra long short slim wide "
    "light lightweight heavy duty waterproof portable adjustable compatible natural organic black white red blue "
    "green yellow pink purple brown gray grey navy beige ivory gold silver dark multi non free oz fl ft inch inches "
    "mm cm pcs pack set count piece pieces".split()
)


def title_nouns(title: str) -> list[str]:
    """The title's noun-like words (lower case, with repeats), approximating WebShop's spaCy NOUN/PROPN filter."""
    return [w for w in re.findall(r"[a-z][a-z']*", title.lower()) if len(w) > 1 and w not in _NOT_NOUNS]


def title_score(type_words: str, title: str) -> float:
    """Fraction of the goal's product-type words found in the purchased title (fuzzy, so "shirts" counts)."""
    wanted = type_words.lower().split()
    if not wanted:
        return 0.2  # WebShop's neutral value when the goal names no type
    have = re.findall(r"[a-z0-9]+", title.lower())
    return sum(any(fuzz.ratio(w, h) >= 80 for h in have) for w in wanted) / len(wanted)


def title_noun_score(goal_title: str, title: str) -> float:
    """WebShop's title score: shared nouns of the purchased and the target title over the target's noun count."""
    desired = title_nouns(goal_title)
    if not desired:
        return 0.2
    return len(set(title_nouns(title)) & set(desired)) / len(desired)


TYPE_MATCHES = ("title_nouns", "query_words")
OPTION_MATCHES = ("exact", "fuzzy")


def type_factor(goal: Goal, product: Product, type_match: str = "title_nouns") -> float:
    """WebShop's r_type: 1 if the query or ≥2 category levels match or the title overlaps (>0.2), else 0.5; then
    0.1 below a title score of 0.1 and 0 with no overlap at all.

    type_match="title_nouns" (WebShop's rule) compares the nouns of the purchased title with those of the target's
    title (`goal.name`); "query_words" (this project's earlier rule) looks for the goal's query words in the title.
    """
    if type_match == "title_nouns" and goal.name:
        score = title_noun_score(goal.name, product.title)
    else:
        score = title_score(goal.query, product.title)
    same_query = bool(goal.query) and goal.query == product.query
    same_category = len(set(goal.category_path) & set(product.category_path)) >= 2
    factor = 1.0 if (same_query or same_category or score > 0.2) else 0.5
    if score < 0.1:
        factor = 0.1
    if score == 0.0:
        factor = 0.0
    return factor


def fuzzy_option_matches(goal_options: Iterable[str], chosen: Iterable[str]) -> int:
    """WebShop's option rule: a goal value counts if a chosen value has token-set ratio > 85 (grey → gray first)."""
    picked = [v.lower().replace("grey", "gray") for v in chosen]
    return sum(
        any(fuzz.token_set_ratio(p, g.lower().replace("grey", "gray")) > 85 for p in picked) for g in goal_options
    )


@dataclass(frozen=True)
class PurchaseScore:
    type_factor: float
    attributes_matched: int
    options_matched: int
    price_ok: bool
    total: float


def purchase_score(
    goal: Goal,
    product: Product,
    chosen_options: Iterable[str],
    *,
    type_match: str = "title_nouns",
    option_match: str = "exact",
) -> PurchaseScore:
    """Score of buying `product` with the clicked option values `chosen_options` for `goal`.

    option_match="exact" compares normalised values (see `normalize_option`); "fuzzy" is WebShop's token-set rule.
    """
    chosen_options = list(chosen_options)
    n_attr = sum(attribute_matched(a, product) for a in goal.attributes)
    matcher = fuzzy_option_matches if option_match == "fuzzy" else option_matches
    n_opt = matcher(goal.options, chosen_options)
    price_ok = goal.price_upper <= 0 or product.price <= goal.price_upper
    r_type = type_factor(goal, product, type_match)
    total = (n_attr + n_opt + int(price_ok)) / (len(goal.attributes) + len(goal.options) + 1) * r_type
    return PurchaseScore(r_type, n_attr, n_opt, price_ok, total)
