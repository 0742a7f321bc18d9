"""IOB tag sequences: IOB1 -> IOB2 conversion, the tag set, and entity spans.

IOB1 (CoNLL-2003, wikigold) opens an entity with I-X and uses B-X only between two adjacent entities of
type X; IOB2 opens every entity with B-X. A valid IOB2 sequence is its own conversion, so both schemes go
through `to_iob2` (Tjong Kim Sang & Veenstra, 1999, "Representing Text Chunks").
"""

from collections.abc import Sequence

from sslflow.errors import SslflowError


def is_tag(tag: str) -> bool:
    return tag == "O" or (len(tag) > 2 and tag[:2] in ("B-", "I-"))


def to_iob2(tags: Sequence[str]) -> list[str]:
    """An I-X that does not continue an entity of type X opens one: it becomes B-X."""
    out = []
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            tag = "B-" + tag[2:]
        out.append(tag)
        previous = tag
    return out


def tag_set(sentences_tags: Sequence[Sequence[str]]) -> list[str]:
    """ "O", then B-X and I-X for each entity type X in sorted order: index = label id."""
    types = sorted({t[2:] for tags in sentences_tags for t in tags if t != "O"})
    return ["O"] + [f"{p}-{x}" for x in types for p in ("B", "I")]


def spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, first, end) word ranges of the entities in an IOB2 sequence, end exclusive; an I-X that
    does not continue an X entity opens one, as in to_iob2."""
    found: list[list] = []
    for i, tag in enumerate(tags):
        if tag == "O":
            continue
        kind = tag[2:]
        if tag.startswith("I-") and found and found[-1][0] == kind and found[-1][2] == i:
            found[-1][2] = i + 1
        else:
            found.append([kind, i, i + 1])
    return [tuple(f) for f in found]


def check_seen(train_tags: Sequence[Sequence[str]], test_tags: Sequence[Sequence[str]]) -> None:
    """Every entity type in the test split must occur in train: a model cannot learn a type it never sees."""
    seen = {t[2:] for tags in train_tags for t in tags if t != "O"}
    unseen = sorted({t[2:] for tags in test_tags for t in tags if t != "O"} - seen)
    if unseen:
        raise SslflowError(
            f"entity type(s) {unseen} occur in the test split but not in the training split; "
            "add training sentences with them or change text.preprocess.split_seed / test_fraction"
        )
