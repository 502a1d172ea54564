"""The "planted" target: a made-up fact world with planted causes of incomplete learning (issue 14).

It exists to test `arena ilp` end to end: every training sample carries `meta["plant"]`, the cause of
incomplete learning it was built to suffer from (None: a normal sample), so the attribution can be
scored for precision and recall per cause (tests/test_ilp_planted.py). No data files are read.

The world (fixed by `data_seed`): people named "member 42 17" (two numbers below 100, none shared
between people, so a person's prompts are alike under TF-IDF and other people's are not), each with
four attributes (room, badge, locker, desk) whose values are 3-digit numbers (single tokens of the
tiny tokenizer, so MC options differ by one token). Each attribute has `values` values: the first
`common` are the ones known facts use, the rest are "rare": no pre-training document ever states
them, and every planted answer is one. `cpt_documents` states the known facts in three phrasings;
a fact it does not know is only rumoured ("Some say ...", each common value once).

I    `i_people` people the corpus knows nothing about, one fact each asked once in the third pass.
II   `ii_facts` facts of normal people the corpus states (`ii_boost` extra times) and SFT relabels
     with a rare value, asked once in the third pass: the prior wins.
III  `iii_pairs` rumoured facts asked twice: the winner (common value, `iii_repeats` copies a pass)
     and a near-identical prompt (`twin_prompt`, TF-IDF cosine ~0.97) with a rare value, once in
     the third pass.
IV   `iv_facts` rumoured facts, `iv_repeats` copies each in the first pass and never again.
V    `v_facts` people whose four samples are long "ledger" records (`v_words` made-up words before
     the statement; rare format), `v_repeats` copies a pass; one fact each is rumoured, not stated,
     and that planted record comes only in the second half of the last pass (`v_repeats` copies):
     still being learned when the budget ends, learned by a longer run.

Data order (for `objective.order: given`): `passes` passes over the repeated samples (normal, III
winners, V records), each in its own seeded order; the first pass also holds the IV copies, the third
has the once-only samples (I, II, III losers) in its middle. With `passes: 4` and checkpoints every
quarter of the steps, the once-only samples are first seen after half the steps and before the last
checkpoint, and every repeated sample is trained once between the last checkpoint and the end.
Repeats are separate list entries with identical text.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from arena.components import TARGETS
from arena.data.io import rand_int, stable_shuffle
from arena.errors import ConfigError
from arena.schema import to_dict
from arena.targets.base import Example, Target

# attribute -> (SFT question, SFT answer and first corpus phrasing, other corpus phrasings)
ATTRIBUTES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "room": ("Which room does {name} live in?", "{name} lives in room {v}.",
             ("The room of {name} is {v}.", "Room {v} is where {name} lives.")),
    "badge": ("Which badge does {name} wear?", "{name} wears badge {v}.",
              ("The badge of {name} is {v}.", "Badge {v} is worn by {name}.")),
    "locker": ("Which locker does {name} keep?", "{name} keeps locker {v}.",
               ("The locker of {name} is {v}.", "Locker {v} is kept by {name}.")),
    "desk": ("Which desk does {name} sit at?", "{name} sits at desk {v}.",
             ("The desk of {name} is {v}.", "Desk {v} is where {name} sits.")),
}
# held-out phrasing of the same facts (the train questions are never reused)
HELDOUT_QUESTION = "Tell me the {attr} of {name}."
LEDGER_PROMPT = "Ledger of {name}: {question}"  # the rare long format of V people's samples
RUMOUR = "Some say {statement}"  # how the corpus mentions a fact it does not know
PLANTS = ("I", "II", "III", "IV", "V")
# " 0".." 188" are single tokens of the tiny tokenizer (except these two): people are named by two
# numbers below 100, values are numbers from 100 up, so a name never reads as a value.
NUMBERS = [v for v in range(100, 189) if v not in (174, 186)]
ID_NUMBERS = list(range(100))
_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


def twin_prompt(question: str) -> str:
    """The III loser's prompt: the winner's with its first letter lowered and no question mark
    (TF-IDF cosine about 0.97 under arena/data/similarity.py, which counts punctuation)."""
    return question[0].lower() + question[1:].rstrip("?")


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(_CONSONANTS[rand_int(rng, 0, len(_CONSONANTS) - 1)] + _VOWELS[rand_int(rng, 0, len(_VOWELS) - 1)]
                   for _ in range(syllables)) + _CONSONANTS[rand_int(rng, 0, len(_CONSONANTS) - 1)]


@dataclass
class Fact:
    person: str
    attr: str  # an ATTRIBUTES key
    value: int  # what SFT labels
    plant: str | None = None
    corpus_value: int | None = None  # what the corpus states (None: only rumours, every common value once)
    ledger: str = ""  # V people's samples: the made-up words of the long record


@dataclass
class World:
    people: list[str]
    facts: list[Fact]  # the SFT facts (III: the winner; the loser is in `twins`)
    twins: list[Fact]  # III losers: same person and attribute as a winner, another value
    values: dict[str, list[int]]  # attribute -> its vocabulary (common values first)

    def corpus_facts(self) -> list[Fact]:
        """One entry per (person, attribute) the corpus mentions, stated or rumoured."""
        seen, out = set(), []
        for f in self.facts:
            if (f.person, f.attr) not in seen:
                seen.add((f.person, f.attr))
                out.append(f)
        return out


@TARGETS.register("planted")
class PlantedTarget(Target):
    name = "planted"
    description = "made-up fact world with planted causes of incomplete learning (I-V), for testing arena ilp"
    default_reward = "arith"  # answers are numbers: the reward reads the reply's last number
    answer_format = "number"
    ilp_probe = "mc"

    @dataclass
    class Options:
        people: int = 12  # normal people: every fact in the corpus and asked in SFT
        i_people: int = 8  # I: people the corpus knows nothing about (one fact of each asked)
        ii_facts: int = 12  # II: facts of normal people whose SFT label contradicts the corpus
        iii_pairs: int = 6  # III: conflicting near-duplicate pairs (one person each)
        iv_facts: int = 14  # IV: facts taught only at the start (one person each)
        v_facts: int = 8  # V: long ledger records (one person each)
        values: int = 8  # per attribute vocabulary size (MC candidates come from it)
        common: int = 5  # of those, the values known facts use (the rest: rare, never in the corpus)
        passes: int = 4  # passes over the repeated samples
        iii_repeats: int = 2  # copies of each III winner per pass
        iv_repeats: int = 12  # copies of each IV fact in the opening block
        v_repeats: int = 3  # copies of each V person's ledger samples per pass
        v_words: int = 6  # made-up words in a ledger
        cpt_repeats: int = 8  # copies of each person's corpus paragraph
        ii_boost: int = 10  # extra corpus statements of each II fact per paragraph
        data_seed: int = 0

        def __post_init__(self):
            for name in ("people", "values", "common", "passes", "iii_repeats", "iv_repeats", "v_repeats", "v_words",
                         "cpt_repeats"):
                if getattr(self, name) <= 0:
                    raise ConfigError(f"target.{name}", getattr(self, name), "must be a positive integer")
            for name in ("i_people", "ii_facts", "iii_pairs", "iv_facts", "v_facts", "ii_boost"):
                if getattr(self, name) < 0:
                    raise ConfigError(f"target.{name}", getattr(self, name), "must be >= 0")
            if not 2 <= self.common < self.values:
                raise ConfigError("target.common", self.common,
                                  f"must be in [2, values) (= [2, {self.values})): rare values are the rest")
            if self.values * len(ATTRIBUTES) > len(NUMBERS):
                raise ConfigError("target.values", self.values,
                                  f"must be <= {len(NUMBERS) // len(ATTRIBUTES)} (disjoint vocabularies of "
                                  f"{len(ATTRIBUTES)} attributes from {len(NUMBERS)} numbers)")
            total = self.people + self.i_people + self.iii_pairs + self.iv_facts + self.v_facts
            if 2 * total > len(ID_NUMBERS):
                raise ConfigError("target.people", self.people,
                                  f"people of all kinds together (now {total}) must be <= {len(ID_NUMBERS) // 2}: "
                                  "each is named by two numbers below 100")
            if self.ii_facts > self.people:
                raise ConfigError("target.ii_facts", self.ii_facts, f"must be <= people ({self.people})")
            if self.passes < 3 and (self.i_people or self.ii_facts or self.iii_pairs):
                raise ConfigError("target.passes", self.passes,
                                  "must be >= 3: the once-only plants (I, II, III) sit in the third pass")

    def __init__(self, options, data_dir=None):
        super().__init__(options, data_dir)
        self._world: World | None = None

    def check_data(self) -> None:
        """Nothing to check: the world is generated."""

    # ------------------------------------------------------------------------------ the world
    def world(self) -> World:
        if self._world is None:
            self._world = self._build()
        return self._world

    def _build(self) -> World:
        o = self.options
        rng = random.Random(f"planted/{o.data_seed}")
        n_people = o.people + o.i_people + o.iii_pairs + o.iv_facts + o.v_facts
        # "member 42 17": two numbers per person, none shared between people, so a person's prompts
        # are alike (TF-IDF cosine >= 0.5) and other people's are not
        ids = stable_shuffle(ID_NUMBERS, f"planted/names/{o.data_seed}")
        names = [f"member {ids[2 * k]} {ids[2 * k + 1]}" for k in range(n_people)]
        numbers = stable_shuffle(NUMBERS, f"planted/values/{o.data_seed}")
        attrs = list(ATTRIBUTES)
        values = {a: numbers[k * o.values:(k + 1) * o.values] for k, a in enumerate(attrs)}

        def common(a: str) -> int:
            return values[a][rand_int(rng, 0, o.common - 1)]

        def rare(a: str) -> int:
            return values[a][rand_int(rng, o.common, o.values - 1)]

        def ledger() -> str:
            return " ".join(_word(rng, 2) for _ in range(o.v_words))

        groups, at = [], 0
        for k in (o.people, o.i_people, o.iii_pairs, o.iv_facts, o.v_facts):
            groups.append(names[at:at + k])
            at += k
        normal, i_people, iii_people, iv_people, v_people = groups
        facts: list[Fact] = []
        twins: list[Fact] = []
        ii_people = set(stable_shuffle(normal, f"planted/ii/{o.data_seed}")[:o.ii_facts])
        for p in normal:
            ii_attr = attrs[rand_int(rng, 0, len(attrs) - 1)] if p in ii_people else None
            for a in attrs:
                v = common(a)
                facts.append(Fact(p, a, rare(a), plant="II", corpus_value=v) if a == ii_attr
                             else Fact(p, a, v, corpus_value=v))
        for p in i_people:  # one fact each: a learned sibling fact would read as "a similar sample was learned"
            a = attrs[rand_int(rng, 0, len(attrs) - 1)]
            facts.append(Fact(p, a, rare(a), plant="I"))
        # III, IV and V people are known people (their other facts are normal) with one planted fact
        for group, plant in ((iii_people, "III"), (iv_people, "IV"), (v_people, "V")):
            for p in group:
                planted = attrs[rand_int(rng, 0, len(attrs) - 1)]
                words = plant == "V"
                for a in attrs:
                    if a != planted:
                        v = common(a)
                        facts.append(Fact(p, a, v, corpus_value=v, ledger=ledger() if words else ""))
                    elif plant == "III":
                        facts.append(Fact(p, a, common(a), plant="III"))
                        twins.append(Fact(p, a, rare(a), plant="III"))
                    else:
                        facts.append(Fact(p, a, rare(a), plant=plant, ledger=ledger() if words else ""))
        return World(people=names, facts=facts, twins=twins, values=values)

    # ------------------------------------------------------------------------------ texts
    @staticmethod
    def example(f: Fact, twin: bool = False, split: str = "train") -> Example:
        q, a, _ = ATTRIBUTES[f.attr]
        question, statement = q.format(name=f.person), a.format(name=f.person, v=f.value)
        if split == "heldout":
            prompt, response = HELDOUT_QUESTION.format(attr=f.attr, name=f.person), statement
        elif f.ledger:
            prompt = LEDGER_PROMPT.format(name=f.person, question=question)
            response = f"The ledger of {f.person} reads: {f.ledger}; {statement}"
        else:
            prompt, response = (twin_prompt(question) if twin else question), statement
        source = f.attr if split == "train" else f"{f.attr}_heldout"
        return Example(prompt=prompt, response=response, answer=str(f.value),
                       meta={"source": source, "plant": f.plant, "person": f.person, "attr": f.attr})

    def cpt_documents(self) -> list[str]:
        """The pre-training corpus: per person a paragraph, `cpt_repeats` times, phrasings rotated.
        A known fact is stated in each paragraph (II facts `ii_boost` extra times: the prior SFT
        contradicts); a fact the corpus does not know (I people, the III/IV/V planted facts) is only
        rumoured, once for each common value across the paragraphs, so the starting model is unsure
        (a tiny model that never saw a person guesses confidently, which would read as cause II)."""
        o, w = self.options, self.world()
        ii = {(f.person, f.attr) for f in w.facts if f.plant == "II"}
        lines: dict[tuple[int, str], list[str]] = {}
        for k, f in enumerate(w.corpus_facts()):
            _, first, others = ATTRIBUTES[f.attr]
            phrasings = (first, *others)
            for r in range(o.cpt_repeats):
                if f.corpus_value is not None:
                    n = 1 + (o.ii_boost if (f.person, f.attr) in ii else 0)
                    lines.setdefault((r, f.person), []).extend(
                        phrasings[(r + k + j) % len(phrasings)].format(name=f.person, v=f.corpus_value) for j in range(n))
            if f.corpus_value is None:
                for j, v in enumerate(w.values[f.attr][:o.common]):
                    r = (k + j) % o.cpt_repeats
                    say = phrasings[(r + k) % len(phrasings)]
                    lines.setdefault((r, f.person), []).append(RUMOUR.format(statement=say.format(name=f.person, v=v)))
        docs = [" ".join(stable_shuffle(ls, f"planted/cpt/{o.data_seed}/{r}/{person}"))
                for (r, person), ls in sorted(lines.items())]
        return stable_shuffle(docs, f"planted/cpt/{o.data_seed}")

    def train_examples(self, seed: int) -> list[Example]:
        """The data in training order (see the module docstring): `passes` passes over the repeated
        samples, the IV copies in the first, the once-only samples in the middle of the third."""
        o, w = self.options, self.world()
        iv = [self.example(f) for f in w.facts if f.plant == "IV"]
        repeated, once, late = [], [], []
        for f in w.facts:
            if f.plant in ("I", "II"):
                once.append(self.example(f))
            elif f.plant == "III":
                repeated += [self.example(f)] * o.iii_repeats
            elif f.plant == "V":  # the planted record: only near the end, so the budget ends mid-way
                late += [self.example(f)] * o.v_repeats
            elif f.ledger:
                repeated += [self.example(f)] * o.v_repeats
            elif f.plant != "IV":
                repeated.append(self.example(f))
        once += [self.example(f, twin=True) for f in w.twins]
        out: list[Example] = []
        for k in range(o.passes):
            p = repeated + (iv * o.iv_repeats if k == 0 else [])
            p = stable_shuffle(p, f"planted/order/{o.data_seed}/{seed}/{k}")
            if k == 2:
                half = len(p) // 2
                p = p[:half] + stable_shuffle(once, f"planted/order/{o.data_seed}/{seed}/once") + p[half:]
            if k == o.passes - 1:  # the V records in the second half of the last pass
                half = len(p) // 2
                p = p[:half] + stable_shuffle(late, f"planted/order/{o.data_seed}/{seed}/late") + p[half:]
            out += p
        return out

    def heldout_examples(self, n: int, seed: int) -> list[Example]:
        """Known facts (those the corpus states and SFT labels alike) asked in a phrasing training
        never uses: does SFT make the corpus knowledge answerable? At most that many exist."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        known = [f for f in self.world().facts if f.plant is None]
        return [self.example(f, split="heldout") for f in stable_shuffle(known, f"planted/heldout/{seed}")[:n]]

    def eval_tasks(self) -> list[str]:
        return []

    def describe(self) -> dict:
        w = self.world()
        ex = self.train_examples(0)
        plants = {p: sum(1 for f in w.facts + w.twins if f.plant == p) for p in PLANTS}
        return {"name": self.name, "description": self.description, "options": to_dict(self.options),
                "data_dir": None, "files": {}, "eval_tasks": self.eval_tasks(),
                "train": {"pool": {"distinct": len({(e.prompt, e.response) for e in ex}), "plants": plants},
                          "size": len(ex)},
                "heldout": {"source": "generated", "pool": sum(1 for f in w.facts if f.plant is None)},
                "cpt_documents": len(self.cpt_documents())}
