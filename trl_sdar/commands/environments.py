"""The environment, skills and agent loop that a recipe or a command line names (train, eval, sft share these)."""

from __future__ import annotations

from trl_sdar.commands.recipe.args import SDARScriptArguments


def env_kwargs(
    env_name: str,
    *,
    source: str = "builtin",
    data_dir: str | None = None,
    difficulty: str = "default",
    retriever_url: str | None = None,
    max_task_id: int = 0,
    questions_path: str | None = None,
) -> dict:
    """Constructor arguments of an environment from recipe / CLI values (`max_task_id`: highest id to be used)."""
    real = source == "real"
    if env_name == "alfworld":
        from trl_sdar.envs.alfworld_games import DIFFICULTY_LEVELS

        kwargs = {"source": source, "difficulty": DIFFICULTY_LEVELS[difficulty]}
        return {**kwargs, "data_dir": data_dir} if real else kwargs
    if env_name == "webshop":
        from trl_sdar.envs.webshop_catalog import BUILTIN_NUM_GOALS

        return (
            {"source": "real", "data_dir": data_dir}
            if real
            else {"num_goals": max(BUILTIN_NUM_GOALS, max_task_id + 1)}
        )
    kwargs = {"retriever_url": retriever_url, "questions_path": questions_path}
    return {**kwargs, "corpus_path": data_dir} if real else kwargs


def build_skill_selector(script: SDARScriptArguments):
    """The privileged-context function Task → skills text, or None (`skills: none`)."""
    if script.skills == "none":
        return None
    from trl_sdar.skills import SkillSelector, load_builtin_skills, load_skill_library

    library = load_skill_library(script.skills_path) if script.skills_path else load_builtin_skills(script.env_name)
    return SkillSelector(library, mode=script.skills, top_k=script.skills_top_k)


def build_env_rollout(script: SDARScriptArguments):
    """EnvRollout + its training dataset (tasks `train_task_start …`)."""
    from trl_sdar.agent.rollout import EnvRollout, RolloutSettings
    from trl_sdar.envs import make_env

    kwargs = env_kwargs(
        script.env_name,
        source=script.env_source,
        data_dir=script.env_data_dir,
        difficulty=script.env_difficulty,
        retriever_url=script.retriever_url,
        questions_path=script.questions_path,
        max_task_id=script.train_task_start + script.num_train_tasks - 1,
    )
    settings = RolloutSettings(
        max_turns=script.max_turns,
        max_turn_tokens=script.max_turn_tokens,
        step_timeout_s=script.env_step_timeout,
        num_workers=script.env_workers,
        rollout_unit=script.rollout_unit,
        history_window=script.history_window,
        parser=script.parser,
        advantage_over=script.advantage_over,
    )
    rollout = EnvRollout(
        lambda: make_env(script.env_name, subprocess=script.subprocess_envs, **kwargs),
        skills=build_skill_selector(script),
        settings=settings,
        student_sees_skills=script.student_sees_skills,
    )
    task_ids = range(script.train_task_start, script.train_task_start + script.num_train_tasks)
    dataset = rollout.dataset(task_ids, script.task_types)
    if script.task_types:
        print(
            f"[train] task_types={script.task_types}: {len(dataset)} of the {len(task_ids)} training tasks "
            f"(ids {task_ids.start}..{task_ids.stop - 1})",
            flush=True,
        )
    return rollout, dataset
