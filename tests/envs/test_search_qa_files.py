"""Search-QA on the question files real runs use: Search-R1's parquet and SDAR's reprocessed parquet."""

from __future__ import annotations

from collections import Counter

from conftest import SDAR_SYSTEM, SEARCH_R1_TEST, write_sdar_parquet

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
