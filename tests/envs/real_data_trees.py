"""Data trees in the real benchmarks' formats and at their real scale, built by the tests (no download).

* ALFWorld: json_2.1.1/<split>/<task_type>-<Object>-None-<Receptacle>-<scene>/trial_T…/ with game.tw-pddl (grammar
  with the goal sentence, "solvable": true) and traj_data.json (task_type), with the real per-type game counts.
* Search-R1: train.parquet (every NQ row, then every HotpotQA row, as the released file) and test.parquet (7
  sources), in Search-R1's processed schema; and SDAR's reprocessed schema (prompt = [system, user]).
* WebShop: items_shuffle_1000.json / items_ins_v2_1000.json (the small catalogue SDAR uses), a larger
  items_shuffle.json / items_ins_v2.json, and items_human_ins.json, with goals grouped by product category.
"""

from __future__ import annotations

import json
from pathlib import Path

# Real ALFWorld game counts per task type and split (the solvable games ALFWorld's loader keeps).
ALFWORLD_COUNTS = {
    "train": {"look_at_obj_in_light": 308, "pick_and_place_simple": 790, "pick_clean_then_place_in_recep": 650,
              "pick_cool_then_place_in_recep": 533, "pick_heat_then_place_in_recep": 459,
              "pick_two_obj_and_place": 813},
    "valid_seen": {"look_at_obj_in_light": 13, "pick_and_place_simple": 35, "pick_clean_then_place_in_recep": 27,
                   "pick_cool_then_place_in_recep": 25, "pick_heat_then_place_in_recep": 16,
                   "pick_two_obj_and_place": 24},
    "valid_unseen": {"look_at_obj_in_light": 18, "pick_and_place_simple": 24, "pick_clean_then_place_in_recep": 31,
                     "pick_cool_then_place_in_recep": 21, "pick_heat_then_place_in_recep": 23,
                     "pick_two_obj_and_place": 17},
}  # fmt: skip
_GOALS = {
    "look_at_obj_in_light": "look at {o} under the desklamp.",
    "pick_and_place_simple": "put a {o} in {r}.",
    "pick_clean_then_place_in_recep": "put a clean {o} in {r}.",
    "pick_cool_then_place_in_recep": "put a cool {o} in {r}.",
    "pick_heat_then_place_in_recep": "put a hot {o} in {r}.",
    "pick_two_obj_and_place": "put two {o} in {r}.",
}
_OBJECTS = ("Mug", "Apple", "Book", "Pencil", "Watch", "Cloth", "Plate", "Egg")
_RECEPTACLES = ("CounterTop", "Shelf", "Desk", "Drawer", "Cabinet", "Fridge")


def write_alfworld_split(root: Path, split: str, counts: dict[str, int]) -> None:
    for task_type, count in counts.items():
        for i in range(count):
            obj, recep = _OBJECTS[i % len(_OBJECTS)], _RECEPTACLES[i % len(_RECEPTACLES)]
            folder = root / "json_2.1.1" / split / f"{task_type}-{obj}-None-{recep}-{1 + i % 30}"
            trial = folder / f"trial_T2019{i:06d}_{split}"
            trial.mkdir(parents=True)
            goal = _GOALS[task_type].format(o=obj.lower(), r=recep.lower())
            grammar = json.dumps({"intro": [{"rhs": f"Your task is to: {goal}"}]})
            (trial / "game.tw-pddl").write_text(json.dumps({"grammar": grammar, "solvable": True}))
            (trial / "traj_data.json").write_text(json.dumps({"task_type": task_type}))


# Search-R1's nq_hotpotqa_train: train = 79,168 NQ then 90,447 HotpotQA rows; test = its 7 evaluation sources.
SEARCH_R1_TRAIN = {"nq": 79_168, "hotpotqa": 90_447}
SEARCH_R1_TEST = {"nq": 3_610, "triviaqa": 11_313, "popqa": 14_267, "hotpotqa": 7_405, "2wikimultihopqa": 12_576,
                  "musique": 2_417, "bamboogle": 125}  # fmt: skip
SEARCH_R1_PREFIX = (
    "Answer the given question. You must conduct reasoning inside <think> and </think> first every time you get new "
    "information. ... Question: "
)
SDAR_SYSTEM = "You are a helpful and harmless assistant."


def _questions(counts: dict[str, int]) -> tuple[list[str], list[str], list[list[str]]]:
    sources, questions, answers = [], [], []
    for source, count in counts.items():
        sources += [source] * count
        questions += [f"{source} question {i}?" for i in range(count)]
        answers += [[f"{source} answer {i}"] for i in range(count)]
    return sources, questions, answers


def write_search_r1_parquet(path: Path, counts: dict[str, int], split: str) -> None:
    """Search-R1's processed schema: question, golden_answers, data_source, prompt = [user], reward_model."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sources, questions, answers = _questions(counts)
    table = pa.table({
        "id": [f"{split}_{i}" for i in range(len(questions))],
        "question": questions,
        "golden_answers": answers,
        "data_source": sources,
        "prompt": [[{"role": "user", "content": f"{SEARCH_R1_PREFIX}{q}\n"}] for q in questions],
        "ability": ["fact-reasoning"] * len(questions),
        "reward_model": [{"style": "rule", "ground_truth": {"target": a}} for a in answers],
        "extra_info": [{"split": split, "index": i} for i in range(len(questions))],
    })  # fmt: skip
    pq.write_table(table, path)


def write_sdar_parquet(path: Path, counts: dict[str, int], split: str) -> None:
    """SDAR's reprocessed schema (examples/data_preprocess): prompt = [system, user], the question also in
    extra_info and env_kwargs, no question column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sources, questions, answers = _questions(counts)
    truth = [{"target": a} for a in answers]
    table = pa.table({
        "data_source": sources,
        "prompt": [[{"role": "system", "content": SDAR_SYSTEM}, {"role": "user", "content": q}] for q in questions],
        "ability": ["fact-reasoning"] * len(questions),
        "reward_model": [{"style": "rule", "ground_truth": t} for t in truth],
        "extra_info": [{"index": i, "need_tools_kwargs": True, "question": q, "split": split}
                       for i, q in enumerate(questions)],
        "env_kwargs": [{"ground_truth": t, "question": q, "data_source": s}
                       for t, q, s in zip(truth, questions, sources)],
    })  # fmt: skip
    pq.write_table(table, path)


# WebShop: products grouped by category in file order; every product has synthetic and human instructions.
WEBSHOP_CATEGORIES = {
    "apparel": ("men's cotton shirt", "shirt"),
    "footwear": ("running shoe", "shoe"),
    "electronics": ("usb charger cable", "usb"),
    "home_decor": ("throw pillow cover", "pillow"),
    "beauty_health": ("argan oil shampoo", "shampoo"),
}


def _webshop_item(asin: str, category: str, i: int) -> dict:
    noun, _ = WEBSHOP_CATEGORIES[category]
    return {
        "asin": asin,
        "name": f"Brand{i} {noun.title()} Model {i}",
        "full_description": f"A {noun} made well, item {i}.",
        "small_description": [f"first bullet {noun} {i}", f"second bullet waterproof {i}", "third bullet"],
        "pricing": f"${10 + i % 50}.99",
        "product_category": f"Category › {category}",
        "query": noun,
        "category": category,
        "customization_options": {"Color": [{"value": "Black"}, {"value": "Navy Blue"}],
                                  "Size": [{"value": "Large"}, {"value": "X-Large"}]},
    }  # fmt: skip


def write_webshop_data(folder: Path, *, small: int = 1000, full: int = 1500) -> None:
    """items_shuffle_1000.json (the first `small` products) and items_shuffle.json (`full`), their attribute and
    synthetic-instruction files (4 option combinations: 4 synthetic goals per product), and two human goals per
    product, all in category-grouped file order (300 products per category)."""
    folder.mkdir(parents=True, exist_ok=True)
    categories = list(WEBSHOP_CATEGORIES)
    per = full // len(categories)
    items, attrs, human = [], {}, {}
    for c, category in enumerate(categories):
        noun, _ = WEBSHOP_CATEGORIES[category]
        for j in range(per):
            i = c * per + j
            asin = f"B0{i:08d}"
            items.append(_webshop_item(asin, category, i))
            attrs[asin] = {"attributes": ["waterproof"], "instruction": f"i want a waterproof {noun}",
                           "instruction_attributes": ["waterproof"]}  # fmt: skip
            human[asin] = [{"instruction": f"I need a waterproof {noun} number {i}{extra}.",
                            "instruction_attributes": ["waterproof"], "instruction_options": ["black", "large"]}
                           for extra in ("", ", please")]  # fmt: skip
    small_items = items[:small]
    small_asins = {item["asin"] for item in small_items}
    (folder / "items_shuffle_1000.json").write_text(json.dumps(small_items))
    (folder / "items_ins_v2_1000.json").write_text(json.dumps({a: v for a, v in attrs.items() if a in small_asins}))
    (folder / "items_shuffle.json").write_text(json.dumps(items))
    (folder / "items_ins_v2.json").write_text(json.dumps(attrs))
    (folder / "items_human_ins.json").write_text(json.dumps(human))
