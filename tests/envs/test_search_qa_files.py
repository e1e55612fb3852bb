"""Search-QA on the question files real runs use: Search-R1's parquet and SDAR's reprocessed parquet."""

from __future__ import annotations

from collections import Counter

from real_data_trees import SDAR_SYSTEM, SEARCH_R1_TEST, write_sdar_parquet

from trl_sdar.envs.search_qa import SearchQAEnv, load_questions


def test_sdar_parquet_questions_are_the_user_question_not_the_system_text(tmp_path):
    path = tmp_path / "train.parquet"
    write_sdar_parquet(path, {"nq": 3, "hotpotqa": 2}, "train")
    questions = load_questions(path)
    assert [q.question for q in questions] == [f"nq question {i}?" for i in range(3)] + [
        f"hotpotqa question {i}?" for i in range(2)
    ]
    assert SDAR_SYSTEM not in {q.question for q in questions}
    assert [q.data_source for q in questions] == ["nq"] * 3 + ["hotpotqa"] * 2
    env = SearchQAEnv(questions_path=path)
    assert env.reset(4).text == "Question: hotpotqa question 1?"
    assert env.step("answer[hotpotqa answer 1]").won


def test_search_r1_test_file_keeps_its_seven_sources(search_r1_dir):
    questions = load_questions(search_r1_dir / "test.parquet")
    assert Counter(q.data_source for q in questions) == SEARCH_R1_TEST
    assert questions[0].question == "nq question 0?" and questions[0].golden_answers == ("nq answer 0",)


def test_sdar_server_result_text_is_offered_json_wrapped():
    import json

    from trl_sdar.envs.search_qa import format_documents

    rows = ["Zanora\nA city.", "Velmar\nA river."]
    text = format_documents(rows, "sdar_json")
    assert text == '{"result": "Doc 1: Zanora\\nA city.\\nDoc 2: Velmar\\nA river.\\n"}'  # escaped newlines
    assert json.loads(text) == {"result": "Doc 1: Zanora\nA city.\nDoc 2: Velmar\nA river.\n"}
    env = SearchQAEnv(doc_format="sdar_json")
    env.reset(0)
    assert env.step("search[zanora]").observation.text.startswith('{"result": "Doc 1: ')


def test_webshop_history_keeps_the_formatted_page_not_the_raw_one():
    from trl_sdar.agent.episode import Episode
    from trl_sdar.agent.prompts import webshop_instruction, webshop_page
    from trl_sdar.envs.webshop import WebShopEnv

    env = WebShopEnv()
    task, first = env.task(0), env.reset(0)
    episode = Episode(task, env, [], observation=first)
    after = env.step(env.expert_action()).observation
    episode.remember("search[x]", first, after)
    remembered = episode.history[0][0]
    assert remembered == webshop_page(first.text, webshop_instruction(task)) == "'Search'"
    assert task.instruction not in episode.step_prompt_text(2).split("Your last", 1)[1]
