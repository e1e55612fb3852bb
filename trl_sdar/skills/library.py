"""Skill libraries: load a skill folder in the published SDAR format, validate it, and find the built-in banks.

A skill folder (the format the SDAR paper published, and the format of this package's own banks) holds:

* ``skill_mapping.json`` with
  * ``skill_files``: skill name -> markdown file name (relative to the folder). The name ``general_skills`` is the
    general text every task gets; every other entry is a task/category skill.
  * ``task_to_skill``: task type (or category) -> skill name (a key of ``skill_files``).
  * ``task_keywords`` (optional): task type -> keywords that, found in an instruction, select that task type.
* ``general_skills.md`` and one markdown file per skill.

Unknown top-level keys of ``skill_mapping.json`` are ignored, so folders that carry extra metadata still load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAPPING_FILE = "skill_mapping.json"
GENERAL_SKILL = "general_skills"
BANKS_DIR = Path(__file__).resolve().parent / "banks"

# The one place that maps an environment name (or the published folder's name) to this package's skill bank.
# "search" is the published SDAR folder name of the Search-QA benchmark; "search_qa" is our environment name.
_ENV_ALIASES = {"alfworld": "alfworld", "webshop": "webshop", "search_qa": "search_qa", "search": "search_qa"}


class SkillLibraryError(ValueError):
    """A skill folder is malformed. The message names the offending file and key."""


def canonical_env_name(env_name: str) -> str:
    """Map an environment or published-folder name to our environment name (``"search"`` -> ``"search_qa"``)."""
    try:
        return _ENV_ALIASES[env_name]
    except KeyError:
        raise ValueError(f"unknown environment {env_name!r}; expected one of {sorted(_ENV_ALIASES)}") from None


@dataclass(frozen=True)
class SkillLibrary:
    """The content of one skill folder. Treat the dictionaries as read-only.

    Attributes:
        name: folder name (e.g. ``"alfworld"``).
        general: text of ``general_skills`` (empty when the folder has none), stripped.
        files: skill name -> markdown text (stripped), in ``skill_files`` order; ``general_skills`` excluded.
        task_to_skill: task type / category -> skill name (a key of ``files``).
        task_keywords: task type -> keywords (lower-cased), in file order; empty when the folder has none.
        root: the folder it was loaded from (``""`` for libraries built in code).
    """

    name: str
    general: str
    files: dict[str, str]
    task_to_skill: dict[str, str]
    task_keywords: dict[str, tuple[str, ...]] = field(default_factory=dict)
    root: str = ""

    @property
    def skill_names(self) -> tuple[str, ...]:
        """Task/category skill names (``general_skills`` excluded), in file order."""
        return tuple(self.files)

    def section(self, skill: str) -> str:
        """The markdown section of one skill, starting with a heading that names it."""
        if skill == GENERAL_SKILL:
            return as_section(GENERAL_SKILL, self.general)
        if skill not in self.files:
            raise KeyError(f"skill {skill!r} is not in library {self.name!r} (known: {list(self.files)})")
        return as_section(skill, self.files[skill])


def as_section(skill: str, text: str) -> str:
    """Ensure a skill text starts with a markdown heading; files that already start with one are kept verbatim."""
    text = text.strip()
    if not text or text.startswith("#"):
        return text
    return f"## {skill}\n\n{text}"


def load_skill_library(path: str | Path) -> SkillLibrary:
    """Load and validate a skill folder (published SDAR format). Raises `FileNotFoundError` / `SkillLibraryError`."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"skill folder {root} does not exist or is not a directory")
    mapping_path = root / MAPPING_FILE
    if not mapping_path.is_file():
        raise FileNotFoundError(
            f"{mapping_path}: missing {MAPPING_FILE}; a skill folder needs one (see trl_sdar.skills)"
        )
    try:
        mapping = json.loads(mapping_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise SkillLibraryError(f"{mapping_path}: invalid JSON ({err})") from err
    if not isinstance(mapping, dict):
        raise SkillLibraryError(f"{mapping_path}: top level must be a JSON object, got {type(mapping).__name__}")

    skill_files = _str_dict(mapping, "skill_files", mapping_path, required=True)
    texts = {name: _read_skill_file(root, name, file_name, mapping_path) for name, file_name in skill_files.items()}
    task_to_skill = _str_dict(mapping, "task_to_skill", mapping_path, required=False)
    for task, skill in task_to_skill.items():
        if skill not in texts or skill == GENERAL_SKILL:
            raise SkillLibraryError(
                f"{mapping_path}: task_to_skill[{task!r}] names skill {skill!r}, which is not a task skill in "
                f"skill_files (known: {[n for n in texts if n != GENERAL_SKILL]})"
            )
    task_keywords = _keywords(mapping, mapping_path, task_to_skill)
    general = texts.pop(GENERAL_SKILL, "")
    return SkillLibrary(
        name=root.resolve().name,
        general=general,
        files=texts,
        task_to_skill=task_to_skill,
        task_keywords=task_keywords,
        root=str(root),
    )


def builtin_bank_path(env_name: str) -> Path:
    """Folder of this package's own skill bank for an environment (``"search"`` and ``"search_qa"`` both work)."""
    return BANKS_DIR / canonical_env_name(env_name)


def load_builtin_skills(env_name: str) -> SkillLibrary:
    """This package's own skill bank for a built-in environment: ``alfworld``, ``webshop`` or ``search_qa``."""
    return load_skill_library(builtin_bank_path(env_name))


def _str_dict(mapping: dict[str, Any], key: str, mapping_path: Path, *, required: bool) -> dict[str, str]:
    if key not in mapping:
        if required:
            raise SkillLibraryError(f"{mapping_path}: missing required key {key!r}")
        return {}
    value = mapping[key]
    if not isinstance(value, dict) or (required and not value):
        raise SkillLibraryError(f"{mapping_path}: {key!r} must be a non-empty object of name -> string")
    for name, item in value.items():
        if not isinstance(item, str) or not item:
            raise SkillLibraryError(f"{mapping_path}: {key}[{name!r}] must be a non-empty string, got {item!r}")
    return dict(value)


def _read_skill_file(root: Path, skill: str, file_name: str, mapping_path: Path) -> str:
    file_path = (root / file_name).resolve()
    if not file_path.is_relative_to(root.resolve()):
        raise SkillLibraryError(f"{mapping_path}: skill_files[{skill!r}] = {file_name!r} points outside the folder")
    if not file_path.is_file():
        raise SkillLibraryError(f"{mapping_path}: skill_files[{skill!r}] names {file_path}, which does not exist")
    text = file_path.read_text(encoding="utf-8").strip()
    if not text:
        raise SkillLibraryError(f"{mapping_path}: skill_files[{skill!r}] names {file_path}, which is empty")
    return text


def _keywords(
    mapping: dict[str, Any], mapping_path: Path, task_to_skill: dict[str, str]
) -> dict[str, tuple[str, ...]]:
    value = mapping.get("task_keywords", {})
    if not isinstance(value, dict):
        raise SkillLibraryError(f"{mapping_path}: 'task_keywords' must be an object of task type -> list of strings")
    keywords: dict[str, tuple[str, ...]] = {}
    for task, words in value.items():
        if task not in task_to_skill:
            raise SkillLibraryError(
                f"{mapping_path}: task_keywords[{task!r}] names a task type missing from task_to_skill "
                f"(known: {list(task_to_skill)})"
            )
        if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
            raise SkillLibraryError(f"{mapping_path}: task_keywords[{task!r}] must be a list of non-empty strings")
        keywords[task] = tuple(w.strip().lower() for w in words)
    return keywords
