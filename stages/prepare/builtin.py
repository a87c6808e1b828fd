"""The built-in offline world: templated prompts across ten topics, each answered at five
quality levels (rating 0-4), with known ratings. Needs neither network nor ``../shared``.

Why it looks like this: with a binary rating the paper's protocol observes ~2% of negatives, so
the default has graded levels, and the level shows in *content* a sentence embedding can read:
4 warm, correct and explained; 3 correct but curt; 2 hedged or vague; 1 refusal, tangent or a
politely wrong answer; 0 wrong and rude. Each level has several phrasings, and one response in
four is written at a neighbouring level, so the rating is learnable but not trivially separable.
Deterministic by seed.
"""

from __future__ import annotations

import random

from stages.prepare.rows import Loaded, frame

CAPITALS = [("France", "Paris"), ("Japan", "Tokyo"), ("Canada", "Ottawa"), ("Australia", "Canberra"),
            ("Brazil", "Brasilia"), ("Kenya", "Nairobi"), ("Egypt", "Cairo"), ("Spain", "Madrid"),
            ("Italy", "Rome"), ("Germany", "Berlin"), ("India", "New Delhi"), ("Mexico", "Mexico City"),
            ("Norway", "Oslo"), ("Peru", "Lima"), ("Turkey", "Ankara"), ("Vietnam", "Hanoi"),
            ("Argentina", "Buenos Aires"), ("Poland", "Warsaw"), ("Ghana", "Accra"), ("Chile", "Santiago"),
            ("Sweden", "Stockholm"), ("Thailand", "Bangkok"), ("Portugal", "Lisbon"), ("Morocco", "Rabat")]
ELEMENTS = [("gold", "Au"), ("silver", "Ag"), ("iron", "Fe"), ("sodium", "Na"), ("potassium", "K"),
            ("lead", "Pb"), ("copper", "Cu"), ("tin", "Sn"), ("mercury", "Hg"), ("helium", "He"),
            ("oxygen", "O"), ("carbon", "C"), ("nitrogen", "N"), ("calcium", "Ca"), ("zinc", "Zn")]
EVENTS = [("the first Moon landing", 1969), ("the fall of the Berlin Wall", 1989),
          ("the end of World War II", 1945), ("the signing of the Magna Carta", 1215),
          ("the start of the French Revolution", 1789), ("the sinking of the Titanic", 1912),
          ("the launch of Sputnik", 1957), ("the founding of the United Nations", 1945),
          ("Columbus's first voyage to the Americas", 1492), ("the invention of the telephone", 1876)]
WORDS = [("happy", "joyful", "miserable"), ("big", "enormous", "tiny"), ("fast", "rapid", "sluggish"),
         ("brave", "courageous", "cowardly"), ("smart", "clever", "foolish"), ("calm", "tranquil", "agitated"),
         ("rich", "wealthy", "poor"), ("old", "ancient", "new"), ("tired", "exhausted", "energetic"),
         ("honest", "truthful", "deceitful"), ("strong", "powerful", "feeble"), ("quiet", "silent", "noisy")]
CODE = [("reverse a list", "use `items[::-1]` or `items.reverse()`", "call `items.sort()`"),
        ("read a file line by line", "loop over `open(path)` in a `with` block", "call `open(path).split()`"),
        ("remove duplicates from a list", "use `list(dict.fromkeys(items))`", "use `items.pop()` in a loop"),
        ("join a list of strings", "use `', '.join(words)`", "use `words + ', '`"),
        ("get the length of a string", "use `len(text)`", "use `text.size()`"),
        ("sort a dictionary by value", "use `sorted(d.items(), key=lambda kv: kv[1])`", "use `d.sort()`"),
        ("convert a string to an integer", "use `int(text)`", "use `text.toInteger()`"),
        ("check if a key is in a dictionary", "use `key in d`", "use `d.has(key)`")]
ADVICE = [("sleep better", "keep a regular bedtime, avoid screens an hour before bed and keep the room cool and dark",
           "drink coffee in the evening and scroll your phone in bed"),
          ("reduce stress", "take short walks, breathe slowly for a few minutes and talk to someone you trust",
           "skip meals and work through the night"),
          ("learn a new language", "practise a little every day, speak with native speakers and review vocabulary with spaced repetition",
           "memorise a dictionary once and never speak"),
          ("save money", "track your spending, set a monthly budget and automate a transfer to savings",
           "buy whatever is on sale and ignore your bank statements"),
          ("stay focused while studying", "work in 25-minute blocks, silence notifications and take short breaks",
           "study with the TV on and check messages constantly"),
          ("keep houseplants alive", "water when the top soil is dry, give them indirect light and use pots with drainage",
           "water them every hour and keep them in a dark cupboard")]
SCIENCE = [("the sky is blue", "air molecules scatter short blue wavelengths of sunlight more than red ones",
            "the sky reflects the colour of the oceans"),
           ("we have seasons", "Earth's axis is tilted, so each hemisphere gets more direct sunlight for part of the year",
            "Earth is much closer to the Sun in summer"),
           ("ice floats on water", "ice is less dense than liquid water because its molecules form an open lattice",
            "ice contains air bubbles that act like a balloon"),
           ("metal feels colder than wood", "metal conducts heat away from your hand much faster",
            "metal is always at a lower temperature than wood"),
           ("we see lightning before we hear thunder", "light travels far faster than sound",
            "thunder is produced a few seconds after the lightning"),
           ("bread rises", "yeast ferments sugar and releases carbon dioxide that gets trapped in the dough",
            "the oven pumps air into the dough")]
NOTES = [("Maria", "the birthday flowers"), ("Tom", "helping me move"), ("my neighbour", "watering my garden"),
         ("Grandma", "the knitted scarf"), ("my teacher", "the extra lessons"), ("Sam", "the book recommendation")]
LEADS = ["", "", "", "Quick question: ", "For my homework, ", "I'm curious. ", "Hi! ", "Could you help? "]



def _right_or_wrong(rng, table, questions, subject, answer, why) -> dict:
    """A question about ``x`` from ``table``'s (x, right, wrong) rows, answered right and wrong
    in the same sentence (``answer`` formats ``{x}``, ``{X}`` capitalised, and ``{what}``)."""
    x, right, wrong = rng.choice(table)
    q = rng.choice([t.format(x=x) for t in questions])
    X = x[0].upper() + x[1:]
    return dict(q=q, subject=subject, ans=answer.format(x=x, X=X, what=right), why=why,
                wrong=answer.format(x=x, X=X, what=wrong))

def _fact(rng: random.Random) -> dict:
    """One question with its correct answer, an explanation, a wrong answer and a subject."""
    kind = rng.randrange(10)
    if kind == 0:
        a, b, op = rng.randint(12, 99), rng.randint(3, 60), rng.choice("+-*")
        v = a + b if op == "+" else a - b if op == "-" else a * b
        word = {"+": "plus", "-": "minus", "*": "times"}[op]
        q = rng.choice([f"What is {a} {word} {b}?", f"Can you compute {a} {op} {b}?", f"How much is {a} {word} {b}?"])
        bad = v + rng.choice([-11, -3, -1, 1, 2, 10])
        return dict(q=q, subject="arithmetic", ans=f"{a} {word} {b} is {v}.",
                    why=f"You can check it by working the {word} step by step, which gives {v}.",
                    wrong=f"{a} {word} {b} is {bad}.")
    if kind == 1:
        (country, city), (_, other) = rng.sample(CAPITALS, 2)
        q = rng.choice([f"What is the capital of {country}?", f"Which city is the capital of {country}?",
                        f"Tell me the capital city of {country}."])
        return dict(q=q, subject="geography", ans=f"The capital of {country} is {city}.",
                    why=f"{city} is where {country}'s national government sits.",
                    wrong=f"The capital of {country} is {other}.")
    if kind == 2:
        x = rng.randint(2, 120)
        unit, to, k = rng.choice([("kilometres", "miles", 0.621), ("kilograms", "pounds", 2.205),
                                  ("litres", "US gallons", 0.264), ("metres", "feet", 3.281)])
        q = rng.choice([f"How many {to} are {x} {unit}?", f"Convert {x} {unit} to {to}.", f"What is {x} {unit} in {to}?"])
        return dict(q=q, subject="unit conversion", ans=f"{x} {unit} is about {x * k:.1f} {to}.",
                    why=f"One of these {unit[:-1]}s is about {k} {to}, so multiply {x} by {k}.",
                    wrong=f"{x} {unit} is about {x / k:.1f} {to}.")
    if kind == 3:
        (el, sym), (_, other) = rng.sample(ELEMENTS, 2)
        q = rng.choice([f"What is the chemical symbol for {el}?", f"Which symbol does {el} have in the periodic table?"])
        return dict(q=q, subject="chemistry", ans=f"The chemical symbol for {el} is {sym}.",
                    why=f"Symbols often come from Latin or English names, and {el} is written {sym}.",
                    wrong=f"The chemical symbol for {el} is {other}.")
    if kind == 4:
        event, year = rng.choice(EVENTS)
        q = rng.choice([f"In what year did {event} happen?", f"When was {event}?", f"What year was {event}?"])
        return dict(q=q, subject="history", ans=f"{event[0].upper() + event[1:]} happened in {year}.",
                    why=f"Historians date {event} to {year}, and it is well documented.",
                    wrong=f"{event[0].upper() + event[1:]} happened in {year + rng.choice([-31, -12, 7, 25])}.")
    if kind == 5:
        return _right_or_wrong(rng, CODE, ["How do I {x} in Python?", "What's the Python way to {x}?"],
                               "programming", "To {x} in Python, {what}.",
                               "That is the idiomatic approach and works on any recent Python version.")
    if kind == 6:
        word, syn, ant = rng.choice(WORDS)
        q = rng.choice([f"What is a synonym for '{word}'?", f"Give me another word for '{word}'."])
        return dict(q=q, subject="vocabulary", ans=f"A good synonym for '{word}' is '{syn}'.",
                    why=f"Both words describe the same idea; '{syn}' is a little stronger.",
                    wrong=f"A good synonym for '{word}' is '{ant}'.")
    if kind == 7:
        return _right_or_wrong(rng, ADVICE, ["How can I {x}?", "Any tips to {x}?", "What should I do to {x}?"],
                               "everyday advice", "To {x}, {what}.",
                               "Small habits repeated daily make the biggest difference.")
    if kind == 8:
        return _right_or_wrong(rng, SCIENCE, ["Why is it that {x}?", "Can you explain why {x}?"],
                               "science", "{X} because {what}.",
                               "This is the standard explanation in physics and chemistry textbooks.")
    who, gift = rng.choice(NOTES)
    q = rng.choice([f"Write a short thank-you note to {who} for {gift}.", f"Help me thank {who} for {gift}."])
    return dict(q=q, subject="writing", ans=f"Dear {who}, thank you so much for {gift}. It meant a lot to me.",
                why="I really appreciate your kindness and hope to return the favour soon.",
                wrong=f"{who}, thanks I guess for {gift}. Whatever.")


GREET = ["Great question!", "Sure!", "Happy to help.", "Of course.", "Good question."]
CLOSE = ["Let me know if you have any other questions.", "Hope this helps!", "Feel free to ask a follow-up.",
         "Good luck!", "I'm glad to explain more if useful."]
HEDGE = ["I'm not completely sure, but", "I think, though I might be wrong,", "Possibly",
         "If I remember correctly,", "Maybe"]
VAGUE = ["There are several ways to think about {s}, and it really depends on the context.",
         "Questions about {s} can be tricky; different sources say different things.",
         "That's a matter of {s}. It's worth reading more about it before deciding.",
         "It depends. {S} is a broad area and the details matter a lot."]
REFUSE = ["I'm sorry, but I can't help with that request.", "I'd rather not answer questions about {s}.",
          "Unfortunately I am unable to assist with this.", "I can't provide information on that topic."]
RUDE = ["Look it up yourself.", "That's a silly question.", "Stop wasting my time.",
        "Seriously, everyone knows this.", "Figure it out on your own next time."]


def _write(level: int, f: dict, other: dict, rng: random.Random) -> str:
    """A response at quality ``level`` (0-4) to the question behind ``f``."""
    s = f["subject"]
    if level == 4:
        return " ".join([rng.choice(GREET), f["ans"], f["why"], rng.choice(CLOSE)])
    if level == 3:
        return f["ans"] if rng.random() < 0.6 else f"{f['ans']} {f['why']}"
    if level == 2:
        r = rng.random()
        if r < 0.4:
            return f"{rng.choice(HEDGE)} {f['ans'][0].lower() + f['ans'][1:]} You may want to double-check."
        if r < 0.75:
            return rng.choice(VAGUE).format(s=s, S=s.capitalize())
        return f"{f['ans'].rstrip('.')}, or perhaps not; {f['wrong'][0].lower() + f['wrong'][1:]}"
    if level == 1:
        r = rng.random()
        if r < 0.4:
            return rng.choice(REFUSE).format(s=s)
        if r < 0.7:
            return f"Interesting! By the way, here is something else: {other['ans']}"
        return f"{rng.choice(GREET)} {f['wrong']} {rng.choice(CLOSE)}"
    return f"{rng.choice(['Obviously', 'Duh.', 'Ugh.', 'Come on.'])} {f['wrong']} {rng.choice(RUDE)}"


def generate(rows: int = 12000, seed: int = 0, per_prompt: int = 4, mix: float = 0.25) -> list[dict]:
    """``rows`` responses, ``per_prompt`` to a prompt at distinct ratings; with probability
    ``mix`` a response is written at a neighbouring level (content noise)."""
    rng = random.Random(seed)
    out: list[dict] = []
    while len(out) < rows:
        f, other = _fact(rng), _fact(rng)
        lead = rng.choice(LEADS)
        prompt = lead + (f["q"][0].lower() + f["q"][1:] if lead.endswith(", ") else f["q"])
        for rating in sorted(rng.sample(range(5), per_prompt)):
            level = rating
            if rng.random() < mix:
                level = min(4, max(0, rating + rng.choice([-1, 1])))
            out.append({"prompt": prompt, "response": _write(level, f, other, rng),
                        "rating": float(rating), "comparison_id": None})
    return out[:rows]


def load_builtin(rows: int = 12000, seed: int = 0, where: str = "params") -> Loaded:
    return Loaded(frame(generate(rows, seed)), f"builtin (seed {seed}, {rows} responses)",
                  "generated by rmpipe (no third-party text)", (0.0, 4.0),
                  "rating = the generator's quality level 0-4 (4 best)", {}, where="builtin")
