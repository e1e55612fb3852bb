"""Skills: the privileged context the SDAR teacher sees (docs/method.md).

* `load_skill_library(path)` reads a skill folder in the published SDAR format (``skill_mapping.json`` +
  ``general_skills.md`` + one markdown file per skill); `load_builtin_skills(env_name)` returns this package's own
  bank for ``alfworld``, ``webshop`` or ``search_qa`` (``search``, the published folder name, also works).
* `select_skills(task, library, mode, top_k)` turns a `Task` into the skills text: the paper's rules (``"rules"``),
  every file (``"all"``), or top-k retrieval (``"bm25"``, ``"embedding"``). `SkillSelector` wraps a library and a
  mode and indexes once.

Students never see skills; the trainer adds its own header around the returned text.
"""

from trl_sdar.skills.library import (
    SkillLibrary,
    SkillLibraryError,
    builtin_bank_path,
    canonical_env_name,
    load_builtin_skills,
    load_skill_library,
)
from trl_sdar.skills.retrieval import BM25Retriever, EmbeddingRetriever, Retriever
from trl_sdar.skills.selection import SELECTION_MODES, SelectionMode, SkillSelector, rule_based_skills, select_skills

__all__ = [
    "SELECTION_MODES",
    "BM25Retriever",
    "EmbeddingRetriever",
    "Retriever",
    "SelectionMode",
    "SkillLibrary",
    "SkillLibraryError",
    "SkillSelector",
    "builtin_bank_path",
    "canonical_env_name",
    "load_builtin_skills",
    "load_skill_library",
    "rule_based_skills",
    "select_skills",
]
