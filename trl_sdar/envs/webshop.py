"""WebShop: buy the product an instruction describes, through WebShop's search → results → item → buy pages.

Pages render as WebShop's simple text mode (elements joined by " [SEP] ") and actions are WebShop's strings:
`search[query]` on the search page, `click[element]` elsewhere (a product id, an option value, "next >", "< prev",
"back to search", "description", "features", "reviews", "buy now"). The purchase score follows WebShop's rule:
(matched attributes + matched options + price ok) / (attributes + options + 1) × type factor; the environment pays
10.0 only for a perfect purchase (score 1.0), as in SDAR's runs. Products come from the generated catalog
(`webshop_catalog.generate_catalog`) or from a WebShop checkout's data (`source="real"`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path

from rapidfuzz import fuzz

from trl_sdar.envs.base import Observation, StepResult, Task
from trl_sdar.envs.bm25 import BM25Index
from trl_sdar.envs.webshop_catalog import Catalog, Goal, Product, generate_catalog, load_webshop_catalog

WIN_REWARD = 10.0
SUB_PAGES = ("description", "features", "reviews")

# --- reward (pure) -----------------------------------------------------------------------------------------------


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


def title_score(type_words: str, title: str) -> float:
    """Fraction of the goal's product-type words found in the purchased title (fuzzy, so "shirts" counts)."""
    wanted = type_words.lower().split()
    if not wanted:
        return 0.2  # WebShop's neutral value when the goal names no type
    have = re.findall(r"[a-z0-9]+", title.lower())
    return sum(any(fuzz.ratio(w, h) >= 80 for h in have) for w in wanted) / len(wanted)


def type_factor(goal: Goal, product: Product) -> float:
    """WebShop's r_type: 1 if the query or ≥2 category levels match or the title overlaps (>0.2), else 0.5; then
    0.1 below a title score of 0.1 and 0 with no overlap at all."""
    score = title_score(goal.query, product.title)
    same_query = bool(goal.query) and goal.query == product.query
    same_category = len(set(goal.category_path) & set(product.category_path)) >= 2
    factor = 1.0 if (same_query or same_category or score > 0.2) else 0.5
    if score < 0.1:
        factor = 0.1
    if score == 0.0:
        factor = 0.0
    return factor


@dataclass(frozen=True)
class PurchaseScore:
    type_factor: float
    attributes_matched: int
    options_matched: int
    price_ok: bool
    total: float


def purchase_score(goal: Goal, product: Product, chosen_options: Iterable[str]) -> PurchaseScore:
    """Score of buying `product` with the clicked option values `chosen_options` for `goal`."""
    n_attr = sum(attribute_matched(a, product) for a in goal.attributes)
    n_opt = option_matches(goal.options, chosen_options)
    price_ok = goal.price_upper <= 0 or product.price <= goal.price_upper
    r_type = type_factor(goal, product)
    total = (n_attr + n_opt + int(price_ok)) / (len(goal.attributes) + len(goal.options) + 1) * r_type
    return PurchaseScore(r_type, n_attr, n_opt, price_ok, total)


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


@lru_cache(maxsize=4)
def _load(source: str, seed: int, num_goals: int, data_dir: str | None) -> tuple[Catalog, BM25Index]:
    """Catalog and search index, shared by all env instances of one configuration (the rollout makes many)."""
    if source == "generated":
        catalog = generate_catalog(seed, num_goals)
    elif source == "real":
        if data_dir is None:
            raise ValueError("WebShopEnv(source='real') needs data_dir: the data/ folder of a WebShop checkout.")
        catalog = load_webshop_catalog(data_dir, seed)
    else:
        raise ValueError(f"WebShopEnv source must be 'generated' or 'real', got {source!r}.")
    return catalog, BM25Index([p.search_text() for p in catalog.products])


class WebShopEnv:
    """WebShop as an `AgentEnv`. One episode at a time; `reset(task_id)` plays goal `task_id` of the catalog."""

    name = "webshop"
    max_turns = 15
    invalid_format_penalty = 0.1
    action_tag = "action"

    def __init__(
        self,
        seed: int = 0,
        num_goals: int = 500,
        source: str = "generated",
        data_dir: str | Path | None = None,
        results_per_page: int = 10,
        max_results: int = 50,
    ) -> None:
        self.catalog, self._index = _load(source, seed, num_goals, None if data_dir is None else str(data_dir))
        self._by_asin = {p.asin: i for i, p in enumerate(self.catalog.products)}
        self.results_per_page = results_per_page
        self.max_results = max_results
        self._goal: Goal | None = None
        self._state = PageState()
        self._searches = 0

    @property
    def num_tasks(self) -> int:
        return len(self.catalog.goals)

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
            return self._noop("Invalid action: write search[your query] or click[an element on the page].")
        verb, arg = parsed
        if verb == "search":
            if self._state.kind != "search":
                return self._noop("Invalid action: searching is only possible on the search page.")
            if not arg:
                return self._noop("Invalid action: the search query is empty.")
            self._searches += 1
            hits = tuple(self._index.top_k(arg, self.max_results))
            self._state = PageState(kind="results", query=arg, results=hits)
            return StepResult(self._observe(), 0.0, False)
        if arg.lower() not in self._clickables():
            return self._noop(f"Invalid action: '{arg}' is not a clickable element on this page.")
        return self._click(arg.lower())

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
        elif arg in SUB_PAGES:
            self._state = replace(state, kind=arg)
        elif state.kind == "results":
            self._state = replace(state, kind="item", item=self._by_asin[arg.upper()], chosen=())
        else:  # an option value on the item page replaces the earlier choice for that option
            name = next(n for n, values in self._product().options if arg in (v.lower() for v in values))
            value = next(v for v in dict(self._product().options)[name] if v.lower() == arg)
            chosen = tuple((n, v) for n, v in state.chosen if n != name) + ((name, value),)
            self._state = replace(state, chosen=chosen)
        return StepResult(self._observe(), 0.0, False)

    def _buy(self) -> StepResult:
        product = self._product()
        result = purchase_score(self._goal, product, [v for _, v in self._state.chosen])
        self._state = replace(self._state, kind="done")
        won = result.total == 1.0
        text = f"Thank you for shopping with us! [SEP] Your score (min 0.0, max 1.0) [SEP] {result.total:.2f}"
        info = {"asin": product.asin, "score_breakdown": asdict(result)}
        return StepResult(Observation(text), WIN_REWARD if won else 0.0, True, won, result.total, info)

    def _noop(self, message: str) -> StepResult:
        page = self._observe()
        return StepResult(Observation(f"{message}\n{page.text}", page.admissible_actions), 0.0, False)

    # --- rendering ---------------------------------------------------------------------------------------------

    def _goal_of(self, task_id: int) -> Goal:
        if not 0 <= task_id < len(self.catalog.goals):
            raise ValueError(f"WebShop task_id must be in [0, {len(self.catalog.goals)}), got {task_id}.")
        return self.catalog.goals[task_id]

    def _product(self) -> Product:
        return self.catalog.products[self._state.item]

    def _page_results(self) -> tuple[int, ...]:
        start = (self._state.page - 1) * self.results_per_page
        return self._state.results[start : start + self.results_per_page]

    def _clickables(self) -> list[str]:
        state = self._state
        if state.kind == "search":
            return []
        buttons = ["back to search"]
        if state.kind == "results":
            buttons += ["< prev"] if state.page > 1 else []
            buttons += ["next >"] if state.page * self.results_per_page < len(state.results) else []
            buttons += [self.catalog.products[i].asin.lower() for i in self._page_results()]
        elif state.kind == "item":
            buttons.append("< prev")
            buttons += [v.lower() for _, values in self._product().options for v in values]
            buttons += [*SUB_PAGES, "buy now"]
        else:
            buttons.append("< prev")
        return buttons

    def _page_text(self) -> str:
        state, head = self._state, _sep("Instruction:", self._goal.instruction)
        if state.kind == "search":
            return _sep("WebShop", head, "Search")
        if state.kind == "results":
            parts: list[object] = [head, "Back to Search", f"Page {state.page} (Total results: {len(state.results)})"]
            parts += ["< Prev"] if state.page > 1 else []
            parts += ["Next >"] if state.page * self.results_per_page < len(state.results) else []
            for i in self._page_results():
                product = self.catalog.products[i]
                parts += [product.asin, product.title, f"${product.price:.2f}"]
            return _sep(*parts)
        product = self._product()
        if state.kind in SUB_PAGES:
            body = {
                "description": [product.description],
                "features": list(product.features),
                "reviews": list(product.reviews) or ["No reviews yet."],
            }[state.kind]
            return _sep(head, "Back to Search", "< Prev", *body)
        parts = [head, "Back to Search", "< Prev"]
        for name, values in product.options:
            parts += [name, *values]
        parts += [product.title, f"Price: ${product.price:.2f}", "Rating: N.A."]
        if state.chosen:
            parts.append("Selected: " + ", ".join(f"{n}: {v}" for n, v in state.chosen))
        return _sep(*parts, "Description", "Features", "Reviews", "Buy Now")

    def _observe(self) -> Observation:
        if self._state.kind == "search":
            actions: tuple[str, ...] = ("search[<your query>]",)
        else:
            actions = tuple(f"click[{b}]" for b in self._clickables())
        return Observation(self._page_text(), actions)

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
        if state.kind == "search":
            return f"search[{goal.keywords if self._searches == 0 else self.catalog.products[target].title}]"
        if state.kind == "results":
            if target in self._page_results():
                return f"click[{goal.asin.lower()}]"
            later = target in state.results[state.page * self.results_per_page :]
            return "click[next >]" if later else "click[back to search]"
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
