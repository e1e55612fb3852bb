"""Search-QA: answer a question by searching a document collection, scored by exact match.

Actions reach `step` as `search[query]` or `answer[text]` (the rollout converts `<search>…</search>` and
`<answer>…</answer>`). A search returns the top-k passages as "Doc 1(Title: …) text" lines; the rollout wraps that
observation in `<information>…</information>`, so `feedback` returns it unwrapped. An answer ends the episode with
reward = exact match (SQuAD normalisation) against any golden answer.

Retrievers: BM25 over the generated knowledge base (default), BM25 over a user's JSONL corpus ({"id", "contents"}
rows, contents = "title\\ntext"), or a user-run retrieval server (Search-R1's or SDAR's HTTP protocol, e.g. on
loopback). Questions: generated, or Search-R1's question files (`questions_path`, JSONL or parquet).
"""

from __future__ import annotations

import json
import re
import string
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

from trl_sdar.envs.base import Observation, StepResult, Task
from trl_sdar.envs.bm25 import BM25Index
from trl_sdar.envs.search_kb import MULTI_HOP_SOURCES, Question, generate_kb, make_question
from trl_sdar.envs.task_order import order_items

DEFAULT_RETRIEVER_URL = "http://127.0.0.1:8000/retrieve"

# --- rules (pure) ------------------------------------------------------------------------------------------------


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lowercase, drop punctuation and the articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, golden_answers: Iterable[str]) -> float:
    """1.0 if the normalised prediction equals any normalised golden answer, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in golden_answers))


def is_comparison(question: str) -> bool:
    """ "Which …, A or B?" questions: the rule SDAR uses to pick its "compare" skill."""
    return re.search(r"\bwhich\b.*\bor\b", question, flags=re.IGNORECASE) is not None


def parse_action(action: str) -> tuple[str, str] | None:
    """`search[query]` / `answer[text]` → (verb, argument); anything else → None."""
    match = re.fullmatch(r"\s*(search|answer)\[(.*)\]\s*", action, flags=re.IGNORECASE | re.DOTALL)
    if match is None:
        return None
    return match.group(1).lower(), match.group(2).strip()


def format_documents(contents: Sequence[str], doc_format: str = "search_r1") -> str:
    """Corpus rows ("title\\ntext") as the search tool shows them.

    "search_r1": "Doc 1(Title: title) text" lines (Search-R1's `_passages2string`, what its agents are trained on);
    "sdar": "Doc 1: title\\ntext" (the SDAR reference tool's: "Doc i: " and the stripped row);
    "sdar_json": what the SDAR tool hands the agent: those lines, each ending in a newline, wrapped as the JSON text
    `{"result": "Doc 1: …\\n…"}` (newlines escaped).
    """
    if doc_format == "sdar_json":
        return json.dumps({"result": "".join(f"Doc {i}: {row.strip()}\n" for i, row in enumerate(contents, 1))})
    lines = []
    for i, row in enumerate(contents, start=1):
        if doc_format == "sdar":
            lines.append(f"Doc {i}: {row.strip()}")
            continue
        title, _, text = row.partition("\n")
        lines.append(f"Doc {i}(Title: {title.strip()}) {text.strip()}")
    return "\n".join(lines)


# --- retrievers --------------------------------------------------------------------------------------------------


def load_jsonl_corpus(path: str | Path) -> list[str]:
    """The "contents" of every row of a JSONL corpus ({"id": …, "contents": "title\\ntext"} per line)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"Search corpus not found: {file} (expected JSONL rows with 'id' and 'contents').")
    rows = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
    return [str(row["contents"]) for row in rows]


class LocalRetriever:
    """BM25 top-k over an in-memory list of corpus rows."""

    def __init__(self, contents: Sequence[str]) -> None:
        self.contents = list(contents)
        self._index = BM25Index(self.contents)

    def search(self, query: str, k: int) -> list[str]:
        return [self.contents[i] for i in self._index.top_k(query, k)]


PROTOCOLS = ("both", "search_r1", "sdar")
DOC_FORMATS = ("search_r1", "sdar", "sdar_json")


class HttpRetriever:
    """Client of a retrieval server: Search-R1's or the SDAR reference's (`examples/search/retriever`).

    Search-R1's server takes {"queries": [q], "topk": k, "return_scores": true}; SDAR's takes {"query": q, "topk":
    k, "return_scores": true}. Both answer {"result": [[{"document": {"contents": ...}, "score": ...}, ...]]} (bare
    documents without scores). protocol="both" (default) sends both fields in one request; each server's request
    model ignores the field it does not know. A server failure raises: silently empty searches would corrupt
    training rewards.
    """

    def __init__(self, url: str = DEFAULT_RETRIEVER_URL, timeout: float = 30.0, protocol: str = "both") -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"retriever protocol must be one of {PROTOCOLS}, got {protocol!r}")
        self.url, self.timeout, self.protocol = url, timeout, protocol

    def request_body(self, query: str, k: int) -> dict:
        body: dict = {"topk": k, "return_scores": True}
        if self.protocol in ("both", "search_r1"):
            body["queries"] = [query]
        if self.protocol in ("both", "sdar"):
            body["query"] = query
        return body

    def search(self, query: str, k: int) -> list[str]:
        body = json.dumps(self.request_body(query, k)).encode()
        request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = json.loads(response.read().decode())
            rows = payload["result"][0]
            return [str((row.get("document") or row)["contents"]) for row in rows][:k]
        except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError, TypeError) as err:
            raise ConnectionError(f"Retrieval server at {self.url} failed: {err}") from err


# --- questions ---------------------------------------------------------------------------------------------------


def question_kind(question: str, data_source: str) -> str:
    if is_comparison(question):
        return "comparison"
    return "multi_hop" if data_source in MULTI_HOP_SOURCES else "single_hop"


def _question_text(row: dict) -> str:
    """The question of a row: its `question` field; else SDAR's `extra_info.question` / `env_kwargs.question`; else
    the last user message of `prompt` (Search-R1's "... Question: q", or SDAR's [system, user] chat)."""
    for holder in (row, row.get("extra_info") or {}, row.get("env_kwargs") or {}):
        if isinstance(holder, dict) and holder.get("question"):
            return str(holder["question"]).strip()
    users = [m for m in row.get("prompt") or () if isinstance(m, dict) and m.get("role") == "user"]
    content = str(users[-1]["content"]) if users else ""
    return content.rsplit("Question:", 1)[-1].strip()


def _golden_answers(row: dict) -> tuple[str, ...]:
    answers = row.get("golden_answers")
    if answers is None:  # Search-R1's parquet: reward_model.ground_truth.target
        answers = ((row.get("reward_model") or {}).get("ground_truth") or {}).get("target")
    if answers is None:
        raise ValueError(f"question row has no 'golden_answers' nor reward_model.ground_truth.target: {row}")
    return (str(answers),) if isinstance(answers, str) else tuple(str(a) for a in answers)


def _read_rows(file: Path) -> list[dict]:
    if file.suffix == ".parquet":
        import pyarrow.parquet as pq

        names = set(pq.read_schema(file).names)
        # only the columns a question is read from (the chat prompts are the slow part of a 170k-row file)
        wanted = {"question", "golden_answers", "data_source"}
        if "question" not in names:
            wanted |= {"extra_info", "env_kwargs", "prompt"}
        if "golden_answers" not in names:
            wanted |= {"reward_model"}
        return pq.read_table(file, columns=sorted(wanted & names)).to_pylist()
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]


def load_questions(path: str | Path) -> list[Question]:
    """Questions in Search-R1's formats: JSONL rows {"question", "golden_answers", "data_source"} (FlashRAG's
    files) or its processed parquet (question / prompt, golden_answers / reward_model.ground_truth.target); and SDAR's
    reprocessed parquet (prompt = [system, user], the question in extra_info / env_kwargs)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(
            f"Question file not found: {file} (expected Search-R1 questions: JSONL rows with 'question', "
            "'golden_answers' and 'data_source', or its .parquet files)."
        )
    questions = []
    for row in _read_rows(file):
        text, source = _question_text(row), str(row.get("data_source") or "nq")
        questions.append(Question(text, _golden_answers(row), question_kind(text, source), source, (text,)))
    if not questions:
        raise ValueError(f"Question file {file} holds no rows.")
    return questions


@lru_cache(maxsize=4)
def _local_retriever(seed: int, corpus_path: str | None) -> LocalRetriever:
    """Shared by env instances of one configuration: the rollout runs many episodes over the same corpus."""
    if corpus_path is None:
        return LocalRetriever([p.contents for p in generate_kb(seed).passages])
    return LocalRetriever(load_jsonl_corpus(corpus_path))


class SearchQAEnv:
    """Search-QA as an `AgentEnv`: generated questions over the generated knowledge base unless told otherwise."""

    name = "search_qa"
    max_turns = 4
    invalid_format_penalty = 0.01
    action_tag = "search_qa"

    def __init__(
        self,
        seed: int = 0,
        topk: int = 3,
        corpus_path: str | Path | None = None,
        retriever_url: str | None = None,
        questions_path: str | Path | None = None,
        retriever_protocol: str = "both",
        doc_format: str = "search_r1",
        task_order_seed: int | None = None,
    ) -> None:
        if doc_format not in DOC_FORMATS:
            raise ValueError(f"doc_format must be one of {DOC_FORMATS}, got {doc_format!r}")
        self.doc_format = doc_format
        if corpus_path is not None and retriever_url is not None:
            raise ValueError("Give SearchQAEnv either corpus_path (local BM25) or retriever_url (server), not both.")
        self.seed = seed
        self.topk = topk
        if retriever_url is not None:
            self.retriever: LocalRetriever | HttpRetriever = HttpRetriever(retriever_url, protocol=retriever_protocol)
        else:
            self.retriever = _local_retriever(seed, None if corpus_path is None else str(corpus_path))
        self._kb = generate_kb(seed) if questions_path is None else None
        if questions_path is None and task_order_seed is not None:
            raise ValueError("task_order_seed applies to a question file (questions_path) only.")
        self._questions = None if questions_path is None else order_items(load_questions(questions_path),
                                                                           task_order_seed)  # fmt: skip
        self._question: Question | None = None
        self._searches = 0
        self._done = False

    def question(self, task_id: int) -> Question:
        if self._questions is not None:
            if not 0 <= task_id < len(self._questions):
                raise ValueError(f"Search-QA task_id must be in [0, {len(self._questions)}), got {task_id}.")
            return self._questions[task_id]
        if task_id < 0:
            raise ValueError(f"Search-QA task_id must be non-negative, got {task_id}.")
        return make_question(self._kb, self.seed, task_id)

    @property
    def num_tasks(self) -> int | None:
        """Questions in the question file; None for the generated questions (any id >= 0 is a task)."""
        return None if self._questions is None else len(self._questions)

    def task(self, task_id: int) -> Task:
        """A question file's task type is its `data_source` (nq, hotpotqa, …: the reference reports each source);
        a generated question's is its kind (single_hop, multi_hop, comparison)."""
        q = self.question(task_id)
        info = {"data_source": q.data_source, "golden_answers": list(q.golden_answers), "kind": q.kind}
        return Task(self.name, task_id, q.question, q.kind if self._questions is None else q.data_source, info)

    def reset(self, task_id: int) -> Observation:
        self._question = self.question(task_id)
        self._searches = 0
        self._done = False
        return Observation(f"Question: {self._question.question}")

    def step(self, action: str) -> StepResult:
        if self._question is None:
            raise RuntimeError("SearchQAEnv.step called before reset().")
        if self._done:
            return StepResult(Observation("The question has been answered; the episode is over."), 0.0, True)
        parsed = parse_action(action)
        if parsed is None:
            return StepResult(
                Observation("Invalid action: search with search[query] or answer with answer[text]."), 0.0, False
            )
        verb, arg = parsed
        if verb == "search":
            if not arg:
                return StepResult(Observation("Invalid action: the search query is empty."), 0.0, False)
            self._searches += 1
            docs = self.retriever.search(arg, self.topk)
            return StepResult(
                Observation(format_documents(docs, self.doc_format) or "No documents found."), 0.0, False
            )
        self._done = True
        em = exact_match(arg, self._question.golden_answers)
        text = f"Your answer: {arg}. " + ("It is correct." if em else "It is not correct.")
        return StepResult(Observation(text), em, True, em == 1.0, em, {"answer": arg})

    def prompt(self, task: Task, first: Observation) -> str:
        return (
            "Answer the question below. You may look things up in a document collection as often as you need.\n"
            "Each time you receive new information, reason about it inside <think> </think> first. To look "
            "something up, write <search> your query </search>; the best matching documents will be shown "
            "to you inside <information> </information>. Once you know the answer, write only the answer inside "
            "<answer> </answer>, for example <answer> Lisbon </answer>, with no explanation.\n"
            f"{first.text}"
        )

    def feedback(self, result: StepResult) -> str:
        return result.observation.text

    def expert_action(self) -> str:
        """Search what each hop needs (for bridge questions: the bridge entity, then the answer), then answer."""
        if self._question is None:
            raise RuntimeError("SearchQAEnv.expert_action called before reset().")
        plan = self._question.expert_queries
        if self._searches < len(plan):
            return f"search[{plan[self._searches]}]"
        return f"answer[{self._question.golden_answers[0]}]"

    def close(self) -> None:
        self._question = None
