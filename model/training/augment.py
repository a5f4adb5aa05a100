"""Short synthetic reviews that only word order can label: negation, contrast, intensity.

IMDB reviews rarely hinge on one negated phrase, so a model trained on them alone learns "bad" => negative and
reads "not bad" as a bag of words does. These sentences are mixed into every training epoch (a fresh, seeded
sample each time) so the LSTM sees negators (not, n't, never, hardly, far from, no one, nothing) flip a polarity
and "but"/"although" move the weight to the other clause.

The behavioural probes in `model/probes.json` that measure this are written with other sentence frames than the
ones here, so their pass rates say how far the lesson generalises rather than whether it was memorised.
"""

from __future__ import annotations

import math
import random

POSITIVE = ("good great excellent wonderful brilliant superb enjoyable entertaining funny charming beautiful moving "
            "impressive clever gripping engaging delightful fantastic amazing memorable touching fascinating "
            "powerful compelling hilarious likeable watchable fresh original perfect").split()
NEGATIVE = ("bad terrible awful boring dull weak poor horrible stupid pointless tedious bland mediocre disappointing "
            "painful annoying predictable lame forgettable messy unwatchable silly clumsy lifeless dreadful "
            "pathetic awkward confusing flat cheap wrong").split()
SUBJECTS = (("the movie", False), ("this film", False), ("the picture", False), ("the acting", False),
            ("the plot", False), ("the script", False), ("the story", False), ("the cast", False),
            ("the ending", False), ("the direction", False), ("the dialogue", False), ("the soundtrack", False),
            ("the lead performance", False), ("the cinematography", False), ("the screenplay", False),
            ("this sequel", False), ("the remake", False), ("it", False), ("the characters", True),
            ("the jokes", True), ("the performances", True), ("the effects", True))
INTENSIFIERS = "very really truly incredibly extremely so remarkably thoroughly".split()
VERBS = {1: [("love", "loved"), ("enjoy", "enjoyed"), ("like", "liked"), ("adore", "adored"),
             ("admire", "admired"), ("appreciate", "appreciated")],
         0: [("hate", "hated"), ("dislike", "disliked"), ("despise", "despised"), ("regret", "regretted")]}
OBJECTS = ("it", "this movie", "the film", "the story", "this one")
STATES = {1: "impressed moved entertained amused thrilled satisfied".split(),
          0: "bored disappointed annoyed confused irritated".split()}


def _be(plural: bool, past: bool, negated: str = "") -> str:
    word = ("were" if plural else "was") if past else ("are" if plural else "is")
    return word + negated


def _adjective(rng: random.Random, label: int) -> str:
    return rng.choice(POSITIVE if label else NEGATIVE)


def _finish(text: str) -> str:
    return text[0].upper() + text[1:]


def _plain(rng: random.Random, label: int) -> tuple[str, int]:
    s, plural = rng.choice(SUBJECTS)
    adj = _adjective(rng, label)
    if rng.random() < 0.5:
        return _finish(f"{s} {_be(plural, rng.random() < 0.5)} {rng.choice(INTENSIFIERS)} {adj}."), label
    return _finish(f"{s} {_be(plural, rng.random() < 0.5)} {adj}."), label


def _negated(rng: random.Random, label: int) -> tuple[str, int]:
    """A sentence whose polarity is `label` although its sentiment word has the other one."""
    s, plural = rng.choice(SUBJECTS)
    adj = _adjective(rng, 1 - label)
    past = rng.random() < 0.5
    be = _be(plural, past)
    contracted = _be(plural, past, "n’t" if rng.random() < 0.2 else "n't")
    frames = [f"{s} {be} not {adj}.", f"{s} {contracted} {adj}.",
              f"{s} {be} not {adj} at all.", f"{s} {be} never {adj}.", f"{s} {be} hardly {adj}.",
              f"{s} {be} far from {adj}.", f"I would not say {s} {be} {adj}.", f"I don't think {s} {be} {adj}.",
              f"no one could call {s} {adj}.", f"nobody would say {s} {be} {adj}.",
              f"there is nothing {adj} about {s}.", f"not {adj} at all.", f"never {adj}.",
              f"{s} {be} not {adj}, not even for a minute."]
    if label == 0:  # "not very bad" is not clearly positive, so weakened negation only flips praise
        frames.append(f"{s} {be} not very {adj}.")
    return _finish(rng.choice(frames)), label


def _verb(rng: random.Random, label: int) -> tuple[str, int]:
    base, past = rng.choice(VERBS[1 - label])
    obj = rng.choice(OBJECTS)
    state = rng.choice(STATES[1 - label])
    frames = [f"I did not {base} {obj}.", f"I didn't {base} {obj}.", f"I never {past} {obj}.",
              f"I was never {state}.", f"I was not {state} by {obj}.", f"at no point was I {state}."]
    if rng.random() < 0.3:  # the affirmative form too, so negation is what flips, not the frame
        _, affirmed = rng.choice(VERBS[label])
        return _finish(rng.choice([f"I {affirmed} {obj}.", f"I was {rng.choice(STATES[label])}."])), label
    return _finish(rng.choice(frames)), label


def _contrast(rng: random.Random, label: int) -> tuple[str, int]:
    """Two clauses of opposite polarity; the one after "but" (or the main clause after "although") decides."""
    (s1, p1), (s2, p2) = rng.sample(SUBJECTS, 2)
    past = rng.random() < 0.5
    first, second = _adjective(rng, 1 - label), _adjective(rng, label)
    frames = [f"{s1} {_be(p1, past)} {first}, but {s2} {_be(p2, past)} {second}.",
              f"although {s1} {_be(p1, past)} {first}, {s2} {_be(p2, past)} {second}.",
              f"{s1} {_be(p1, past)} {first}; however, {s2} {_be(p2, past)} {second}.",
              f"{s2} {_be(p2, past)} {second} even though {s1} {_be(p1, past)} {first}.",
              f"{s1} {_be(p1, past)} {first}, yet overall it {_be(False, past)} {second}."]
    return _finish(rng.choice(frames)), label


KINDS = ((_plain, 0.2), (_negated, 0.4), (_verb, 0.15), (_contrast, 0.25))


def synthetic_reviews(n: int, seed: int) -> tuple[list[str], list[int]]:
    """`n` seeded sentences and their labels, classes balanced."""
    rng = random.Random(seed)
    kinds, weights = zip(*KINDS)
    texts, labels = [], []
    for i in range(n):
        text, label = rng.choices(kinds, weights)[0](rng, i % 2)
        texts.append(text)
        labels.append(label)
    return texts, labels


# Graded sentences for the distillation stage: soft targets that rise with the strength of the wording, so the
# model learns that "absolutely superb" is surer than "fairly decent" (hard 0/1 labels teach only the sign).
# A tier is a logit; a qualifier scales it. The frames differ from the probes' (`model/probes.json`).
TIERS = {3.0: "superb brilliant outstanding masterful magnificent extraordinary wonderful exceptional".split(),
         1.2: "decent nice pleasant fine watchable agreeable amusing passable solid".split(),
         -1.2: "mediocre uneven bland flat forgettable slow underwhelming lacklustre".split(),
         -3.0: "atrocious abysmal dreadful awful horrendous unbearable appalling execrable".split()}
QUALIFIERS = ((0.5, "fairly {}"), (0.5, "somewhat {}"), (0.5, "mildly {}"), (0.6, "reasonably {}"),
              (0.5, "a little {}"), (0.6, "{} at times"), (0.6, "{} in parts"), (0.5, "{} now and then"),
              (1.0, "{} overall"), (1.0, "{} on the whole"), (1.4, "utterly {}"), (1.4, "absolutely {}"),
              (1.4, "truly {}"),
              (1.4, "{} in every way"), (1.5, "{} from the first scene to the last"), (1.4, "{} all the way through"))


def graded_reviews(n: int, seed: int) -> tuple[list[str], list[float]]:
    """`n` seeded sentences "<subject> was <qualified adjective>." and a soft target sigmoid(tier x qualifier)."""
    rng = random.Random(seed)
    tiers = list(TIERS)
    texts, targets = [], []
    for i in range(n):
        level = rng.choice([t for t in tiers if (t > 0) == (i % 2 == 1)])
        scale, frame = rng.choice(QUALIFIERS)
        s, plural = rng.choice(SUBJECTS)
        phrase = frame.format(rng.choice(TIERS[level]))
        texts.append(_finish(f"{s} {_be(plural, rng.random() < 0.5)} {phrase}."))
        targets.append(1.0 / (1.0 + math.exp(-level * scale)))
    return texts, targets
