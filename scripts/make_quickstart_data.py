#!/usr/bin/env python3
"""Writes the quickstart data set: one-sentence event notes -> a compact JSON object.

    python3 scripts/make_quickstart_data.py        # -> data/quickstart/{train,valid,test}.jsonl

Standard library only, fixed seed: the output is the same on every run. Names, places and two of
the sentence templates appear only in valid/test, so the held-out answers show generalisation,
not memorisation. Everything here was written for this project.
"""
import json
import os
import random

SEED = 5
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "quickstart")

TRAIN_NAMES = ["Maria", "Tom", "Aisha", "Lukas", "Priya", "Daniel", "Sofia", "Kenji", "Emma", "Omar", "Lena",
               "Carlos", "Hannah", "Ravi", "Chloe", "Mateo", "Ingrid", "Samuel", "Yuki", "Fatima", "Jonas",
               "Grace", "Pedro", "Nadia", "Oliver", "Mei", "Felix", "Zara", "Hugo", "Amara", "Leo", "Elif"]
HELD_NAMES = ["Beatriz", "Tariq", "Greta", "Nikolai", "Imani", "Rafael", "Astrid", "Kwame", "Lucia", "Dmitri",
              "Noor", "Sven"]

TRAIN_PLACES = ["Café Roma", "the library", "Central Park", "the office", "Luigi's Pizzeria", "the gym",
                "Room 204", "the train station", "Blue Door Bakery", "the town hall", "Green Leaf Café",
                "the community center", "Harbor Books", "the dentist's office", "Maple Street Clinic",
                "the old bridge", "Sunrise Yoga Studio", "the museum entrance", "Pine Hill School", "the main hall",
                "Corner Bistro", "the lab", "Riverside Park", "the cinema"]
HELD_PLACES = ["Olive Tree Diner", "the north gate", "Willow Lane Pool", "the city archive", "Hotel Aurora",
               "Lakeside Pavilion", "the staff kitchen", "Copper Kettle Tea Room", "the science building",
               "Bayview Market"]

# Activities with a person ("{n}" is the name) and without one.
WITH_PERSON = ["lunch with {n}", "coffee with {n}", "dinner with {n}", "a call with {n}", "a meeting with {n}",
               "breakfast with {n}", "a walk with {n}", "tennis with {n}", "a study session with {n}",
               "a chess game with {n}", "drinks with {n}", "a review with {n}"]
ALONE = ["a dentist appointment", "yoga class", "book club", "a piano lesson", "a haircut", "the team standup",
         "football practice", "a job interview", "a doctor's appointment", "pottery class", "band rehearsal",
         "parents' evening", "the car service", "a swimming lesson", "language exchange", "board game night"]
# Plausible hours (24-hour clock) for the meals; anything else is 7:00-21:45.
HOURS = {"breakfast": range(7, 10), "lunch": range(11, 14), "dinner": range(18, 21), "drinks": range(17, 22)}

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def say_time(h, m, rng):
    """A spoken form of h:m (24-hour clock in) and its canonical 12-hour form, e.g. "6:30 pm"."""
    h12 = h % 12 or 12
    ampm = "am" if h < 12 else "pm"
    canon = f"{h12}:{m:02d} {ampm}"
    # The spoken forms ("noon", "half past", "quarter past") are the hard part: give them weight.
    if (h, m) == (12, 0) and rng.random() < 0.6:
        return "noon", canon
    if m in (15, 30) and rng.random() < 0.5:
        return f"{'half' if m == 30 else 'quarter'} past {h12} {ampm}", canon
    mm = f":{m:02d}" if m else ""
    forms = [f"{h12}{mm} {ampm}", f"{h12}{mm}{ampm}", f"{h12}{mm} {ampm[0]}.m."]
    if 7 <= h <= 10:
        forms.append(f"{h12}{mm} in the morning")
    if 18 <= h <= 21:
        forms.append(f"{h12}{mm} in the evening")
    return rng.choice(forms), canon


def say_day(day, rng):
    return rng.choice([f"on {day}", f"on {day}", f"this {day}"])


def cap(s):
    return s[0].upper() + s[1:]


# Templates: (text, needs place, needs time). {w} what, {d} day phrase, {t} time, {p} place.
TRAIN_TEMPLATES = [
    ("{W} at {p} {d} at {t}.", True, True),
    ("{W} {d} at {t} at {p}.", True, True),
    ("Remind me: {w} at {p}, {d}, {t}.", True, True),
    ("I have {w} at {p} {d} at {t}.", True, True),
    ("Don't forget {w} {d} at {t}, {p}.", True, True),
    ("Booked {w} at {p} for {t} {d}.", True, True),
    ("{W} {d} at {t}.", False, True),
    ("Put {w} in my calendar {d} at {t}.", False, True),
    ("{W} at {p} {d}.", True, False),
    ("Note: {w} {d}, at {p}.", True, False),
]
HELD_TEMPLATES = [
    ("Can you add {w} at {p} {d} at {t}?", True, True),
    ("Heads up, {w} is at {t} {d} at {p}.", True, True),
]


def row(rng, names, places, templates):
    tmpl, has_place, has_time = rng.choice(templates)
    if rng.random() < 0.6:
        what = rng.choice(WITH_PERSON).format(n=rng.choice(names))
    else:
        what = rng.choice(ALONE)
    day = rng.choice(DAYS)
    place = rng.choice(places) if has_place else None
    time_text, time = (None, None)
    if has_time:
        h = rng.choice(HOURS.get(what.split()[0], range(7, 22)))
        m = rng.choice([0, 0, 15, 15, 30, 30, 45])
        if rng.random() < 0.12 and what.split()[0] not in ("breakfast", "dinner", "drinks"):
            h, m = 12, 0
        time_text, time = say_time(h, m, rng)
    # The JSON "what" drops a leading article ("a call with Tom" -> "call with Tom").
    canon_what = what.split(" ", 1)[1] if what.split()[0] in ("a", "the") else what
    text = tmpl.format(W=cap(what), w=what, d=say_day(day, rng), t=time_text, p=place).replace("..", ".")
    answer = {"what": canon_what, "day": day, "time": time, "place": place}
    return text, json.dumps(answer, ensure_ascii=False)


def make(rng, count, names, places, templates, seen):
    rows = []
    while len(rows) < count:
        text, answer = row(rng, names, places, templates)
        if text in seen:
            continue
        seen.add(text)
        rows.append({"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]})
    return rows


def main():
    rng = random.Random(SEED)
    seen = set()
    train = make(rng, 480, TRAIN_NAMES, TRAIN_PLACES, TRAIN_TEMPLATES, seen)
    # Held-out rows: only unseen names and places; half of them also in unseen sentence templates.
    held = make(rng, 70, HELD_NAMES, HELD_PLACES, TRAIN_TEMPLATES + HELD_TEMPLATES * 5, seen)
    valid, test = held[:50], held[50:]
    os.makedirs(OUT, exist_ok=True)
    for name, rows in [("train", train), ("valid", valid), ("test", test)]:
        with open(os.path.join(OUT, name + ".jsonl"), "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        print(f"{name}: {len(rows)} rows")


if __name__ == "__main__":
    main()
