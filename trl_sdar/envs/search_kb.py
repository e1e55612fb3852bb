"""A generated knowledge base of fictional entities and questions about it, deterministic by seed.

Every name, place and date is invented, so a model cannot answer from memory and has to search. Each entity has one
short Wikipedia-like passage (title + text). Questions come in three kinds, tagged with the `data_source` of the
public dataset they imitate (SDAR selects Search-QA skills by that tag): single-hop look-ups (nq, triviaqa, popqa),
two-hop bridge questions (hotpotqa, 2wikimultihopqa, musique, bamboogle) and "Which …, A or B?" comparisons
(hotpotqa, 2wikimultihopqa). Passages never state a bridge question's answer next to the bridge entity, so the
second hop needs its own search.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

_SYL_A = ("ar", "bel", "cor", "dav", "el", "fen", "gal", "hal", "is", "jor", "kel", "lor", "mar", "nor", "or", "per",
          "quin", "ros", "sel", "tam", "ul", "ver", "wen", "yor", "zan", "tol", "bri", "cas")  # fmt: skip
_SYL_B = ("a", "en", "ic", "ora", "us", "iel", "wyn", "eth", "ina", "ard", "o", "ette")
_SURNAME = ("vane", "holt", "mere", "stad", "wick", "brandt", "ridge", "berg", "lund", "thorne", "marin", "court")
_PLACE = ("haven", "mouth", "burg", "dale", "ford", "stead", "port", "grad", "ora", "ville", "mir", "kesh")
_LAND = ("ravia", "enia", "istan", "onia", "aria", "land", "ovia", "esia", "uria")
_FIRM_A = ("Bright", "Copper", "Silver", "North", "Iron", "Amber", "Cedar", "Harbor", "Stone", "Willow", "Falcon",
           "Marble", "Quartz", "Ember")  # fmt: skip
_FIRM_B = ("moor", "line", "fen", "gale", "crest", "field", "gate", "brook", "wood", "vale")
_INDUSTRY = {"Instruments": "scientific instrument", "Textiles": "textile", "Shipping": "shipping",
             "Foods": "food processing", "Mining": "mining", "Press": "publishing", "Motors": "automotive",
             "Labs": "software", "Airways": "aviation"}  # fmt: skip
_WORK_A = ("Glass", "Silent", "Hollow", "Crimson", "Distant", "Winter", "Paper", "Seventh", "Salt", "Lantern")
_WORK_B = ("Orchard", "Harbor", "Tide", "Garden", "Letter", "Bridge", "Kingdom", "Mirror", "Meridian", "Archive")
_JOBS = ("cartographer", "botanist", "architect", "violinist", "engineer", "poet", "astronomer", "sculptor",
         "economist", "physician", "chemist", "photographer")  # fmt: skip
_RIVERS = ("Auren", "Tessel", "Moravin", "Ilse", "Corra", "Vantra", "Sable", "Duneth")

SINGLE_HOP_SOURCES = ("nq", "triviaqa", "popqa")
MULTI_HOP_SOURCES = ("hotpotqa", "2wikimultihopqa", "musique", "bamboogle")
COMPARISON_SOURCES = ("hotpotqa", "2wikimultihopqa")


@dataclass(frozen=True)
class Passage:
    title: str
    text: str

    @property
    def contents(self) -> str:
        """The corpus row format of Search-R1-style indexes: title, newline, text."""
        return f"{self.title}\n{self.text}"


@dataclass(frozen=True)
class City:
    name: str
    country: str
    founded: int
    river: str


@dataclass(frozen=True)
class Person:
    name: str
    born: int
    birthplace: str
    job: str


@dataclass(frozen=True)
class Company:
    name: str
    industry: str
    founded: int
    founder: str
    headquarters: str


@dataclass(frozen=True)
class Work:
    title: str
    kind: str  # "novel" | "film"
    year: int
    creator: str


@dataclass(frozen=True)
class KnowledgeBase:
    countries: tuple[tuple[str, str], ...]  # (country, capital city)
    cities: tuple[City, ...]
    people: tuple[Person, ...]
    companies: tuple[Company, ...]
    works: tuple[Work, ...]
    passages: tuple[Passage, ...]


@dataclass(frozen=True)
class Question:
    question: str
    golden_answers: tuple[str, ...]
    kind: str  # "single_hop" | "multi_hop" | "comparison"
    data_source: str
    expert_queries: tuple[str, ...]  # searches that surface every passage the answer depends on


def _unique(rng: random.Random, make, taken: set[str]) -> str:
    while True:
        name = make(rng)
        if name not in taken:
            taken.add(name)
            return name


def _passages(kb: KnowledgeBase) -> tuple[Passage, ...]:
    verb = {"novel": "written", "film": "directed"}
    out = [
        Passage(c, f"{c} is a small country on the eastern coast of the Vethrian Sea. Its capital is {cap}.")
        for c, cap in kb.countries
    ]
    for c in kb.cities:
        out.append(
            Passage(
                c.name,
                f"{c.name} is a city in {c.country}. It lies on the {c.river} river and was founded in {c.founded}.",
            )
        )
    for p in kb.people:
        surname = p.name.split()[-1]
        text = f"{p.name} (born {p.born}) is a {p.job}. {surname} was born in {p.birthplace} and trained there."
        out.append(Passage(p.name, text))
    for c in kb.companies:
        text = f"{c.name} is a {c.industry} company founded in {c.founded} by {c.founder}."
        out.append(Passage(c.name, f"{text} Its head office is in {c.headquarters}."))
    out += [Passage(w.title, f"{w.title} is a {w.year} {w.kind} {verb[w.kind]} by {w.creator}.") for w in kb.works]
    return tuple(out)


def _distractors(kb: KnowledgeBase, rng: random.Random) -> tuple[Passage, ...]:
    """Passages that name an entity prominently but do not hold the facts questions ask about (and often state a
    different year or place), as Wikipedia has "X (disambiguation)", "X Prize" and "History of X" pages next to X."""
    cities = [c.name for c in kb.cities]
    people = [p.name for p in kb.people]
    out = []
    for country, _ in kb.countries:
        city = rng.choice(cities)
        out.append(Passage(f"{country} national rowing team", f"The {country} national rowing team trains in {city} "
                           f"and first raced abroad in {rng.randint(1900, 2000)}."))  # fmt: skip
    for c in kb.cities:
        year, other = rng.randint(1850, 2010), rng.choice(cities)
        out.append(Passage(f"History of {c.name}", f"The history of {c.name} is told in a museum in {other}. A "
                           f"railway reached {c.name} in {year}, and a bridge over the river followed."))  # fmt: skip
    for p in kb.people:
        year, other = rng.randint(1900, 2020), rng.choice(cities)
        out.append(Passage(f"{p.name} Prize", f"The {p.name} Prize is awarded every year in {other} to a young "
                           f"{p.job}. It was first given in {year}."))  # fmt: skip
    for c in kb.companies:
        year, other = rng.randint(1950, 2020), rng.choice(cities)
        out.append(Passage(f"{c.name} Tower", f"The {c.name} Tower is an office building in {other}, completed in "
                           f"{year}. It houses a branch of {c.name}, not its head office."))  # fmt: skip
    for w in kb.works:
        year, other = rng.randint(1950, 2024), rng.choice(people)
        kind = "stage play" if w.kind == "film" else "film adaptation"
        out.append(Passage(f"{w.title} ({kind})", f"{w.title} is also a {year} {kind} by {other}, loosely based on "
                           f"the {w.kind} of the same name."))  # fmt: skip
    # A second look-alike per entity, using the words questions use ("founded", "born", "wrote", "directed").
    names = (
        [c for c, _ in kb.countries] + cities + people + [c.name for c in kb.companies] + [w.title for w in kb.works]
    )
    for name in names:
        year, other, person = rng.randint(1900, 2020), rng.choice(cities), rng.choice(people)
        out.append(Passage(f"{name} Foundation", f"The {name} Foundation was founded in {year} in {other} by "
                           f"{person}, who was born there and wrote and directed its first campaign."))  # fmt: skip
        ship = f"{name} (ship), a steamer built in {rng.choice(cities)} in {rng.randint(1850, 1950)}"
        out.append(Passage(f"{name} (disambiguation)", f"{name} may refer to: {name}; the {name} Foundation; {ship}."))
    return tuple(out)


def _person_name(rng: random.Random) -> str:
    first = (rng.choice(_SYL_A) + rng.choice(_SYL_B)).capitalize()
    return f"{first} {(rng.choice(_SYL_A) + rng.choice(_SURNAME)).capitalize()}"


def generate_kb(seed: int = 0, distractors: bool = True) -> KnowledgeBase:
    """10 countries, 40 cities, 80 people, 40 companies, 40 works; all names unique. With `distractors`, every
    entity also gets three passages that name it without holding the asked facts (840 passages in all, not 210)."""
    rng, taken = random.Random(f"search-kb-{seed}"), set()
    countries = [_unique(rng, lambda r: (r.choice(_SYL_A) + r.choice(_LAND)).capitalize(), taken) for _ in range(10)]
    cities = []
    for i in range(40):
        name = _unique(rng, lambda r: (r.choice(_SYL_A) + r.choice(_PLACE)).capitalize(), taken)
        cities.append(City(name, countries[i % 10], rng.randint(900, 1850), rng.choice(_RIVERS)))
    people = []
    for _ in range(80):
        name = _unique(rng, _person_name, taken)
        people.append(Person(name, rng.randint(1780, 1990), rng.choice(cities).name, rng.choice(_JOBS)))
    companies = []
    for founder in people[:40]:  # distinct founders, so "the founder of X" names one person
        suffix = rng.choice(list(_INDUSTRY))
        name = _unique(rng, lambda r, s=suffix: f"{r.choice(_FIRM_A)}{r.choice(_FIRM_B)} {s}", taken)
        founded = min(founder.born + rng.randint(22, 50), 2020)
        companies.append(Company(name, _INDUSTRY[suffix], founded, founder.name, rng.choice(cities).name))
    works = []
    for creator in people[40:]:
        title = _unique(rng, lambda r: f"The {r.choice(_WORK_A)} {r.choice(_WORK_B)}", taken)
        kind = rng.choice(("novel", "film"))
        works.append(Work(title, kind, min(creator.born + rng.randint(20, 60), 2024), creator.name))
    capitals = tuple((c, next(x.name for x in cities if x.country == c)) for c in countries)
    kb = KnowledgeBase(capitals, tuple(cities), tuple(people), tuple(companies), tuple(works), ())
    extra = _distractors(kb, random.Random(f"search-kb-distractors-{seed}")) if distractors else ()
    passages = list(_passages(kb) + extra)
    random.Random(f"search-kb-order-{seed}").shuffle(passages)  # corpus order leaks nothing
    return replace(kb, passages=tuple(passages))


def _single_hop(kb: KnowledgeBase, rng: random.Random) -> Question:
    template = rng.randrange(6)
    if template == 0:
        c = rng.choice(kb.companies)
        return Question(f"In what year was {c.name} founded?", (str(c.founded),), "single_hop", "nq", (c.name,))
    if template == 1:
        w = rng.choice(kb.works)
        verb = "wrote the novel" if w.kind == "novel" else "directed the film"
        return Question(f"Who {verb} {w.title}?", (w.creator,), "single_hop", "nq", (w.title,))
    if template == 2:
        country, capital = rng.choice(kb.countries)
        return Question(f"What is the capital of {country}?", (capital,), "single_hop", "triviaqa", (country,))
    if template == 3:
        c = rng.choice(kb.cities)
        return Question(
            f"On which river does {c.name} lie?", (c.river, f"{c.river} river"), "single_hop", "triviaqa", (c.name,)
        )
    p = rng.choice(kb.people)
    if template == 4:
        return Question(f"What is {p.name}'s occupation?", (p.job,), "single_hop", "popqa", (p.name,))
    return Question(f"In what city was {p.name} born?", (p.birthplace,), "single_hop", "popqa", (p.name,))


def _multi_hop(kb: KnowledgeBase, rng: random.Random) -> Question:
    people = {p.name: p for p in kb.people}
    cities = {c.name: c for c in kb.cities}
    template = rng.randrange(4)
    if template in (0, 1):
        c = rng.choice(kb.companies)
        founder = people[c.founder]
        if template == 0:
            return Question(
                f"Where was the founder of {c.name} born?",
                (founder.birthplace,),
                "multi_hop",
                "hotpotqa",
                (f"{c.name} founded by", f"{founder.name} born"),
            )
        return Question(
            f"In what year was the founder of {c.name} born?",
            (str(founder.born),),
            "multi_hop",
            "bamboogle",
            (f"{c.name} founded by", f"{founder.name} born"),
        )
    if template == 2:
        w = rng.choice(kb.works)
        role = "author of the novel" if w.kind == "novel" else "director of the film"
        creator = people[w.creator]
        return Question(
            f"Where was the {role} {w.title} born?",
            (creator.birthplace,),
            "multi_hop",
            "2wikimultihopqa",
            (w.title, f"{creator.name} born"),
        )
    c = rng.choice(kb.companies)
    hq = cities[c.headquarters]
    return Question(
        f"In what country is the head office of {c.name}?",
        (hq.country,),
        "multi_hop",
        "musique",
        (f"{c.name} head office", f"{hq.name} city"),
    )


def _comparison(kb: KnowledgeBase, rng: random.Random) -> Question:
    template = rng.randrange(3)
    pools = (
        (kb.companies, "company was founded first", lambda c: c.founded, lambda c: c.name),
        (kb.people, "person was born first", lambda p: p.born, lambda p: p.name),
        (kb.cities, "city was founded earlier", lambda c: c.founded, lambda c: c.name),
    )
    items, phrase, year, name = pools[template]
    while True:
        a, b = rng.sample(items, 2)
        if year(a) != year(b):
            break
    answer = name(a) if year(a) < year(b) else name(b)
    return Question(
        f"Which {phrase}, {name(a)} or {name(b)}?",
        (answer,),
        "comparison",
        rng.choice(COMPARISON_SOURCES),
        (name(a), name(b)),
    )


def make_question(kb: KnowledgeBase, seed: int, task_id: int) -> Question:
    """Question `task_id` (any non-negative integer): 40% single-hop, 40% multi-hop, 20% comparison."""
    rng = random.Random(f"search-q-{seed}-{task_id}")
    draw = rng.random()
    if draw < 0.4:
        return _single_hop(kb, rng)
    if draw < 0.8:
        return _multi_hop(kb, rng)
    return _comparison(kb, rng)
