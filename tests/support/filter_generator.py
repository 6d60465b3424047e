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
        op, right = self.rng.choice(OPERATORS), self.operand()
        if "~" in op and "geoDistance" in left + right:
            # a distance's last digits come from the platform's libm (Go's in PocketBase):
            # its text form is not comparable across engines
            op = op.replace("!~", "<").replace("~", ">")
        return f"{left} {op} {right}"

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


# ------------------------------------------------------------------ whole list/view requests
# Relations of `search_dataset` that `expand` can follow (field or back-relation -> collection).
EXPAND_GRAPH: dict[str, dict[str, str]] = {
    "posts": {
        "author": "users",
        "tags": "tags",
        "vault": "vault",
        "comments_via_post": "comments",
        "comments(post)": "comments",  # the old back-relation syntax
    },
    "comments": {"post": "posts", "tags": "tags"},
    "tags": {"posts_via_tags": "posts", "comments_via_tags": "comments"},
    "users": {"posts_via_author": "posts", "profiles_via_user": "profiles"},
    "profiles": {"user": "users"},
    "vault": {"posts_via_vault": "posts"},
}
BAD_EXPANDS = ["title", "nope", "nope_via_post", "comments_via_body", "id", "tags_via_name"]
# Filter operands, sort fields and `fields` names of the other collections.
OTHER_FIELDS: dict[str, list[str]] = {
    "comments": [
        "body",
        "rating",
        "post",
        "flag",
        "tags",
        "tags:length",
        "post.title",
        "post.views",
        "post.author.name",
        "post.comments_via_post.rating",
        "tags.name",
        "tags.posts_via_tags.views",
    ],
    "tags": ["name", "weight", "posts_via_tags.title", "comments_via_tags.body", "name:lower"],
    "users": [
        "name",
        "email",
        "verified",
        "emailVisibility",
        "posts_via_author.views",
        "profiles_via_user.bio",
    ],
    "profiles": ["bio", "user", "user.name", "user.posts_via_author.title"],
    "vault": ["code", "posts_via_vault.title"],
}
# Identifiers a superuser may use and that compare awkwardly with fields of any type.
REQUEST_OPERANDS = [
    "@request.method",
    "@request.context",
    "@request.auth.email",  # not `.id`: each engine gives its superuser a random id
    "@request.auth.collectionName",
    "@request.auth.verified",
    "@request.query.page",
    "@request.query.nope",
    "@request.headers.x_probe",
    "@request.auth.nope",
    "@collection.comments.rating",
    "@collection.tags.name",
]
BACK_RELATION_OPERANDS = [
    "comments_via_post",
    "comments_via_post.id",
    "comments_via_post.post",
    "comments_via_post.tags",
    "comments_via_post.flag",
    "comments_via_post.tags:length",
    "author.profiles_via_user",
    "author.profiles_via_user.user",
    "tags.comments_via_tags.rating",
]
ANY_OPERATORS = [op for op in OPERATORS if op.startswith("?")]
BASES = ["posts"] * 10 + ["comments"] * 3 + ["tags"] * 2 + ["users", "profiles", "vault"]
IDS = {
    "posts": [f"p{n:014d}" for n in range(1, 10)],
    "comments": [f"c{n:014d}" for n in range(1, 6)],
    "tags": [f"t{n:014d}" for n in range(1, 6)],
    "users": [f"u{n:014d}" for n in range(1, 5)],
    "profiles": ["r00000000000001", "r00000000000002"],
    "vault": ["v00000000000001"],
}
MULTI_SORTS = [
    "tags.name",
    "-tags.weight",
    "comments_via_post.rating",
    "-author.posts_via_author.views",
]
# paging and `skipTotal` values that Go parses (or refuses) in its own way
ODD_NUMBERS = ["0", "-1", "+2", "1001", "abc", "2_0", "1.0", "\u0663", "99999999999999999999"]
BOOLS = ["1", "true", "0", "false", "t", "F", "TRUE", "tRuE", "yes", ""]
TEXT_FIELDS = {"posts": "title", "comments": "body", "tags": "name", "users": "name"}


class RequestGenerator:
    """Random but reproducible list and view requests over every collection of
    `search_dataset`: filters (`FilterGenerator`'s for posts, plus `@request.*` operands and
    back-relations under any-of operators for a superuser), sorts, paging, `skipTotal`,
    nested `expand` paths (relations, back-relations, invalid names, repeated prefixes) and
    `fields` (including `expand.*` paths and `:excerpt`).

        gen = RequestGenerator(seed=1, superuser=False)
        path, params = gen.request()   # ("/api/collections/posts/records", {"expand": ...})
    """

    def __init__(self, seed: int, *, superuser: bool):
        self.rng = random.Random(seed)
        self.superuser = superuser
        self.filters = FilterGenerator(seed + 1000, superuser_fields=superuser, same_data=False)

    def request(self) -> tuple[str, dict[str, str]]:
        base = self.rng.choice(BASES)
        params: dict[str, str] = {}
        if self.rng.random() < 0.6:
            params["expand"] = self.expand(base)
        if self.rng.random() < 0.4:
            params["fields"] = self.fields(base, params.get("expand", ""))
        if self.rng.random() < 0.15:
            rid = self.rng.choice(IDS[base])
            return f"/api/collections/{base}/records/{rid}", params
        if self.rng.random() < 0.7:
            params["filter"] = self.filter(base)
        if self.rng.random() < 0.9 or "filter" in params:
            # without a sort, rows come in the order of SQLite's plan, which joins change
            params["sort"] = self.sort(base)
        roll = self.rng.random()
        if roll < 0.45:
            params["perPage"] = self.rng.choice(["1", "2", "3", "5"])
            params["page"] = self.rng.choice(["1", "1", "2", "3", "9"])
        elif roll < 0.55:
            params["perPage"] = self.rng.choice([*ODD_NUMBERS, "2", "3"])
            params["page"] = self.rng.choice([*ODD_NUMBERS, "2"])
        else:
            params["perPage"] = "500"
        if self.rng.random() < 0.15:
            params["skipTotal"] = self.rng.choice(BOOLS)
        return f"/api/collections/{base}/records", params

    def filter(self, base: str) -> str:
        if base == "posts":
            text = self.filters.filter()
            if self.superuser and self.rng.random() < 0.35:
                text = f"({text}) {self.rng.choice(['&&', '||'])} {self.special_comparison()}"
            return text
        fields = OTHER_FIELDS[base]
        parts = []
        for _ in range(self.rng.choice([1, 1, 2])):
            op = self.rng.choice(OPERATORS)
            right = self.filters.literal() if self.rng.random() < 0.8 else self.rng.choice(fields)
            parts.append(f"{self.rng.choice(fields)} {op} {right}")
        return f" {self.rng.choice(['&&', '||'])} ".join(parts)

    def special_comparison(self) -> str:
        """A comparison of `@request.*` or a back-relation with a field of another type."""
        if self.rng.random() < 0.5:
            left = self.rng.choice(REQUEST_OPERANDS)
        else:
            left = self.rng.choice(BACK_RELATION_OPERANDS)
        ops = ANY_OPERATORS if self.rng.random() < 0.6 else OPERATORS
        right = self.rng.choice([*FIELDS, *BACK_RELATION_OPERANDS, *REQUEST_OPERANDS])
        if self.rng.random() < 0.3:
            right = self.filters.literal()
        pair = [left, right] if self.rng.random() < 0.7 else [right, left]
        return f"{pair[0]} {self.rng.choice(ops)} {pair[1]}"

    def sort(self, base: str) -> str:
        if base == "posts":
            if self.rng.random() < 0.3:  # a multi-valued join, maybe shared with the filter
                return f"{self.rng.choice(MULTI_SORTS)},{self.filters.sort()}"
            return self.filters.sort()
        fields = [f for f in OTHER_FIELDS[base] if "_via_" not in f and ":" not in f]
        chosen = self.rng.sample(fields, min(len(fields), self.rng.choice([0, 1, 1, 2])))
        return ",".join([*(self.rng.choice(["", "-"]) + f for f in chosen), "id"])

    def expand_path(self, base: str) -> str:
        parts: list[str] = []
        coll = base
        for _ in range(self.rng.choice([1, 1, 2, 2, 3, 4, 7])):  # 6 levels at most expand
            if self.rng.random() < 0.08:
                parts.append(self.rng.choice(BAD_EXPANDS))
                break
            name = self.rng.choice(sorted(EXPAND_GRAPH[coll]))
            parts.append(name)
            coll = EXPAND_GRAPH[coll][name]
        return ".".join(parts)

    def expand(self, base: str) -> str:
        paths = [self.expand_path(base) for _ in range(self.rng.choice([1, 1, 1, 2, 3]))]
        if len(paths) > 1 and self.rng.random() < 0.2:
            paths.append(paths[0].split(".")[0])  # a prefix of another path
        text = ",".join(paths)
        if self.rng.random() < 0.1:
            text = text.replace(",", " , ") + "."
        return text

    def fields(self, base: str, expand: str) -> str:
        names = ["id", "collectionName", *(f for f in OTHER_FIELDS.get(base, FIELDS[:12]))]
        names = [n for n in names if "." not in n and ":" not in n]
        chosen = self.rng.sample(names, min(len(names), self.rng.choice([1, 2, 3])))
        if self.rng.random() < 0.3:
            chosen.append("*")
        paths = [p for p in expand.replace(" ", "").split(",") if p]
        if paths and self.rng.random() < 0.7:
            path = self.rng.choice(paths).strip(".")
            tail = self.rng.choice(["", ".id", ".*", ".name", ".expand"])
            chosen.append(f"expand.{path}{tail}" if self.rng.random() < 0.7 else "expand")
        if base in TEXT_FIELDS and self.rng.random() < 0.2:
            chosen.append(f"{TEXT_FIELDS[base]}:excerpt({self.rng.choice([1, 3, 8])},true)")
        return ",".join(chosen)
