"""Prompts a program can grade, for measuring what an instruction-tuned LM can do before and after distillation.

Three categories, each a table of generators (one row per kind of prompt) and a grader per kind:
- `instructions`: verifiable instructions in the style of IFEval (Zhou et al. 2023, arXiv:2311.07911): answer
  in upper case or lower case, in at most or at least N words, in exactly N sentences, use one or two given words
  or avoid one, reply with a JSON object with given keys, a list of N items, start with a given word, end with a
  given phrase, wrap the answer in quotation marks, give a title in <<double angular brackets>>, use no commas,
  and two of these at once (lowercase in at most N words);
- `arithmetic`: a sum, difference or product of two small integers, graded by the answer's last integer;
- `facts`: questions with one right answer (capitals, and a few others), graded by the answer's presence.

Training and evaluation prompts are drawn by different seeds from the same generators, and every evaluation
prompt is removed from the training pool; the facts are split by row, so no evaluation fact is ever trained on.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass

CATEGORIES = ("instructions", "arithmetic", "facts")

TOPICS = ["the sea", "a forest", "winter", "a city at night", "coffee", "a library", "the moon", "a garden",
          "rain", "a mountain", "a train journey", "bread", "a river", "music", "a desert", "the sun", "a cat",
          "a bicycle", "autumn", "a market", "a lighthouse", "spring", "a kitchen", "snow", "an old bridge",
          "a school", "the wind", "a dog", "a beach", "a storm", "a museum", "a farm", "the stars", "a village",
          "tea", "a clock", "a park", "a ship", "summer", "a bakery"]
# (topic, a word most descriptions of it use): asked to avoid it
AVOIDABLE = [("the sea", "water"), ("winter", "cold"), ("the sun", "light"), ("a forest", "trees"),
             ("rain", "water"), ("a library", "books"), ("coffee", "cup"), ("the moon", "night"),
             ("a garden", "flowers"), ("a desert", "sand"), ("a beach", "sand"), ("snow", "white"),
             ("a bakery", "bread"), ("a storm", "wind"), ("the stars", "sky"), ("a kitchen", "food"),
             ("a school", "students"), ("a park", "trees"), ("a ship", "sea"), ("tea", "cup"), ("a clock", "time"),
             ("summer", "hot"), ("a dog", "bark"), ("a river", "water")]
WORDS = ["bright", "quiet", "green", "ancient", "gentle", "blue", "small", "warm", "happy", "old", "soft", "golden",
         "busy", "calm", "strong", "tiny", "silver", "fresh", "dark", "sweet"]
KEYS = [("name", "color"), ("title", "year"), ("city", "country"), ("animal", "sound"), ("food", "taste")]
THINGS = ["fruits", "colors", "animals", "countries", "vegetables", "sports", "musical instruments", "tools",
          "birds", "flowers", "drinks", "jobs", "trees", "games"]
START_WORDS = ["Today", "Yes", "Once", "Imagine", "Here", "Every"]
END_PHRASES = ["That is all.", "Thank you.", "The end.", "Any other questions?"]

# Questions with one right answer, and what a right answer contains. Split by row between training and evaluation.
FACTS = [
    ("What is the capital of France?", "paris"), ("What is the capital of Germany?", "berlin"),
    ("What is the capital of Italy?", "rome"), ("What is the capital of Spain?", "madrid"),
    ("What is the capital of Japan?", "tokyo"), ("What is the capital of Egypt?", "cairo"),
    ("What is the capital of Russia?", "moscow"), ("What is the capital of Greece?", "athens"),
    ("What is the capital of Portugal?", "lisbon"), ("What is the capital of Norway?", "oslo"),
    ("What is the capital of Sweden?", "stockholm"), ("What is the capital of Poland?", "warsaw"),
    ("What is the capital of Ireland?", "dublin"), ("What is the capital of Austria?", "vienna"),
    ("What is the capital of Kenya?", "nairobi"), ("What is the capital of Argentina?", "buenos aires"),
    ("What is the capital of Thailand?", "bangkok"), ("What is the capital of China?", "beijing"),
    ("What is the capital of the United Kingdom?", "london"), ("What is the capital of Peru?", "lima"),
    ("What is the capital of Finland?", "helsinki"), ("What is the capital of Denmark?", "copenhagen"),
    ("What is the capital of Hungary?", "budapest"), ("What is the capital of Belgium?", "brussels"),
    ("How many days are there in a week?", "seven|7"), ("How many legs does a spider have?", "eight|8"),
    ("What is the chemical symbol for gold?", "au"), ("What is the largest planet in the solar system?", "jupiter"),
    ("What gas do plants take in from the air to make food?", "carbon dioxide|co2"),
    ("How many continents are there on Earth?", "seven|7"), ("What is the freezing point of water in Celsius?",
                                                              "0|zero"),
    ("Which planet is known as the Red Planet?", "mars"), ("How many minutes are there in an hour?", "60|sixty"),
    ("What is the chemical symbol for water?", "h2o"), ("Who wrote 'Romeo and Juliet'?", "shakespeare"),
    ("What is the tallest animal in the world?", "giraffe"),
]


@dataclass(frozen=True)
class Prompt:
    category: str
    kind: str
    text: str
    check: dict  # what the grader of `kind` needs (a number, a word, keys...)


def _question(rng, facts) -> str:
    """A question from the fact table, or a request to describe a topic: what a case instruction applies to."""
    return rng.choice(facts)[0] if rng.random() < 0.5 else f"Describe {rng.choice(TOPICS)} in one sentence."


def _upper(rng, facts):
    return f"Answer in capital letters only: {_question(rng, facts)}", {}


def _lower(rng, facts):
    return f"Answer in lowercase letters only, no capitals at all: {_question(rng, facts)}", {}


def _max_words(rng, facts):
    n = rng.randint(5, 15)
    return f"Describe {rng.choice(TOPICS)} in at most {n} words.", {"n": n}


def _include(rng, facts):
    word = rng.choice(WORDS)
    return f"Write one sentence about {rng.choice(TOPICS)} that uses the word '{word}'.", {"word": word}


def _avoid(rng, facts):
    topic, word = rng.choice(AVOIDABLE)
    if rng.random() < 0.5:
        return f"Describe {topic} in one sentence without using the word '{word}'.", {"word": word}
    return f"Write two sentences about {topic}. Do not use the word '{word}'.", {"word": word}


def _json(rng, facts):
    a, b = rng.choice(KEYS)
    return (f'Reply only with a JSON object with the keys "{a}" and "{b}", about {rng.choice(TOPICS)}.',
            {"keys": [a, b]})


def _list(rng, facts):
    n = rng.randint(2, 5)
    return f"List {n} {rng.choice(THINGS)}, one per line, each line starting with '- '.", {"n": n}


def _min_words(rng, facts):
    n = rng.randint(12, 25)
    return f"Write about {rng.choice(TOPICS)} in at least {n} words.", {"n": n}


def _sentences(rng, facts):
    n = rng.randint(1, 3)
    return (f"Describe {rng.choice(TOPICS)} in exactly {n} sentence{'s' * (n > 1)}.", {"n": n})


def _keywords(rng, facts):
    a, b = rng.sample(WORDS, 2)
    return (f"Write one sentence about {rng.choice(TOPICS)} that uses both the words '{a}' and '{b}'.",
            {"words": [a, b]})


def _start_word(rng, facts):
    word = rng.choice(START_WORDS)
    return f"Describe {rng.choice(TOPICS)} in one sentence. Start your answer with the word '{word}'.", {"word": word}


def _end_phrase(rng, facts):
    phrase = rng.choice(END_PHRASES)
    return (f"Describe {rng.choice(TOPICS)} in one short sentence, then end your answer with the exact phrase "
            f"'{phrase}'", {"phrase": phrase})


def _quoted(rng, facts):
    return (f"Describe {rng.choice(TOPICS)} in one sentence and wrap your whole answer in double quotation marks.",
            {})


def _title(rng, facts):
    return (f"Write a two-line poem about {rng.choice(TOPICS)} with a title in double angular brackets, "
            "like <<my title>>.", {})


def _no_commas(rng, facts):
    return f"Describe {rng.choice(TOPICS)} in one sentence without using any commas.", {}


def _lower_short(rng, facts):
    n = rng.randint(8, 15)
    return (f"Describe {rng.choice(TOPICS)} in at most {n} words, all in lowercase letters.", {"n": n})


def _arithmetic(rng, facts):
    a, b = rng.randint(2, 60), rng.randint(2, 60)
    op = rng.choice("+-*")
    a, b = (max(a, b), min(a, b)) if op == "-" else (a, b)
    answer = a + b if op == "+" else a - b if op == "-" else a * b
    word = {"+": "plus", "-": "minus", "*": "times"}[op]
    return f"What is {a} {word} {b}? Answer with the number only.", {"answer": answer}


# kind -> (category, generator(rng, the facts it may ask about)); graders below, one per kind.
GENERATORS = {"upper": ("instructions", _upper), "lower": ("instructions", _lower),
              "max_words": ("instructions", _max_words), "include_word": ("instructions", _include),
              "avoid_word": ("instructions", _avoid), "json_keys": ("instructions", _json),
              "list_items": ("instructions", _list), "min_words": ("instructions", _min_words),
              "sentences": ("instructions", _sentences), "keywords": ("instructions", _keywords),
              "start_word": ("instructions", _start_word), "end_phrase": ("instructions", _end_phrase),
              "quoted": ("instructions", _quoted), "title": ("instructions", _title),
              "no_commas": ("instructions", _no_commas), "lower_short": ("instructions", _lower_short),
              "arithmetic": ("arithmetic", _arithmetic)}


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9']+", text)


def _sentences_of(text: str) -> list[str]:
    """Sentences: text up to a '.', '!' or '?' followed by a space or the end, with a word in it."""
    return [part for part in re.split(r"[.!?]+(?:\s+|$)", text) if _words(part)]


def _json_object(text: str):
    text = text.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    try:
        value = json.loads(text[:10_000])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _last_integer(text: str) -> int | None:
    """The answer's last integer: models tend to restate the question ("35 - 16 = 19") before answering."""
    found = re.findall(r"-?\d[\d,]*", text)
    return int(found[-1].replace(",", "")) if found else None


GRADERS = {
    "upper": lambda r, c: any(ch.isalpha() for ch in r) and r == r.upper(),
    "lower": lambda r, c: any(ch.isalpha() for ch in r) and r == r.lower(),
    "max_words": lambda r, c: 0 < len(_words(r)) <= c["n"],
    "include_word": lambda r, c: c["word"].lower() in (w.lower() for w in _words(r)),
    "avoid_word": lambda r, c: bool(_words(r)) and c["word"].lower() not in (w.lower() for w in _words(r)),
    "json_keys": lambda r, c: (obj := _json_object(r)) is not None and all(k in obj for k in c["keys"]),
    "list_items": lambda r, c: sum(line.strip().startswith("- ") for line in r.splitlines()) == c["n"],
    "min_words": lambda r, c: len(_words(r)) >= c["n"],
    "sentences": lambda r, c: len(_sentences_of(r)) == c["n"],
    "keywords": lambda r, c: all(w in (x.lower() for x in _words(r)) for w in c["words"]),
    "start_word": lambda r, c: bool(_words(r)) and _words(r)[0].lower() == c["word"].lower(),
    "end_phrase": lambda r, c: r.rstrip().endswith(c["phrase"]),
    "quoted": lambda r, c: len(r) > 2 and r[0] in '"\u201c' and r[-1] in '"\u201d',
    "title": lambda r, c: re.search(r"<<[^<>\n]+>>", r) is not None,
    "no_commas": lambda r, c: bool(_words(r)) and "," not in r,
    "lower_short": lambda r, c: 0 < len(_words(r)) <= c["n"] and r == r.lower(),
    "arithmetic": lambda r, c: _last_integer(r) == c["answer"],
    "fact": lambda r, c: any(re.search(rf"\b{re.escape(a)}\b", r.lower()) for a in c["answer"].split("|")),
}


def grade(prompt: Prompt, response: str) -> bool:
    return bool(GRADERS[prompt.kind](response.strip(), prompt.check))


def passes(prompt: Prompt, response: str) -> bool:
    """Whether a response is fit to train on: its grader accepts it (a prompt of the user's own has no grader and
    always passes)."""
    return prompt.kind not in GRADERS or grade(prompt, response)


def prompt_sets(train_size: int, eval_per_category: int, seed: int = 0) -> tuple[list[Prompt], list[Prompt]]:
    """(training prompts, evaluation prompts): disjoint; evaluation holds `eval_per_category` of each category
    (facts: at most the evaluation half of FACTS), training `train_size` prompts drawn from every kind."""
    fact_rows = list(FACTS)
    random.Random(seed).shuffle(fact_rows)
    eval_facts, train_facts = fact_rows[:len(fact_rows) // 2], fact_rows[len(fact_rows) // 2:]
    evaluation = _draw(random.Random(seed + 1), eval_per_category, eval_facts, per_category=True)
    seen = {p.text for p in evaluation}
    pool = [p for p in _draw(random.Random(seed + 2), 4 * train_size, train_facts) if p.text not in seen]
    training = list({p.text: p for p in pool}.values())[:train_size]  # distinct texts, in draw order
    return training, evaluation


def _draw(rng: random.Random, n: int, facts: list, per_category: bool = False) -> list[Prompt]:
    kinds = list(GENERATORS) + ["fact"]
    out: list[Prompt] = []
    if per_category:
        for category in CATEGORIES:
            own = [k for k in kinds if (GENERATORS[k][0] if k in GENERATORS else "facts") == category]
            count = min(n, len(facts)) if category == "facts" else n
            out += [_make(rng, own[i % len(own)], facts, i) for i in range(count)]
        return out
    return [_make(rng, rng.choice(kinds), facts, i) for i in range(n)]


def _make(rng: random.Random, kind: str, facts: list, i: int) -> Prompt:
    if kind == "fact":
        question, answer = facts[i % len(facts)]
        return Prompt("facts", "fact", f"{question} Answer briefly.", {"answer": answer})
    category, generate = GENERATORS[kind]
    text, check = generate(rng, facts)
    return Prompt(category, kind, text, check)


def scores(prompts: list[Prompt], responses: list[str]) -> dict:
    """Share of prompts answered right, per category and over all."""
    out: dict = {}
    for category in CATEGORIES:
        pairs = [(p, r) for p, r in zip(prompts, responses) if p.category == category]
        if pairs:
            out[category] = sum(grade(p, r) for p, r in pairs) / len(pairs)
    out["all"] = sum(grade(p, r) for p, r in zip(prompts, responses)) / max(1, len(prompts))
    return out


def kept(student: dict, teacher: dict) -> dict:
    """Per category, the student's score over the teacher's (None where the teacher scores 0)."""
    return {k: student[k] / v if v else None for k, v in teacher.items()}


def describe(prompts: list[Prompt]) -> list[dict]:
    return [asdict(p) for p in prompts]


def training_mix(training: list[Prompt]) -> dict[str, int]:
    """How many training prompts of each kind, most first: what the student was taught from."""
    return dict(Counter(p.kind for p in training).most_common())


def mix_text(mix: dict[str, int]) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in mix.items())


def shortfall(training: list[Prompt], asked: int) -> str | None:
    """A line saying so when the generators ran out of distinct prompts before `asked` (facts, case and
    avoid-a-word prompts have a few dozen forms each; arithmetic has thousands, so it fills what is left)."""
    generated = sum(p.kind != "own" for p in training)
    if generated >= asked:
        return None
    return (f"data.train_prompts: {asked:,} asked, the generators give {generated:,} distinct ones "
            f"({mix_text({k: n for k, n in training_mix(training).items() if k != 'own'})}); add your own "
            "with data.prompts_file")


MAX_FILE_PROMPTS = 20_000
MAX_PROMPT_CHARS = 4_000


def pipeline_prompts(cfg, seed: int) -> tuple[list[Prompt], list[Prompt]]:
    """The training and evaluation prompts of an instructions pipeline (config.causal.InstructionData): the
    generated ones, plus the lines of its prompts_file for training (ungraded; any that is an evaluation prompt
    is dropped)."""
    from edgedistill.config.loading import read_text_file
    from edgedistill.errors import UserError

    training, evaluation = prompt_sets(cfg.train_prompts, cfg.eval_per_category, seed)
    if cfg.prompts_file is not None:
        lines = read_text_file(cfg.prompts_file, 1 << 20, "prompts").splitlines()
        held_out = {p.text for p in evaluation}
        for number, line in enumerate(lines, 1):
            if len(line) > MAX_PROMPT_CHARS:
                raise UserError(f"{cfg.prompts_file}:{number}: a prompt of {len(line):,} characters; at most "
                                f"{MAX_PROMPT_CHARS:,}")
        own = [line.strip() for line in lines if line.strip() and line.strip() not in held_out]
        if len(own) > MAX_FILE_PROMPTS:
            raise UserError(f"{cfg.prompts_file}: {len(own):,} prompts; at most {MAX_FILE_PROMPTS:,}")
        training += [Prompt("own", "own", text, {}) for text in own]
    return training, evaluation
