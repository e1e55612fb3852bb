"""WebShop product catalog and shopping goals: a generated one (deterministic by seed) and a reader for real data.

The generated catalog has the structure WebShop's reward relies on: products of a type carry attributes
("machine washable"), options (size, colour, scent) and a price, and every goal comes with hard negatives of its own
type (one goal attribute missing, one goal option value missing, or over budget). Goal instructions follow WebShop's
wording ("..., and price lower than 40.00 dollars") and name a product type that contains exactly one skill-category
keyword (none for "other"), because SDAR selects the WebShop skill file by keywords in the instruction.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import dataclass

# Goals (each with its target and three hard negatives) of the built-in catalog, training and evaluation alike:
# the evaluation manifest's goals 0-127 are searched among the same 10,000 products as training's goals 128+.
BUILTIN_NUM_GOALS = 2500
GOAL_SOURCES = ("auto", "human", "synthetic")
# WebShop's budgets: a goal's price bound is drawn from these above the product's price.
PRICE_RANGE = tuple(10.0 * i for i in range(1, 100))

CATEGORIES = ("apparel", "footwear", "home_decor", "electronics", "accessories", "beauty_health", "other")

_SIZES_APPAREL = ("small", "medium", "large", "x-large", "xx-large")
_SIZES_SHOE = ("6", "7", "8", "8.5", "9", "10", "11")
_COLORS = (
    "black", "white", "navy blue", "sky blue", "heather gray", "charcoal", "burgundy", "olive green",
    "mint green", "beige", "blush pink", "mustard yellow", "dark brown", "ivory", "coral",
)  # fmt: skip
_SCENTS = ("lavender", "citrus", "coconut", "unscented", "green tea", "vanilla")


@dataclass(frozen=True)
class ProductType:
    """A kind of product: its name (also the type words of the reward), attribute pool, option sets, price range."""

    name: str
    category: str
    attributes: tuple[str, ...]
    options: tuple[tuple[str, tuple[str, ...]], ...]
    price_range: tuple[float, float]
    material: str


def _t(name, category, attributes, options, price_range, material) -> ProductType:
    return ProductType(name, category, tuple(attributes), tuple(options), price_range, material)


PRODUCT_TYPES: tuple[ProductType, ...] = (
    _t("shirt", "apparel", ("long sleeve", "machine washable", "button down", "slim fit", "wrinkle free",
       "moisture wicking"), (("size", _SIZES_APPAREL), ("color", _COLORS)), (12, 45), "cotton blend"),
    _t("jeans", "apparel", ("high waist", "stretch denim", "straight leg", "relaxed fit", "button fly"),
       (("size", _SIZES_APPAREL), ("color", _COLORS[:6])), (20, 60), "denim"),
    _t("jacket", "apparel", ("water resistant", "zip closure", "fleece lined", "hooded", "windproof"),
       (("size", _SIZES_APPAREL), ("color", _COLORS)), (30, 120), "polyester shell"),
    _t("sneaker", "footwear", ("non slip", "breathable mesh", "lace up", "memory foam", "lightweight"),
       (("size", _SIZES_SHOE), ("color", _COLORS)), (25, 90), "knit upper"),
    _t("boot", "footwear", ("waterproof", "side zipper", "faux fur lining", "rubber sole", "ankle height"),
       (("size", _SIZES_SHOE), ("color", _COLORS[:8])), (40, 150), "suede"),
    _t("sandal", "footwear", ("open toe", "adjustable strap", "arch support", "quick drying", "cushioned footbed"),
       (("size", _SIZES_SHOE), ("color", _COLORS)), (15, 55), "synthetic straps"),
    _t("throw pillow", "home_decor", ("down alternative", "zipper closure", "double sided print",
       "machine washable", "plush velvet"), (("size", ("16 x 16 inch", "18 x 18 inch", "20 x 20 inch")),
       ("color", _COLORS)), (10, 40), "velvet cover"),
    _t("table lamp", "home_decor", ("dimmable", "touch control", "energy efficient", "linen shade", "warm light"),
       (("color", _COLORS[:10]),), (20, 80), "ceramic base"),
    _t("curtain panel", "home_decor", ("blackout", "thermal insulated", "rod pocket", "noise reducing",
       "grommet top"), (("size", ("52 x 63 inch", "52 x 84 inch", "52 x 95 inch")), ("color", _COLORS)),
       (15, 60), "woven polyester"),
    _t("phone charger", "electronics", ("fast charging", "foldable plug", "dual port", "overheat protection",
       "compact design"), (("color", ("black", "white", "charcoal", "sky blue")),), (10, 40), "fireproof shell"),
    _t("usb cable", "electronics", ("braided nylon", "fast charging", "data sync", "tangle free",
       "reinforced connector"), (("size", ("3 ft", "6 ft", "10 ft")), ("color", _COLORS[:6])), (6, 25),
       "nylon jacket"),
    _t("bluetooth speaker", "electronics", ("waterproof", "long battery life", "built in microphone", "portable",
       "deep bass"), (("color", _COLORS[:9]),), (20, 120), "rubberised body"),
    _t("wallet", "accessories", ("rfid blocking", "genuine leather", "slim design", "coin pocket", "money clip"),
       (("color", ("black", "dark brown", "burgundy", "charcoal", "navy blue")),), (12, 60), "leather"),
    _t("watch", "accessories", ("water resistant", "stainless steel", "analog display", "quartz movement",
       "luminous hands"), (("color", ("black", "white", "ivory", "navy blue", "olive green")),), (30, 200),
       "steel case"),
    _t("belt", "accessories", ("genuine leather", "reversible", "automatic buckle", "ratchet closure",
       "casual style"), (("size", ("32", "34", "36", "38", "40")), ("color", ("black", "dark brown", "beige"))),
       (10, 45), "leather strap"),
    _t("shampoo", "beauty_health", ("sulfate free", "paraben free", "for dry hair", "color safe",
       "natural ingredients"), (("size", ("8 fl oz", "12 fl oz", "16 fl oz")), ("scent", _SCENTS)), (6, 30),
       "plant based formula"),
    _t("face cream", "beauty_health", ("fragrance free", "for sensitive skin", "hyaluronic acid", "non greasy",
       "spf 30"), (("size", ("1.7 oz", "2.5 oz", "3.4 oz")),), (10, 60), "light formula"),
    _t("makeup brush", "beauty_health", ("synthetic bristles", "cruelty free", "vegan", "easy to clean",
       "storage case"), (("color", _COLORS[:8]),), (8, 35), "wooden handle"),
    _t("yoga mat", "other", ("non slip", "extra thick", "eco friendly", "carrying strap", "sweat resistant"),
       (("size", ("4 mm", "6 mm", "8 mm")), ("color", _COLORS)), (15, 70), "natural rubber"),
    _t("water bottle", "other", ("bpa free", "leak proof", "insulated", "dishwasher safe", "wide mouth"),
       (("size", ("20 oz", "32 oz", "40 oz")), ("color", _COLORS)), (10, 45), "stainless steel"),
    _t("coffee mug", "other", ("microwave safe", "dishwasher safe", "large capacity", "ceramic", "gift box"),
       (("color", _COLORS),), (8, 30), "glazed stoneware"),
)  # fmt: skip

_BRAND_HEADS = ("vel", "kor", "sun", "bra", "lum", "tor", "mira", "quen", "ost", "zal", "fen", "dru", "ari", "pex")
_BRAND_TAILS = ("mora", "dex", "vale", "nix", "ford", "ista", "ora", "wick", "loft", "tano", "ber", "cel")
_EXTRAS = ("Backed by a 30 day return policy.", "Ships in recyclable packaging.", "Designed for daily use.")
_REVIEWS = ("Arrived on time and looks like the photos.", "Good value for the price.", "Would order again.",
            "The fit and finish are fine.", "Works as described, no complaints.")  # fmt: skip
_INSTRUCTIONS = (
    "i need {attrs} {type} with {opts}, and price lower than {price} dollars",
    "i am looking for a {type} which is {attrs}, with {opts}, and price lower than {price} dollars",
    "buy me {attrs} {type} in {opts}, and price lower than {price} dollars",
)


@dataclass(frozen=True)
class Product:
    asin: str
    title: str
    category: str  # skill category (generated data) or WebShop's top-level category (real data)
    query: str  # product type words: what WebShop calls the product's query; the reward's type words
    category_path: tuple[str, ...]  # WebShop's "product_category" split on "›"
    attributes: tuple[str, ...]
    options: tuple[tuple[str, tuple[str, ...]], ...]  # (option name, values shown on the item page)
    price: float
    description: str
    features: tuple[str, ...]
    reviews: tuple[str, ...]  # the review page's texts, in page order
    price_tag: str = ""  # the price as pages show it: "$12.99" or "$12.99 to $15.0"

    def search_text(self) -> str:
        return " ".join((self.title, self.description, *self.features))


@dataclass(frozen=True)
class Goal:
    instruction: str
    category: str  # skill category: the Task's task_type
    asin: str  # the product the goal was written for
    query: str
    category_path: tuple[str, ...]
    attributes: tuple[str, ...]
    options: tuple[str, ...]  # option values only, as in WebShop's goals
    price_upper: float
    keywords: str  # the expert's first search
    hard_negatives: tuple[str, ...] = ()  # ASINs built to miss this goal by one attribute, option or the budget
    name: str = ""  # the target's title: WebShop's type reward compares its nouns with the purchased title's


@dataclass(frozen=True)
class Catalog:
    products: tuple[Product, ...]
    goals: tuple[Goal, ...]


def _brand(rng: random.Random) -> str:
    return (rng.choice(_BRAND_HEADS) + rng.choice(_BRAND_TAILS)).capitalize()


def _asin(seed: int, goal: int, slot: int) -> str:
    return "B0" + hashlib.sha1(f"{seed}-{goal}-{slot}".encode()).hexdigest()[:8].upper()


def _display_value(value: str, rng: random.Random) -> str:
    """How a product page spells an option value: colours vary in case, word order and grey/gray, like real data."""
    words = value.split()
    if any(ch.isdigit() for ch in value):
        return value
    choice = rng.randrange(4)
    if choice == 1:
        return value.title()
    if choice == 2 and len(words) == 2:
        return f"{words[1]} {words[0]}"
    if choice == 3 and "gray" in words:
        return value.replace("gray", "grey")
    return value


def _make_product(
    ptype: ProductType,
    asin: str,
    attributes: tuple[str, ...],
    options: dict[str, tuple[str, ...]],
    price: float,
    rng: random.Random,
) -> Product:
    brand = _brand(rng)
    lead = f"{attributes[0].title()} " if attributes else ""
    title = f"{brand} {lead}{ptype.name.title()} - {ptype.material.title()}"
    quality = ", ".join(attributes) if attributes else "a simple design"
    description = f"This {ptype.name} by {brand} is made of {ptype.material}. Highlights: {quality}."
    features = tuple(f"{a.capitalize()}." for a in attributes) + (rng.choice(_EXTRAS),)
    shown = tuple((name, tuple(_display_value(v, rng) for v in values)) for name, values in options.items())
    return Product(
        asin=asin,
        title=title,
        category=ptype.category,
        query=ptype.name,
        category_path=(ptype.category, ptype.name),
        attributes=attributes,
        options=shown,
        price=round(price, 2),
        description=description,
        features=features,
        reviews=tuple(rng.sample(_REVIEWS, 2)),
        price_tag=f"${round(price, 2)}",
    )


def _option_sets(ptype: ProductType, wanted: dict[str, str], rng: random.Random) -> dict[str, tuple[str, ...]]:
    """Values a product offers per option: the wanted value plus 2-4 others, in catalog order."""
    sets = {}
    for name, values in ptype.options:
        others = [v for v in values if v != wanted[name]]
        picked = set(rng.sample(others, min(len(others), rng.randint(2, 4)))) | {wanted[name]}
        sets[name] = tuple(v for v in values if v in picked)
    return sets


def _instruction(
    ptype: ProductType, attrs: tuple[str, ...], wanted: dict[str, str], price_upper: float, rng: random.Random
) -> str:
    return rng.choice(_INSTRUCTIONS).format(
        attrs=" and ".join(attrs),
        type=ptype.name,
        opts=", and ".join(f"{name}: {wanted[name]}" for name, _ in ptype.options),
        price=f"{price_upper:.2f}",
    )


def _goal_family(ptype: ProductType, seed: int, index: int, rng: random.Random) -> tuple[Goal, list[Product]]:
    """One goal, its target product and three hard negatives of the same type."""
    goal_attrs = tuple(rng.sample(ptype.attributes, rng.choice((1, 2, 2, 3))))
    spare = [a for a in ptype.attributes if a not in goal_attrs]
    wanted = {name: rng.choice(values) for name, values in ptype.options}
    price = rng.uniform(*ptype.price_range)
    price_upper = float(math.ceil(price / 10.0) * 10 + 10 * rng.randint(0, 2))
    if price_upper - price < 0.5:  # keep the budget visibly above the target's price
        price_upper += 10.0

    target_attrs = goal_attrs + ((rng.choice(spare),) if spare and rng.random() < 0.5 else ())
    products = [
        _make_product(ptype, _asin(seed, index, 0), target_attrs, _option_sets(ptype, wanted, rng), price, rng)
    ]
    # Hard negative 1: one goal attribute swapped for a non-goal one.
    dropped = rng.choice(goal_attrs)
    neg_attrs = tuple(a for a in goal_attrs if a != dropped) + ((rng.choice(spare),) if spare else ())
    products.append(
        _make_product(
            ptype,
            _asin(seed, index, 1),
            neg_attrs,
            _option_sets(ptype, wanted, rng),
            rng.uniform(ptype.price_range[0], price_upper - 0.5),
            rng,
        )
    )
    # Hard negative 2: every attribute, but one wanted option value is not offered.
    sets = _option_sets(ptype, wanted, rng)
    name = rng.choice(list(sets))
    sets[name] = (
        tuple(v for v in sets[name] if v != wanted[name])
        or tuple(v for v in dict(ptype.options)[name] if v != wanted[name])[:2]
    )
    products.append(_make_product(ptype, _asin(seed, index, 2), target_attrs, sets, price, rng))
    # Hard negative 3: matches everything but costs more than the budget.
    over = price_upper + rng.uniform(3.0, 25.0)
    products.append(
        _make_product(ptype, _asin(seed, index, 3), target_attrs, _option_sets(ptype, wanted, rng), over, rng)
    )

    goal = Goal(
        instruction=_instruction(ptype, goal_attrs, wanted, price_upper, rng),
        category=ptype.category,
        asin=products[0].asin,
        query=ptype.name,
        category_path=(ptype.category, ptype.name),
        attributes=goal_attrs,
        options=tuple(wanted[name] for name, _ in ptype.options),
        price_upper=price_upper,
        keywords=" ".join((*goal_attrs, ptype.name)),
        hard_negatives=tuple(p.asin for p in products[1:]),
        name=products[0].title,
    )
    return goal, products


def generate_catalog(seed: int = 0, num_goals: int = BUILTIN_NUM_GOALS) -> Catalog:
    """Goal i gets category CATEGORIES[i % 7] (balanced task types); products are shuffled so order leaks nothing."""
    by_category = {c: [t for t in PRODUCT_TYPES if t.category == c] for c in CATEGORIES}
    goals, products = [], []
    for index in range(num_goals):
        rng = random.Random(f"webshop-{seed}-{index}")
        ptype = rng.choice(by_category[CATEGORIES[index % len(CATEGORIES)]])
        goal, family = _goal_family(ptype, seed, index, rng)
        goals.append(goal)
        products.extend(family)
    random.Random(f"webshop-order-{seed}").shuffle(products)
    if len({p.asin for p in products}) != len(products):
        raise RuntimeError("ASIN collision in the generated catalog; change the seed.")
    return Catalog(products=tuple(products), goals=tuple(goals))


# --- real WebShop data -------------------------------------------------------------------------------------------

# The keyword lists of SDAR's WebShop skill mapping. A real goal's task type is the first category with a keyword in
# its instruction, "other" when none has one.
CATEGORY_KEYWORDS: dict[str, tuple[str, ...]] = {
    "apparel": ("shirt", "dress", "pants", "jacket", "sweater", "blouse", "skirt", "coat", "jeans", "shorts"),
    "footwear": ("shoe", "boot", "sneaker", "sandal", "slipper", "loafer", "heel"),
    "home_decor": ("pillow", "rug", "curtain", "lamp", "vase", "frame", "candle", "decor"),
    "electronics": ("phone", "charger", "cable", "speaker", "headphone", "battery", "adapter", "usb"),
    "accessories": ("bag", "wallet", "belt", "watch", "sunglasses", "hat", "scarf", "glove"),
    "beauty_health": ("shampoo", "cream", "lotion", "makeup", "brush", "serum", "moisturizer", "soap"),
    "other": (),
}


def keyword_categories(instruction: str, whole_words: bool = True) -> list[str]:
    """Categories with a keyword in the instruction.

    `whole_words=False` is the reference rule (plain substrings), under which "that" selects "hat" (accessories);
    the default only matches keywords at the start of a word, so "shoes" still finds "shoe". Generated instructions
    give the same answer under both.
    """
    text = instruction.lower()
    found = (lambda w: w in text) if not whole_words else (lambda w: re.search(rf"\b{re.escape(w)}", text))
    return [c for c, words in CATEGORY_KEYWORDS.items() if any(found(w) for w in words)]
