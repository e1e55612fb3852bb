"""The SDAR reference code's skill selection, rule for rule, as switches beside this project's rules.

`skills_rules` picks which rules choose the task skill the teacher sees next to the general skills:

* ``"project"`` (default): `selection.rule_based_skills` on the task: ALFWorld's type from the game path, WebShop's
  categories from the instruction's keywords (at word starts; ``other`` when none), Search-QA "which … or …"
  questions -> ``compare``, else the ``data_source``.
* ``"reference"``: the reference after its fix of 2026-06-22 (its issue #35), which reads the *whole step prompt*:
  * ALFWorld: the first task type of ``task_to_skill`` (mapping order) that is a substring of the game path;
  * WebShop: every category with a keyword that is a substring of the lower-cased prompt (page and history
    included), re-selected at every step; none -> the general skills alone (the empty ``other`` list never fires);
  * Search-QA: ``data_source`` first (popqa, nq, triviaqa, hotpotqa); otherwise ``compare`` when the prompt contains
    "which" and "or" but no "for"; otherwise 2wikimultihopqa, musique, bamboogle -> multi-hop; else general only.
    Every step prompt contains "for", so ``compare`` is never chosen.
* ``"reference_release"``: the reference as the paper ran it (commit 92f1b0f, 2026-05-15): its ALFWorld and WebShop
  rollouts passed no game file and tagged every row ``data_source="text"``, so those teachers saw the general
  skills only; Search-QA as ``"reference"``.

The reference matches against the decoded chat prompt; here the user message of the step is used (the chat
template's system text holds none of the published keywords, nor "which" or "for").
"""

from __future__ import annotations

from trl_sdar.envs.base import Task
from trl_sdar.skills.library import SkillLibrary, canonical_env_name

SKILLS_RULES = ("project", "reference", "reference_release")
# Search-QA data sources the reference checks before its comparison rule, and those it checks after it.
_SOURCES_FIRST = {"popqa": "entity_attribute_lookup", "nq": "direct_retrieval", "triviaqa": "direct_retrieval",
                  "hotpotqa": "multi_hop_reasoning"}  # fmt: skip
_SOURCES_AFTER = {"2wikimultihopqa": "multi_hop_reasoning", "musique": "multi_hop_reasoning",
                  "bamboogle": "multi_hop_reasoning"}  # fmt: skip


def check_skills_rules(rules: str, field: str = "skills_rules") -> None:
    if rules not in SKILLS_RULES:
        raise ValueError(f"{field}={rules!r} is not valid; expected one of {list(SKILLS_RULES)}.")


def reads_prompt(rules: str, env_name: str) -> bool:
    """Whether these rules depend on the step prompt (then the teacher's skills are chosen turn by turn)."""
    return rules != "project" and canonical_env_name(env_name) in ("webshop", "search_qa")


def _compare_rule(text: str) -> bool:
    lower = text.lower()
    return "which" in lower and "or" in lower and "for" not in lower


def _keyword_rule(text: str, library: SkillLibrary) -> list[str]:
    lower = text.lower()
    return [t for t, words in library.task_keywords.items() if words and any(w in lower for w in words)]


def _mapped(library: SkillLibrary, task_types: list[str]) -> tuple[str, ...]:
    names = (library.task_to_skill[t] for t in task_types if t in library.task_to_skill)
    return tuple(dict.fromkeys(names))


def reference_skills(task: Task, library: SkillLibrary, prompt_text: str, rules: str) -> tuple[str, ...]:
    """The task skills (general excluded) the reference's rules pick for this task at a step with this prompt."""
    check_skills_rules(rules)
    env_name = canonical_env_name(task.env_name)
    if env_name in ("alfworld", "webshop") and rules == "reference_release":
        return ()
    gamefile = str(task.info.get("gamefile", ""))
    if env_name == "alfworld" and gamefile:
        return _mapped(library, [next((t for t in library.task_to_skill if t in gamefile), "")])
    if env_name in ("alfworld", "webshop"):  # data_source "text": the comparison check, then the keywords
        return () if _compare_rule(prompt_text) else _mapped(library, _keyword_rule(prompt_text, library))
    source = str(task.info.get("data_source", "")).lower()
    if source in _SOURCES_FIRST:
        return _mapped(library, [_SOURCES_FIRST[source]])
    if _compare_rule(prompt_text):
        return _mapped(library, ["compare"])
    return _mapped(library, [_SOURCES_AFTER[source]] if source in _SOURCES_AFTER else [])
