"""Regenerate ``lighthouse.txt``: a short story, then a keeper's log of 360
days whose entries follow the seasons (storms from the north in autumn, calm
from the west in summer, ...), so a model can learn both the form of an
entry and how its parts go together. Deterministic; the output is shipped.
"""

import os
import random

SEASONS = [
    ("spring", ["south", "south west", "west"], ["grey", "rough", "calm"]),
    ("summer", ["west", "south west", "south"], ["calm", "flat", "calm"]),
    ("autumn", ["north", "north east", "north west"], ["high", "very high"]),
    ("winter", ["east", "north east", "east"], ["grey", "rough", "high"]),
]
NUMBERS = ["no", "one", "two", "three", "four", "five", "six"]


def entry(day, rng):
    season, winds, seas = SEASONS[(day - 1) // 90]
    wind = rng.choice(winds)
    sea = rng.choice(seas)
    rough = sea in ("high", "very high", "rough")
    strength = rng.choice(["strong", "gale"] if rough else ["light", "fresh"])
    ships = rng.randint(0, 2) if rough else rng.randint(2, 6)
    ship_word = NUMBERS[ships] + (" ship" if ships == 1 else " ships")
    lamp = (
        rng.choice(["lamp trimmed twice", "lamp trimmed all night"])
        if rough
        else "lamp clean"
    )
    return (
        f"Day {day}, {season}. Wind {strength} from the {wind}, sea {sea}, "
        f"{ship_word}, {lamp}."
    )


def main(path=None):
    here = os.path.dirname(os.path.abspath(__file__))
    path = path or os.path.join(here, "lighthouse.txt")
    story = open(os.path.join(here, "story.txt"), encoding="utf-8").read()
    rng = random.Random(2405)
    log = "\n".join(entry(day, rng) for day in range(1, 361))
    with open(path, "w", encoding="utf-8") as f:
        f.write(story.rstrip() + "\n\nThe log of the year.\n" + log + "\n")


if __name__ == "__main__":
    main()
