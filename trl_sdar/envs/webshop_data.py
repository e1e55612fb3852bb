"""Real WebShop data: products, attributes and goals from a WebShop checkout's data/ folder, read as WebShop's
`load_products`, `get_human_goals` and `get_synthetic_goals` read them.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from dataclasses import replace
from pathlib import Path

from trl_sdar.envs.webshop_catalog import GOAL_SOURCES, PRICE_RANGE, Catalog, Goal, Product, keyword_categories


def _find(folder: Path, pattern: str) -> Path | None:
    for base in (folder, folder / "data"):
        hits = sorted(base.glob(pattern))
        if hits:
            return hits[0]
    return None


def _pricing(raw: object) -> tuple[float, ...]:
    """WebShop's reading of a "pricing" field: the numbers after each "$" (at most two); none → $100.0."""
    text = str(raw or "")
    prices = []
    for part in text.split("$")[1:]:
        digits = re.sub(r"[^\d.]", "", part)
        if digits.strip("."):
            prices.append(float(digits))
    return tuple(prices[:2]) or (100.0,)


def _price_tag(pricing: tuple[float, ...]) -> str:
    return f"${pricing[0]}" if len(pricing) == 1 else f"${pricing[0]} to ${pricing[1]}"


def _real_reviews(raw: object) -> tuple[str, ...]:
    texts: list[str] = []
    for review in raw if isinstance(raw, list) else []:
        if isinstance(review, dict):
            texts += [f'"{review.get("title", "")}"', str(review.get("score", "")), str(review.get("body", ""))]
    return tuple(texts)


def _real_product(raw: dict, attributes: dict, seed: int) -> Product:
    bullets = raw.get("small_description") or []
    features = tuple(bullets) if isinstance(bullets, list) else (str(bullets),)
    # WebShop's option values: stripped, "/" shown as " | ", lower case (names lower case too).
    options = tuple(
        (
            str(name).lower(),
            tuple(str(v["value"] if isinstance(v, dict) else v).strip().replace("/", " | ").lower() for v in values),
        )
        for name, values in (raw.get("customization_options") or {}).items()
        if values
    )
    path = tuple(p.strip().lower() for p in str(raw.get("product_category", "")).split("›") if p.strip())
    pricing = _pricing(raw.get("pricing"))
    # WebShop scores a price range by one price drawn uniformly inside it; drawn here per product, seeded.
    price = pricing[0] if len(pricing) == 1 else random.Random(f"webshop-price-{seed}-{raw['asin']}").uniform(*pricing)
    return Product(
        asin=str(raw["asin"]).upper(),
        title=str(raw.get("name", "")),
        category=str(raw.get("category", "")),
        query=str(raw.get("query", "")).lower(),
        category_path=path,
        attributes=tuple(attributes.get(raw["asin"], {}).get("attributes", ())),
        options=options,
        price=price,
        description=str(raw.get("full_description", "")),
        features=features,
        reviews=_real_reviews(raw.get("reviews") or raw.get("Reviews")),
        price_tag=_price_tag(pricing),
    )


def price_bound(price: float, rng: random.Random) -> tuple[float, str]:
    """WebShop's budget: the larger of two draws among the first four PRICE_RANGE values above the price, with the
    instruction's ", and price lower than X dollars"; no bound and no text when fewer than two values are left."""
    above = [p for p in PRICE_RANGE if p > price][:4]
    if len(above) < 2:
        return 1_000_000.0, ""
    upper = max(rng.sample(above, 2))
    return upper, f", and price lower than {upper:.2f} dollars"


def _real_goal(product: Product, text: str, attrs, options, rng: random.Random) -> Goal:
    upper, price_text = price_bound(product.price, rng)
    found = [c for c in keyword_categories(text) if c != "other"]
    return Goal(
        instruction=text + price_text,
        category=found[0] if found else "other",
        asin=product.asin,
        query=product.query,
        category_path=product.category_path,
        attributes=tuple(attrs),
        options=tuple(str(o).lower() for o in options),
        price_upper=upper,
        keywords=" ".join((*attrs, product.query)),
        name=product.title,
    )


def human_goals(raw_goals: dict, by_asin: dict[str, Product], seed: int) -> list[Goal]:
    """WebShop's human goals: each annotated instruction (final "." stripped), skipping those without attributes."""
    goals = []
    for asin, entries in raw_goals.items():
        product = by_asin.get(str(asin).upper())
        for j, entry in enumerate(entries if isinstance(entries, list) else [entries]):
            attrs = tuple(entry.get("instruction_attributes") or ())
            if product is None or not entry.get("instruction") or not attrs:
                continue
            rng = random.Random(f"webshop-real-{seed}-{asin}-{j}")
            text = str(entry["instruction"]).strip().strip(".")
            goals.append(_real_goal(product, text, attrs, entry.get("instruction_options") or (), rng))
    return goals


def synthetic_goals(attributes: dict, by_asin: dict[str, Product], seed: int) -> list[Goal]:
    """WebShop's synthetic goals: per product with a generated instruction, one goal per combination of its option
    values (option names sorted), the instruction extended with " with name: value, and name: value"."""
    goals = []
    for asin, entry in attributes.items():
        product = by_asin.get(str(asin).upper())
        text, attrs = entry.get("instruction"), tuple(entry.get("instruction_attributes") or ())
        if product is None or not text or not attrs:
            continue
        rng = random.Random(f"webshop-synth-{seed}-{asin}")
        upper_text = price_bound(product.price, rng)  # one budget per product, shared by its combinations
        options = dict(product.options)
        names = sorted(options)
        for combo in itertools.product(*(options[n] for n in names)):
            option_text = ", and ".join(f"{n}: {v}" for n, v in zip(names, combo))
            full = f"{text}{' with ' + option_text if option_text else ''}"
            goal = _real_goal(product, full, attrs, combo, rng)
            goals.append(replace(goal, instruction=full + upper_text[1], price_upper=upper_text[0]))
    return goals


CATALOGS = ("small", "full")


def load_webshop_catalog(
    data_dir: str | Path, seed: int = 0, goals: str = "synthetic", catalog: str = "small"
) -> Catalog:
    """Read products and goals from the data folder of a WebShop checkout (or the checkout root).

    Products (`catalog`): "small", `items_shuffle_1000.json` with `items_ins_v2_1000.json` (WebShop's default files,
    the 1,000 products SDAR's runs use); "full", `items_shuffle.json` with `items_ins_v2.json`. Goals (`goals`):
    "synthetic" from the attribute file's generated instructions (SDAR's `human_goals: False`), "human" from
    `items_human_ins*.json`, "auto" human when that file exists. WebShop draws budgets and range prices from one
    global RNG; here they are drawn per goal / product from seeded RNGs, so a goal id always means the same goal.
    """
    if goals not in GOAL_SOURCES:
        raise ValueError(f"goals must be one of {GOAL_SOURCES}, got {goals!r}")
    if catalog not in CATALOGS:
        raise ValueError(f"catalog must be one of {CATALOGS}, got {catalog!r}")
    folder = Path(data_dir).expanduser()
    suffix = "_1000" if catalog == "small" else ""
    product_file = _find(folder, f"items_shuffle{suffix}.json")
    attr_file = _find(folder, f"items_ins_v2{suffix}.json")
    human_file = _find(folder, "items_human_ins*.json")
    use_human = goals == "human" or (goals == "auto" and human_file is not None)
    if product_file is None or (human_file if use_human else attr_file) is None:
        raise FileNotFoundError(
            f"WebShop data not found under {folder}: expected items_shuffle{suffix}.json (products, catalog="
            f"{catalog!r}) and items_human_ins*.json (human goals) or items_ins_v2{suffix}.json (attributes, "
            "synthetic goals), as in the data/ folder of a WebShop checkout after its setup script downloaded them."
        )
    attributes = json.loads(attr_file.read_text()) if attr_file else {}
    products = tuple(_real_product(raw, attributes, seed) for raw in json.loads(product_file.read_text()))
    by_asin = {p.asin: p for p in products}
    if use_human:
        found = human_goals(json.loads(human_file.read_text()), by_asin, seed)
    else:
        found = synthetic_goals(attributes, by_asin, seed)
    if not found:
        raise ValueError(f"No goal in {human_file if use_human else attr_file} refers to a product in {product_file}.")
    return Catalog(products=products, goals=tuple(found))
