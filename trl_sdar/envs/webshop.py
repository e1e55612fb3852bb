"""WebShop: buy the product an instruction describes, through WebShop's search → results → item → buy pages.

Pages render as WebShop's simple text mode (the visible texts of its page templates joined by " [SEP] ": the search
page starts "WebShop [SEP] Instruction: [SEP] ...", the others "Instruction: [SEP] ...") and actions are WebShop's
strings: `search[query]` (from any page), `click[element]` (a product id, an option value, "next >", "< prev",
"back to search", "description", "features", "reviews", "buy now"); the admissible list is WebShop's available
actions: "search[<your query>]" where the page has a search bar, then "click[<text>]" per clickable.
The purchase score follows WebShop's rule (`webshop_reward`):
(matched attributes + matched options + price ok) / (attributes + options + 1) × type factor; the environment pays
10.0 only for a perfect purchase (score 1.0), as in SDAR's runs. Products come from the generated catalog
(`webshop_catalog.generate_catalog`) or from a WebShop checkout's data (`source="real"`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path

from trl_sdar.envs.base import Observation, StepResult, Task
from trl_sdar.envs.bm25 import BM25Index
from trl_sdar.envs.task_order import order_items
from trl_sdar.envs.webshop_catalog import (
    BUILTIN_NUM_GOALS,
    GOAL_SOURCES,
    Catalog,
    Goal,
    Product,
    generate_catalog,
)
from trl_sdar.envs.webshop_data import CATALOGS, load_webshop_catalog
from trl_sdar.envs.webshop_reward import (  # noqa: F401 (re-exported: the reward is part of this env's API)
    OPTION_MATCHES,
    TYPE_MATCHES,
    PurchaseScore,
    attribute_matched,
    fuzzy_option_matches,
    normalize_option,
    option_matches,
    purchase_score,
    title_noun_score,
    title_nouns,
    title_score,
    type_factor,
)

WIN_REWARD = 10.0
SUB_PAGES = ("description", "features", "reviews")


def parse_action(action: str) -> tuple[str, str] | None:
    """`search[query]` / `click[element]` → (verb, argument); anything else → None."""
    match = re.fullmatch(r"\s*(search|click)\[(.*)\]\s*", action, flags=re.IGNORECASE | re.DOTALL)
    if match is None:
        return None
    return match.group(1).lower(), match.group(2).strip()


# --- pages ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PageState:
    kind: str = "search"  # "search" | "results" | "item" | one of SUB_PAGES | "done"
    query: str = ""
    results: tuple[int, ...] = ()  # product indices of the last search, best first
    page: int = 1
    item: int = -1  # product index on item and sub pages
    chosen: tuple[tuple[str, str], ...] = ()  # (option name, clicked value)


def _sep(*parts: object) -> str:
    return " [SEP] ".join(str(p) for p in parts)


SEARCHES = ("webshop", "all_bullets")
# Settings that differ between the generated catalog and real data: real data defaults to SDAR's WebShop setup.
GENERATED_DEFAULTS = {"option_match": "exact", "search": "all_bullets"}
REAL_DEFAULTS = {"goals": "synthetic", "catalog": "small", "option_match": "fuzzy", "search": "webshop"}


def webshop_document(product: Product) -> str:
    """WebShop's search document (`search_engine/convert_product_file_format.py`): title, description, the first
    bullet point and "name: v1, v2, and name: …" of the options, lower-cased."""
    options = ", and ".join(f"{name}: {', '.join(values)}" for name, values in product.options)
    return " ".join((product.title, product.description, *product.features[:1], options)).lower()


def search_index(products: tuple[Product, ...], search: str) -> BM25Index:
    """The product search: `search="webshop"`, WebShop's documents under Lucene's BM25 (Pyserini's defaults k1=0.9,
    b=0.4); `"all_bullets"`, title, description and every bullet point, k1=1.5, b=0.75."""
    if search == "webshop":
        return BM25Index([webshop_document(p) for p in products], k1=0.9, b=0.4)
    return BM25Index([p.search_text() for p in products])


@lru_cache(maxsize=4)
def _load(
    source: str, seed: int, num_goals: int, data_dir: str | None, goals: str, catalog: str, search: str
) -> tuple[Catalog, BM25Index]:
    """Catalog and search index, shared by all env instances of one configuration (the rollout makes many)."""
    if source == "generated":
        products = generate_catalog(seed, num_goals)
    elif source == "real":
        if data_dir is None:
            raise ValueError("WebShopEnv(source='real') needs data_dir: the data/ folder of a WebShop checkout.")
        products = load_webshop_catalog(data_dir, seed, goals, catalog)
    else:
        raise ValueError(f"WebShopEnv source must be 'generated' or 'real', got {source!r}.")
    return products, search_index(products.products, search)


class WebShopEnv:
    """WebShop as an `AgentEnv`. One episode at a time; `reset(task_id)` plays goal `task_id` of the catalog.

    The page machine is WebShop's text environment (`WebAgentTextEnv`, simple text mode): `search[...]` works from
    every page, results pages always offer "Next >", option clicks only re-render the item page, and an action that
    is not valid on the page does nothing (same page, no message). Switches for the reward:
    type_match ("title_nouns": WebShop's; "query_words") and option_match ("exact": normalised equality so that
    hard negatives such as "xx-large" for "x-large" stay wrong, the generated catalog's default; "fuzzy": WebShop's
    token-set > 85, real data's default). Real data defaults to SDAR's setup (`REAL_DEFAULTS`): synthetic goals,
    the 1,000-product catalogue, fuzzy options and WebShop's search documents with Lucene's BM25 (`search_index`).
    Every `None` below takes the default of the source.
    """

    name = "webshop"
    max_turns = 15
    invalid_format_penalty = 0.1
    action_tag = "action"

    def __init__(
        self,
        seed: int = 0,
        num_goals: int = BUILTIN_NUM_GOALS,
        source: str = "generated",
        data_dir: str | Path | None = None,
        results_per_page: int = 10,
        max_results: int = 50,
        type_match: str = "title_nouns",
        option_match: str | None = None,
        goals: str | None = None,
        task_order_seed: int | None = None,
        catalog: str | None = None,
        search: str | None = None,
    ) -> None:
        real_only = {"goals": goals, "catalog": catalog, "task_order_seed": task_order_seed}
        given = [name for name, value in real_only.items() if value is not None]
        if source != "real" and given:
            raise ValueError(f"{given[0]} applies to source='real' (a WebShop checkout's data) only.")
        defaults = REAL_DEFAULTS if source == "real" else GENERATED_DEFAULTS
        option_match = option_match or defaults["option_match"]
        self.search = search or defaults["search"]
        goals, catalog = goals or REAL_DEFAULTS["goals"], catalog or REAL_DEFAULTS["catalog"]
        for name, value, valid in (("type_match", type_match, TYPE_MATCHES), ("option_match", option_match,
                                   OPTION_MATCHES), ("goals", goals, GOAL_SOURCES), ("catalog", catalog, CATALOGS),
                                   ("search", self.search, SEARCHES)):  # fmt: skip
            if value not in valid:
                raise ValueError(f"{name} must be one of {valid}, got {value!r}")
        data = None if data_dir is None else str(data_dir)
        self.catalog, self._index = _load(source, seed, num_goals, data, goals, catalog, self.search)
        self._goals = order_items(self.catalog.goals, task_order_seed)
        self._by_asin = {p.asin: i for i, p in enumerate(self.catalog.products)}
        self.results_per_page = results_per_page
        self.max_results = max_results
        self.type_match, self.option_match = type_match, option_match
        self._goal: Goal | None = None
        self._state = PageState()
        self._searches = 0

    @property
    def num_tasks(self) -> int:
        return len(self._goals)

    def task(self, task_id: int) -> Task:
        goal = self._goal_of(task_id)
        info = {
            "asin": goal.asin,
            "price_upper": goal.price_upper,
            "attributes": list(goal.attributes),
            "options": list(goal.options),
        }
        return Task(self.name, task_id, goal.instruction, goal.category, info)

    def reset(self, task_id: int) -> Observation:
        self._goal = self._goal_of(task_id)
        self._state = PageState()
        self._searches = 0
        return self._observe()

    def step(self, action: str) -> StepResult:
        if self._goal is None:
            raise RuntimeError("WebShopEnv.step called before reset().")
        if self._state.kind == "done":
            return StepResult(Observation("The purchase is complete; the episode is over."), 0.0, True)
        parsed = parse_action(action)
        if parsed is None:
            return self._noop()
        verb, arg = parsed[0], parsed[1].lower()  # WebShop lower-cases the argument of every action
        if verb == "search":
            if not arg:
                return self._noop()
            self._searches += 1
            hits = tuple(self._index.top_k(arg, self.max_results))
            self._state = PageState(kind="results", query=arg, results=hits)
            return StepResult(self._observe(), 0.0, False)
        if arg == "search" or arg not in self._clickables():
            return self._noop()
        return self._click(arg)

    def _click(self, arg: str) -> StepResult:
        state = self._state
        if arg == "buy now":
            return self._buy()
        if arg == "back to search":
            self._state = PageState()
        elif arg == "next >":
            self._state = replace(state, page=state.page + 1)
        elif arg == "< prev":
            if state.kind == "results":
                self._state = replace(state, page=state.page - 1)
            elif state.kind == "item":
                self._state = replace(state, kind="results", item=-1, chosen=())
            else:
                self._state = replace(state, kind="item")
        elif state.kind == "results":
            self._state = replace(state, kind="item", item=self._by_asin[arg.upper()], chosen=())
        elif state.kind == "item" and arg in SUB_PAGES:
            self._state = replace(state, kind=arg)
        else:  # an option value on the item page replaces the earlier choice for that option
            name = next(n for n, values in self._product().options if arg in (v.lower() for v in values))
            value = next(v for v in dict(self._product().options)[name] if v.lower() == arg)
            chosen = tuple((n, v) for n, v in state.chosen if n != name) + ((name, value),)
            self._state = replace(state, chosen=chosen)
        return StepResult(self._observe(), 0.0, False)

    def _buy(self) -> StepResult:
        product = self._product()
        chosen = [v for _, v in self._state.chosen]
        result = purchase_score(
            self._goal, product, chosen, type_match=self.type_match, option_match=self.option_match
        )
        self._state = replace(self._state, kind="done")
        won = result.total == 1.0
        text = f"Thank you for shopping with us! [SEP] Your score (min 0.0, max 1.0) [SEP] {result.total:.2f}"
        info = {"asin": product.asin, "score_breakdown": asdict(result)}
        return StepResult(Observation(text), WIN_REWARD if won else 0.0, True, won, result.total, info)

    def _noop(self) -> StepResult:
        """WebShop's answer to an action the page does not offer: nothing happens, the same page again."""
        return StepResult(self._observe(), 0.0, False)

    # --- rendering ---------------------------------------------------------------------------------------------

    def _goal_of(self, task_id: int) -> Goal:
        if not 0 <= task_id < len(self._goals):
            raise ValueError(f"WebShop task_id must be in [0, {len(self._goals)}), got {task_id}.")
        return self._goals[task_id]

    def _product(self) -> Product:
        return self.catalog.products[self._state.item]

    def _page_results(self) -> tuple[int, ...]:
        start = (self._state.page - 1) * self.results_per_page
        return self._state.results[start : start + self.results_per_page]

    def _clickables(self) -> list[str]:
        """The page's clickable texts in WebShop's order: buttons and product links, then option values."""
        state = self._state
        if state.kind == "search":
            return ["search"]
        buttons = ["back to search"]
        if state.kind == "results":
            buttons += ["< prev"] if state.page > 1 else []
            buttons += ["next >"] + [self.catalog.products[i].asin.lower() for i in self._page_results()]
        elif state.kind == "item":
            buttons += ["< prev", *SUB_PAGES, "buy now"]
            buttons += [v.lower() for _, values in self._product().options for v in values]
        else:
            buttons.append("< prev")
        return list(dict.fromkeys(buttons))  # one entry per text, as in WebShop's text -> element map

    def _page_text(self) -> str:
        state, head = self._state, _sep("Instruction:", self._goal.instruction)
        if state.kind == "search":
            return _sep("WebShop", head, "Search")
        if state.kind == "results":
            parts: list[object] = [head, "Back to Search", f"Page {state.page} (Total results: {len(state.results)})"]
            parts += ["< Prev"] if state.page > 1 else []
            parts.append("Next >")
            for i in self._page_results():
                product = self.catalog.products[i]
                parts += [product.asin, product.title, product.price_tag]
            return _sep(*parts)
        product = self._product()
        if state.kind in SUB_PAGES:
            body = {
                "description": [product.description],
                "features": list(product.features),
                "reviews": list(product.reviews),
            }[state.kind]
            return _sep(head, "Back to Search", "< Prev", *body)
        parts = [head, "Back to Search", "< Prev"]
        for name, values in product.options:
            parts += [name, *values]
        parts += [product.title, f"Price: {product.price_tag}", "Rating: N.A."]
        return _sep(*parts, "Description", "Features", "Reviews", "Buy Now")

    def _observe(self) -> Observation:
        search = ("search[<your query>]",) if self._state.kind == "search" else ()
        return Observation(self._page_text(), search + tuple(f"click[{b}]" for b in self._clickables()))

    # --- agent-facing text ---------------------------------------------------------------------------------------

    def prompt(self, task: Task, first: Observation) -> str:
        return (
            "You are an online shopping agent. Find and buy the product that satisfies this instruction:\n"
            f"{task.instruction}\n\n"
            f"The web page you see now:\n{first.text}\n\n"
            f"{_action_help(first)}"
        )

    def feedback(self, result: StepResult) -> str:
        if result.done:
            return f"{result.observation.text}\nThe episode has ended."
        return f"The web page after your action:\n{result.observation.text}\n\n{_action_help(result.observation)}"

    def expert_action(self) -> str:
        """Search the goal's key words (then the target's title if needed), open the target, pick options, buy."""
        state, goal = self._state, self._goal
        target = self._by_asin[goal.asin]
        title_search = f"search[{self.catalog.products[target].title}]"
        if state.kind == "search":
            return f"search[{goal.keywords}]" if self._searches == 0 else title_search
        if state.kind == "results":
            if target in self._page_results():
                return f"click[{goal.asin.lower()}]"
            later = target in state.results[state.page * self.results_per_page :]
            return "click[next >]" if later else title_search
        if state.kind != "item" or state.item != target:
            return "click[< prev]"
        chosen = {normalize_option(v) for _, v in state.chosen}
        for _, values in self._product().options:
            for value in values:
                norm = normalize_option(value)
                if norm not in chosen and norm in {normalize_option(g) for g in goal.options}:
                    return f"click[{value.lower()}]"
        return "click[buy now]"

    def close(self) -> None:
        self._goal = None


def _action_help(observation: Observation) -> str:
    actions = "\n".join(observation.admissible_actions) or "(none)"
    return (
        f"Available actions:\n{actions}\n\n"
        "First reason about the instruction and the page inside <think> </think>. Then give exactly one action "
        "inside <action> </action>, for example <action>search[ceramic coffee mug]</action> or "
        "<action>click[buy now]</action>. Clicks must name an element from the list above."
    )
