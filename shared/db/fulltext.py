"""Caption text and text read in photos as searchable text: Postgres full-text search, SQLite
FTS5 in embedded mode.

Postgres: a GIN index on the expression `to_tsvector('english', text)` of `captions`; a query
uses the same expression so the planner takes the index. SQLite: an external-content FTS5 table
`captions_fts` (porter stemming, like Postgres' english configuration) kept in step with
`captions` by triggers. Both match ANY of the query's words and rank by the engine's relevance
(ts_rank_cd / bm25). The migrations create these objects (shared/db/migrations/versions/).

Text read in photos (`image_texts`, shared/db/texts.py) is searched the same two ways, on its
`words` column (GIN index `ix_image_texts_words_fts`; FTS5 table `image_texts_fts`), but a
photo must hold EVERY word of the query: it is fused into every search by default, so it
has to be precise (a sign sharing one common word with the query is no evidence). Signs
split and join words unpredictably ("KINGS CROSS", "KINGSCROSS"), so the document also holds
each pair of neighbouring words joined, and each query word may also match joined with its
neighbour: "kings cross" and "kingscross" find both signs.
"""

from __future__ import annotations

import re
import unicodedata
from itertools import pairwise

from sqlalchemy import text
from sqlalchemy.orm import Session

TS_CONFIG = "english"
FTS_TABLE = "captions_fts"  # SQLite: the FTS5 table (and the prefix of its shadow tables)
POSTGRES_FTS_INDEX = "ix_captions_text_fts"  # Postgres: the GIN index on the caption's tsvector
MAX_TERMS = 32
OCR_FTS_TABLE = "image_texts_fts"  # SQLite: the FTS5 table over image_texts.words
POSTGRES_OCR_FTS_INDEX = "ix_image_texts_words_fts"  # Postgres: the GIN index on its tsvector

# the commonest English function words: they match nearly every caption and only add noise
STOP_WORDS = frozenset("""
a an and are as at be but by for from has have in into is it its of on or that the their
there these this to was were with while who which what where when his her he she they them
""".split())


def _dialect(session: Session) -> str:
    """The session's dialect: "postgresql" or "sqlite", the two with full-text search here."""
    dialect = session.get_bind().dialect.name
    if dialect not in ("postgresql", "sqlite"):
        raise NotImplementedError(f"no full-text search for the {dialect} dialect")
    return dialect


def _postgres_ranking(table: str, column: str, *, per_image: bool) -> str:
    """Postgres: (image_id, rank) of the rows of `table` whose `column` matches the tsquery
    `:q`, best first, at most `:limit`; `per_image`: an image's best row (several per image).
    The tsvector expression is the one the GIN index is on, so the planner takes the index."""
    tsvector = f"to_tsvector('{TS_CONFIG}'::regconfig, {column})"
    rank = f"max(ts_rank_cd({tsvector}, q))" if per_image else f"ts_rank_cd({tsvector}, q)"
    return (f"SELECT image_id, {rank} "
            f"AS rank FROM {table}, to_tsquery('{TS_CONFIG}'::regconfig, :q) AS q "
            f"WHERE {tsvector} @@ q "
            f"{'GROUP BY image_id ' if per_image else ''}ORDER BY rank DESC, image_id LIMIT :limit")


def query_terms(query: str) -> list[str]:
    """The query's distinct lower-case words (letters and digits only), stop words dropped."""
    words = re.findall(r"[^\W_]+", query.lower())
    return list(dict.fromkeys(w for w in words if w not in STOP_WORDS))[:MAX_TERMS]


def match_captions(session: Session, query: str, limit: int) -> list[int]:
    """Ids of images whose caption matches any word of the query, best match first."""
    terms = query_terms(query)
    if not terms or limit < 1:
        return []
    if _dialect(session) == "postgresql":
        rows = session.execute(text(_postgres_ranking("captions", "text", per_image=True)),
                               {"q": " | ".join(terms), "limit": limit})
    else:
        match = " OR ".join(f'"{t}"' for t in terms)  # quoted: never FTS5 query syntax
        # bm25() only works in the query that does the MATCH: rank there, group outside
        rows = session.execute(text(
            "SELECT c.image_id, min(m.score) AS rank FROM ("
            "SELECT rowid, bm25(captions_fts) AS score FROM captions_fts "
            "WHERE captions_fts MATCH :match ORDER BY score LIMIT :depth) AS m "
            "JOIN captions AS c ON c.id = m.rowid "
            "GROUP BY c.image_id ORDER BY rank, c.image_id LIMIT :limit"),
            {"match": match, "depth": limit * 4, "limit": limit})
    return [int(image_id) for image_id, _ in rows]



def _words(text: str) -> list[str]:
    return re.findall(r"[^\W_]+", unicodedata.normalize("NFKC", text).lower())


def photo_text_document(text: str) -> str:
    """What full-text search matches for a photo's text (lines separated by newlines): its
    words, then each pair of neighbours on one line joined ("KINGS CROSS" adds "kingscross")."""
    words: list[str] = []
    joined: list[str] = []
    for line in text.splitlines():
        line_words = _words(line)
        words += line_words
        joined += [a + b for a, b in pairwise(line_words)]
    return " ".join(words + joined)


def photo_text_terms(query: str) -> list[list[str]]:
    """One group per query word: the word itself or the word joined with a neighbour. A photo
    matches when each group has a member in its document."""
    terms = query_terms(unicodedata.normalize("NFKC", query))
    groups = []
    for i, term in enumerate(terms):
        group = [term]
        if i > 0:
            group.append(terms[i - 1] + term)
        if i + 1 < len(terms):
            group.append(term + terms[i + 1])
        groups.append(group)
    return groups


def match_photo_text(session: Session, query: str, limit: int) -> list[int]:
    """Ids of images whose recognised text holds every word of the query, best match first."""
    groups = photo_text_terms(query)
    if not groups or limit < 1:
        return []
    if _dialect(session) == "postgresql":
        tsquery = " & ".join("(" + " | ".join(group) + ")" for group in groups)
        rows = session.execute(text(_postgres_ranking("image_texts", "words", per_image=False)),
                               {"q": tsquery, "limit": limit})
    else:
        match = " AND ".join("(" + " OR ".join(f'"{t}"' for t in group) + ")"
                             for group in groups)  # quoted: never FTS5 query syntax
        rows = session.execute(text(
            f"SELECT rowid, bm25({OCR_FTS_TABLE}) AS rank FROM {OCR_FTS_TABLE} "
            f"WHERE {OCR_FTS_TABLE} MATCH :match ORDER BY rank, rowid LIMIT :limit"),
            {"match": match, "limit": limit})
    return [int(image_id) for image_id, _ in rows]
