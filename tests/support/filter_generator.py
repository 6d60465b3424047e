"""Random but reproducible filters and sorts over `search_dataset`'s `posts` collection.

    gen = FilterGenerator(seed=7)
    gen.filter()   # e.g. "(tags.name ?~ 'py' || views >= 10) && meta.a != null"
    gen.sort()     # e.g. "-author.name,views,id"

Operands mix plain fields, relation paths (single, multiple, back-relations), JSON paths,
modifiers, macros, literals of every kind (awkward texts included), `geoDistance` and
`strftime`; sorts always end with `id` so that both engines order ties alike.
"""

from __future__ import annotations

import random

FIELDS = [
    "id",
    "title",
    "views",
    "published",
    "author",
    "tags",
    "category",
    "labels",
    "meta",
    "publishedAt",
    "created",
    "location.lon",
    "location.lat",
    "author.name",
    "author.email",
    "author.verified",
    "author.id",
    "tags.name",
    "tags.weight",
    "tags.id",
    "tags:length",
    "tags:each",
    "labels:each",
    "labels:length",
    "title:lower",
    "author.name:lower",
    "tags.name:lower",
    "meta.a",
    "meta.b.c",
    "meta.arr.1",
    "meta.missing",
    "comments_via_post.rating",
    "comments_via_post.body",
    "comments_via_post.tags.name",
    "author.profiles_via_user.bio",
    "author.posts_via_author.views",
    "@collection.tags.name",
    "@collection.tags:t2.weight",
    "@collection.comments.post",
]
SUPERUSER_ONLY_FIELDS = ["secretNote", "vault.code", "vault"]
TEXTS = [
    "",
    "hello",
    "Hello World",
    "python",
    "py",
    "%",
    "_",
    "100%",
    "sure_thing",
    "x",
    "y",
    "a",
    "b",
    "deep",
    "null",
    "'quote'",
    '"dq"',
    "back\\slash",
    "Ünï",
    "alice",
    "%o%",
    "t00000000000001",
    "u00000000000001",
    "p00000000000001",
    "2024-01-01",
    "  spaced  ",
]
NUMBERS = ["0", "1", "-1", "2", "3", "5", "7.5", "10", "100", "-5.5", "1000000", "42.69"]
IDENTS = ["true", "false", "null", "@now", "@todayStart", "@yearEnd", "@year", "@month"]
OPERATORS = [
    "=",
    "!=",
    ">",
    ">=",
    "<",
    "<=",
    "~",
    "!~",
    "?=",
    "?!=",
    "?>",
    "?>=",
    "?<",
    "?<=",
    "?~",
    "?!~",
]
SORT_FIELDS = [
    "title",
    "views",
    "published",
    "author",
    "category",
    "publishedAt",
    "meta.a",
    "author.name",
    "title:lower",
    "tags:length",
    "@rowid",
    "location.lat",
    "labels",
]


def quote_text(value: str, quote: str) -> str:
    escaped = value.replace("\\", "\\\\").replace(quote, "\\" + quote)
    return f"{quote}{escaped}{quote}"


TIME_DEPENDENT = ("created", "updated")  # set by each engine at insert time


class FilterGenerator:
    """`same_data=False` leaves out what differs between two engines loaded with the same
    dataset (autodate values), for comparisons across engines."""

    def __init__(self, seed: int, *, superuser_fields: bool = True, same_data: bool = True):
        self.rng = random.Random(seed)
        self.fields = FIELDS + (SUPERUSER_ONLY_FIELDS if superuser_fields else [])
        self.time_values = ["created", "publishedAt", "tags.created"]
        if not same_data:
            self.fields = [f for f in self.fields if not f.endswith(TIME_DEPENDENT)]
            self.time_values = ["publishedAt", "'2024-01-02 10:00:00'"]

    def literal(self) -> str:
        kind = self.rng.random()
        if kind < 0.5:
            return quote_text(self.rng.choice(TEXTS), self.rng.choice("'\""))
        if kind < 0.8:
            return self.rng.choice(NUMBERS)
        return self.rng.choice(IDENTS)

    def operand(self) -> str:
        kind = self.rng.random()
        if kind < 0.6:
            return self.rng.choice(self.fields)
        if kind < 0.94:
            return self.literal()
        if kind < 0.97:
            lon, lat = self.rng.choice([("23.3", "42.7"), ("0", "0"), ("-0.1", "51.5")])
            return f"geoDistance(location.lon, location.lat, {lon}, {lat})"
        fmt = self.rng.choice(["'%Y'", "'%Y-%m'", "'%m'"])
        return f"strftime({fmt}, {self.rng.choice(self.time_values)})"

    def comparison(self) -> str:
        left = self.rng.choice(self.fields) if self.rng.random() < 0.85 else self.operand()
        return f"{left} {self.rng.choice(OPERATORS)} {self.operand()}"

    def filter(self, depth: int = 0) -> str:
        parts = [self.comparison()]
        for _ in range(self.rng.choice([0, 0, 1, 1, 2])):
            join = self.rng.choice(["&&", "||"])
            if depth < 2 and self.rng.random() < 0.3:
                parts.append(f"{join} ({self.filter(depth + 1)})")
            else:
                parts.append(f"{join} {self.comparison()}")
        return " ".join(parts)

    def sort(self) -> str:
        fields = self.rng.sample(SORT_FIELDS, self.rng.choice([1, 1, 2, 3]))
        items = [self.rng.choice(["", "-", "+"]) + f for f in fields]
        return ",".join([*items, "id"])
