"""Search-QA env: EM rules, knowledge base and questions, expert/random policies, retrievers (local and loopback)."""

import json
import random
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from trl_sdar.envs.base import AgentEnv
from trl_sdar.envs.search_kb import COMPARISON_SOURCES, MULTI_HOP_SOURCES, SINGLE_HOP_SOURCES, generate_kb
from trl_sdar.envs.search_qa import (
    HttpRetriever,
    SearchQAEnv,
    exact_match,
    format_documents,
    is_comparison,
    normalize_answer,
    parse_action,
)


@pytest.fixture(scope="module")
def env() -> SearchQAEnv:
    return SearchQAEnv(seed=0)


def test_normalize_answer_and_exact_match():
    assert normalize_answer("  The  Glass-Orchard! ") == "glassorchard"
    assert normalize_answer("An Apple, a day") == "apple day"
    assert exact_match("the Kelvarra.", ["Kelvarra"]) == 1.0
    assert exact_match("Kelvarra city", ["Kelvarra"]) == 0.0
    assert exact_match("1874", ["1873", "1874"]) == 1.0
    assert exact_match("", ["x"]) == 0.0


def test_parse_action_and_comparison_rule():
    assert parse_action("search[founder of X]") == ("search", "founder of X")
    assert parse_action("Answer[ Paris ]") == ("answer", "Paris")
    assert parse_action("<answer>Paris</answer>") is None
    assert is_comparison("Which city was founded earlier, Zanora or Briburg?")
    assert not is_comparison("Which river runs through Zanora?")


def test_format_documents():
    text = format_documents(["Zanora\nZanora is a city.", "Briburg\nA town."])
    assert text == "Doc 1(Title: Zanora) Zanora is a city.\nDoc 2(Title: Briburg) A town."


def test_kb_and_questions_are_deterministic_and_tagged(env):
    assert generate_kb(1) == generate_kb(1) and generate_kb(1) != generate_kb(2)
    assert SearchQAEnv(seed=0).task(17) == env.task(17)
    sources = {"single_hop": SINGLE_HOP_SOURCES, "multi_hop": MULTI_HOP_SOURCES, "comparison": COMPARISON_SOURCES}
    kinds = set()
    for task_id in range(200):
        task = env.task(task_id)
        kinds.add(task.task_type)
        assert task.info["data_source"] in sources[task.task_type]
        assert isinstance(task.info["golden_answers"], list) and task.info["golden_answers"]
        assert is_comparison(task.instruction) == (task.task_type == "comparison"), task.instruction
    assert kinds == set(sources)


def test_passages_are_unique_titles_and_fictional(env):
    titles = [p.title for p in generate_kb(0).passages]
    assert len(titles) == len(set(titles)) == 840  # 210 entities, each with 3 look-alike passages
    assert len(generate_kb(0, distractors=False).passages) == 210
    assert not {"Paris", "London", "Berlin"} & set(titles)


def test_expert_finds_evidence_and_answers(env):
    assert isinstance(env, AgentEnv)
    for task_id in range(20):
        question = env.question(task_id)
        env.reset(task_id)
        observations = []
        for _ in range(env.max_turns):
            result = env.step(env.expert_action())
            observations.append(result.observation.text)
            if result.done:
                break
        assert result.won and result.reward == 1.0 and result.score == 1.0
        assert len(observations) <= env.max_turns
        searched = "\n".join(observations[:-1])
        assert any(a in searched for a in question.golden_answers)  # the searches surfaced the answer
        if question.kind == "multi_hop":  # the first search surfaces the bridge entity the second one needs
            bridge = question.expert_queries[1].rsplit(" ", 1)[0]
            assert bridge in observations[0]


def test_search_returns_top3_docs(env):
    env.reset(0)
    result = env.step("search[company founded]")
    assert not result.done and result.reward == 0.0 and result.observation.admissible_actions == ()
    lines = result.observation.text.splitlines()
    assert len(lines) == 3 and [line[:12] for line in lines] == ["Doc 1(Title:", "Doc 2(Title:", "Doc 3(Title:"]
    assert env.feedback(result) == result.observation.text  # the rollout adds the <information> wrapper


def test_random_answers_mostly_fail(env):
    rng = random.Random(0)
    words = " ".join(p.text for p in generate_kb(0).passages).split()
    wins = 0
    for task_id in range(50):
        env.reset(task_id)
        wins += env.step(f"answer[{rng.choice(words)}]").won
    assert wins <= 3


@pytest.mark.parametrize("action", ["hello", "search[]", "<search>x</search>", "click[buy now]"])
def test_bad_actions_are_noops(env, action):
    env.reset(1)
    result = env.step(action)
    assert not result.done and result.reward == 0.0 and result.observation.text.startswith("Invalid action")
    assert env.step(env.expert_action()).observation.text.startswith("Doc 1")  # the episode goes on


def test_answer_ends_episode(env):
    env.reset(2)
    wrong = env.step("answer[certainly not this]")
    assert wrong.done and wrong.reward == 0.0 and not wrong.won
    after = env.step("answer[anything]")
    assert after.done and after.reward == 0.0


def test_local_jsonl_corpus_and_question_file(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    rows = [
        {"id": "0", "contents": "Velmora\nVelmora is a harbour town founded in 1312."},
        {"id": "1", "contents": "Ostrand\nOstrand is a mountain village."},
    ]
    corpus.write_text("\n".join(json.dumps(r) for r in rows))
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        json.dumps({"question": "When was Velmora founded?", "golden_answers": ["1312"], "data_source": "nq"}) + "\n"
    )
    env = SearchQAEnv(corpus_path=corpus, questions_path=questions)
    assert env.task(0).task_type == "nq" and env.task(0).info["golden_answers"] == ["1312"]  # a file: by source
    assert env.task(0).info["kind"] == "single_hop"
    env.reset(0)
    assert env.step("search[Velmora founded]").observation.text.startswith("Doc 1(Title: Velmora)")
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        SearchQAEnv(corpus_path=tmp_path / "missing.jsonl")


def _query(request: dict) -> str:
    """The query as each fake server reads it: Search-R1's {"queries": [...]} or SDAR's {"query": ...}."""
    if _RetrievalHandler.protocol == "sdar":
        return request["query"]
    return request["queries"][0]


class _RetrievalHandler(BaseHTTPRequestHandler):
    protocol = "search_r1"
    seen: list = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append(request)
        docs = [
            {
                "document": {"id": str(i), "contents": f"Title {i}\nText about {_query(request)}."},
                "score": 1.0 / (i + 1),
            }
            for i in range(request["topk"])
        ]
        body = json.dumps({"result": [docs]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep test output quiet
        pass


def test_http_retriever_on_loopback():
    server = HTTPServer(("127.0.0.1", 0), _RetrievalHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/retrieve"
        env = SearchQAEnv(retriever_url=url)
        env.reset(0)
        text = env.step("search[Zanora]").observation.text
        assert text.splitlines()[0] == "Doc 1(Title: Title 0) Text about Zanora."
        assert len(text.splitlines()) == 3
        # One request both servers accept: Search-R1 reads "queries", the SDAR reference server reads "query".
        assert _RetrievalHandler.seen[-1] == {
            "queries": ["Zanora"],
            "query": "Zanora",
            "topk": 3,
            "return_scores": True,
        }
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(ConnectionError, match="127.0.0.1"):
        HttpRetriever(url, timeout=2.0).search("x", 3)  # the server is gone


@pytest.mark.parametrize("protocol", ["search_r1", "sdar"])
def test_each_server_format_on_loopback(protocol, monkeypatch):
    monkeypatch.setattr(_RetrievalHandler, "protocol", protocol)
    server = HTTPServer(("127.0.0.1", 0), _RetrievalHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/retrieve"
        for sent in ("both", protocol):
            env = SearchQAEnv(retriever_url=url, retriever_protocol=sent, doc_format=protocol)
            env.reset(0)
            text = env.step("search[Zanora]").observation.text
            first = "Doc 1(Title: Title 0) Text about Zanora." if protocol == "search_r1" else "Doc 1: Title 0"
            assert text.splitlines()[0] == first
        assert set(_RetrievalHandler.seen[-1]) == {
            "topk",
            "return_scores",
            "queries" if protocol == "search_r1" else "query",
        }
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(ValueError, match="protocol"):
        HttpRetriever(url, protocol="grpc")


def test_distractors_make_top3_retrieval_non_trivial():
    from trl_sdar.envs.search_kb import make_question
    from trl_sdar.envs.search_qa import LocalRetriever

    kb, plain = generate_kb(0), generate_kb(0, distractors=False)
    gold = {p.title: p.contents for p in plain.passages}
    easy, hard = (
        LocalRetriever([p.contents for p in plain.passages]),
        LocalRetriever([p.contents for p in kb.passages]),
    )
    hits = {"easy": 0, "hard": 0, "hard_top3": 0, "n": 0}
    for i in range(60):
        q = make_question(kb, 0, i)
        for query in (x for x in q.expert_queries if x in gold):
            hits["n"] += 1
            hits["easy"] += easy.search(query, 1)[0] == gold[query]
            hits["hard"] += hard.search(query, 1)[0] == gold[query]
            hits["hard_top3"] += gold[query] in hard.search(query, 3)
    assert hits["easy"] == hits["n"] and hits["hard"] < hits["n"] // 4  # the name alone no longer finds the fact
    assert hits["hard_top3"] >= 0.9 * hits["n"]  # but the evidence is still within the top 3


FIXTURES = Path(__file__).parents[1] / "data" / "search_qa"


def test_search_r1_question_files_jsonl_and_parquet():
    rows = [json.loads(line) for line in (FIXTURES / "nq_train_sample.jsonl").read_text().splitlines()]
    for name in ("nq_train_sample.jsonl", "train_sample.parquet"):
        env = SearchQAEnv(questions_path=FIXTURES / name)
        questions = [env.question(i) for i in range(len(rows))]
        assert [q.question for q in questions] == [r["question"] for r in rows]
        assert [list(q.golden_answers) for q in questions] == [r["golden_answers"] for r in rows]
        assert {q.data_source for q in questions} == {"nq", "hotpotqa"}
        env.reset(0)
        assert env.step(f"answer[{rows[0]['golden_answers'][0]}]").won


def test_recipe_field_points_training_at_real_questions():
    from trl_sdar.commands.environments import env_kwargs

    path = str(FIXTURES / "nq_train_sample.jsonl")
    kwargs = env_kwargs("search_qa", questions_path=path)
    assert kwargs["questions_path"] == path and SearchQAEnv(**kwargs).question(0).data_source == "nq"
