"""Write the shipped sample datasets under data/samples/, one per supported format.

The rows are generated from small fact tables so they are ours, deterministic and varied enough
for the tiny model's tokenizer and for a loss curve that visibly falls. Run it again after editing
the tables: `python data/make_samples.py`.
"""

import json
import random
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent / "samples"

CAPITALS = {
    "France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid", "Canada": "Ottawa",
    "Egypt": "Cairo", "Kenya": "Nairobi", "Peru": "Lima", "Norway": "Oslo", "Greece": "Athens",
    "Chile": "Santiago", "India": "New Delhi", "Brazil": "Brasilia", "Poland": "Warsaw",
    "Ireland": "Dublin", "Portugal": "Lisbon", "Austria": "Vienna", "Sweden": "Stockholm",
}
OPPOSITES = {
    "hot": "cold", "up": "down", "early": "late", "light": "dark", "fast": "slow", "open": "closed",
    "full": "empty", "loud": "quiet", "happy": "sad", "strong": "weak", "wide": "narrow",
}
COLORS = {
    "grass": "green", "the sky": "blue", "snow": "white", "coal": "black", "a lemon": "yellow",
    "a tomato": "red", "an orange": "orange", "a plum": "purple",
}
SOUNDS = {"dog": "barks", "cat": "meows", "cow": "moos", "duck": "quacks", "lion": "roars",
          "owl": "hoots", "horse": "neighs", "bee": "buzzes"}
SYSTEM = "You are a concise, friendly assistant."


def facts(rng: random.Random) -> list[tuple[str, str, str]]:
    """(question, good answer, poor answer) triples from every table."""
    rows = []
    for country, city in CAPITALS.items():
        wrong = rng.choice([c for c in CAPITALS.values() if c != city])
        rows.append((f"What is the capital of {country}?", f"The capital of {country} is {city}.",
                     f"I think it is {wrong}, but I am not sure."))
    for word, opposite in OPPOSITES.items():
        rows.append((f"What is the opposite of {word}?", f"The opposite of {word} is {opposite}.",
                     f"{word.capitalize()} has no opposite."))
    for thing, color in COLORS.items():
        rows.append((f"What color is {thing}?", f"{thing[0].upper() + thing[1:]} is {color}.",
                     "Colors are hard to describe."))
    for animal, sound in SOUNDS.items():
        rows.append((f"What sound does a {animal} make?", f"A {animal} {sound}.",
                     f"A {animal} is an animal."))
    for _ in range(40):
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        rows.append((f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}.",
                     f"{a} plus {b} is {a + b + rng.randint(1, 5)}."))
    rng.shuffle(rows)
    return rows


def write_jsonl(name: str, records: list[dict]) -> None:
    with open(SAMPLES / name, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def main() -> None:
    SAMPLES.mkdir(exist_ok=True)
    rows = facts(random.Random(1234))
    write_jsonl("chat.jsonl", [
        {"messages": [{"role": "system", "content": SYSTEM},
                      {"role": "user", "content": q},
                      {"role": "assistant", "content": a}]}
        for q, a, _ in rows
    ])
    write_jsonl("instruction.jsonl", [
        {"instruction": "Answer the question in one sentence.", "input": q, "output": a}
        for q, a, _ in rows
    ])
    write_jsonl("prompt_completion.jsonl", [
        {"prompt": f"Question: {q}\nAnswer:", "completion": f" {a}"} for q, a, _ in rows
    ])
    write_jsonl("text.jsonl", [{"text": f"Question: {q}\nAnswer: {a}"} for q, a, _ in rows])
    write_jsonl("preference.jsonl", [
        {"prompt": q, "chosen": a, "rejected": poor} for q, a, poor in rows
    ])
    # Each question once, with its good answer (desirable) or its poor one, alternately: KTO
    # learns from single labelled answers, and a balanced sample needs no weights.
    write_jsonl("unpaired_preference.jsonl", [
        {"prompt": q, "completion": a if i % 2 == 0 else poor, "label": i % 2 == 0}
        for i, (q, a, poor) in enumerate(rows)
    ])
    print(f"wrote {len(rows)} rows per format to {SAMPLES}")


if __name__ == "__main__":
    main()
