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
    task_order_seed: int | None = 0,
    options: dict | None = None,
) -> dict:
    """Constructor arguments of an environment from recipe / CLI values (`max_task_id`: highest id to be used).

    `task_order_seed` applies to real data (ALFWorld's games, WebShop's goals, a Search-QA question file): task id i
    names the i-th item of that seed's permutation of the whole split (None: file order; `envs.task_order`).
    `options` (a recipe's `env_options`, eval's `--env-options`) are checked against the constructor and come last.
    """
    kwargs = _named_kwargs(env_name, source, data_dir, difficulty, retriever_url, max_task_id, questions_path,
                           task_order_seed)  # fmt: skip
    if options:
        check_env_options(env_name, options)
    return {**kwargs, **(options or {})}


def _named_kwargs(env_name, source, data_dir, difficulty, retriever_url, max_task_id, questions_path, task_order_seed):
    real = source == "real"
    if env_name == "alfworld":
        from trl_sdar.envs.alfworld_games import DIFFICULTY_LEVELS

        kwargs = {"source": source, "difficulty": DIFFICULTY_LEVELS[difficulty]}
        return {**kwargs, "data_dir": data_dir, "task_order_seed": task_order_seed} if real else kwargs
    if env_name == "webshop":
        from trl_sdar.envs.webshop_catalog import BUILTIN_NUM_GOALS

        if real:
            return {"source": "real", "data_dir": data_dir, "task_order_seed": task_order_seed}
        return {"num_goals": max(BUILTIN_NUM_GOALS, max_task_id + 1)}
    if env_name == "search_qa":
        kwargs = {"retriever_url": retriever_url, "questions_path": questions_path}
        if questions_path is not None:
            kwargs["task_order_seed"] = task_order_seed
        return {**kwargs, "corpus_path": data_dir} if real else kwargs
    return {}  # a world with nothing to load (doors): its settings are all `options`


HISTORY_WINDOWS = {"alfworld": 2, "webshop": 2, "search_qa": 4}  # the paper's k past (observation, action) pairs


def default_history_window(env_name: str) -> int:
    """The paper's history window of a benchmark (2 for ALFWorld and WebShop, 4 for Search-QA); 2 for worlds the
    paper did not use (doors)."""
    return HISTORY_WINDOWS.get(env_name, 2)


def training_env_kwargs(script: SDARScriptArguments) -> dict:
    """The environment's constructor arguments for training on a recipe's tasks (`env_options` last)."""
    return env_kwargs(
        script.env_name,
        source=script.env_source,
        data_dir=script.env_data_dir,
        difficulty=script.env_difficulty,
        retriever_url=script.retriever_url,
        questions_path=script.questions_path,
        max_task_id=script.train_task_start + script.num_train_tasks - 1,
        task_order_seed=script.task_order_seed,
        options=script.env_options,
    )


def check_env_options(env_name: str, options: dict) -> None:
    """One line naming the `env_options` keys the environment's constructor does not take, and the ones it does."""
    import inspect
    from importlib import import_module

    from trl_sdar.envs import ENV_CLASSES

    module, cls = ENV_CLASSES[env_name]
    valid = [p for p in inspect.signature(getattr(import_module(module), cls)).parameters if p != "self"]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"env_options={options!r}: {unknown} is no argument of the {env_name} environment; "
                         f"valid: {valid}.")  # fmt: skip


def training_tasks_record(script: SDARScriptArguments) -> dict:
    """What names the training tasks, for the run's summary: the ids and, on real data, the permutation's seed."""
    record = {"env_name": script.env_name, "env_source": script.env_source,
              "task_ids": [script.train_task_start, script.train_task_start + script.num_train_tasks - 1]}  # fmt: skip
    if "task_order_seed" in training_env_kwargs(script):
        record["task_order_seed"] = script.task_order_seed
    return record


def build_skill_selector(script: SDARScriptArguments):
    """The privileged-context function Task → skills text, or None (`skills: none`)."""
    if script.skills == "none":
        return None
    from trl_sdar.skills import load_skill_library
    from trl_sdar.skills.task_context import skills_for

    library = load_skill_library(script.skills_path) if script.skills_path else None
    return skills_for(script.env_name, script.skills, library=library, top_k=script.skills_top_k,
                      rules=script.skills_rules)  # fmt: skip


def build_env_rollout(script: SDARScriptArguments):
    """EnvRollout + its training dataset (tasks `train_task_start …`)."""
    from trl_sdar.agent.rollout import EnvRollout, RolloutSettings
    from trl_sdar.envs import make_env

    kwargs = training_env_kwargs(script)
    window = script.history_window
    settings = RolloutSettings(
        max_turns=script.max_turns,
        max_turn_tokens=script.max_turn_tokens,
        step_timeout_s=script.env_step_timeout,
        num_workers=script.env_workers,
        rollout_unit=script.rollout_unit,
        history_window=default_history_window(script.env_name) if window is None else window,
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
    record = training_tasks_record(script)
    if "task_order_seed" in record:
        order = "file order" if script.task_order_seed is None else f"task_order_seed={script.task_order_seed}"
        print(f"[train] real {script.env_name} data: task ids {task_ids.start}..{task_ids.stop - 1} of the split "
              f"in {order}", flush=True)  # fmt: skip
    if script.task_types:
        print(
            f"[train] task_types={script.task_types}: {len(dataset)} of the {len(task_ids)} training tasks "
            f"(ids {task_ids.start}..{task_ids.stop - 1})",
            flush=True,
        )
    return rollout, dataset
