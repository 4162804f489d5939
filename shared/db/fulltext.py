"""Caption text as searchable text: Postgres full-text search, SQLite FTS5 in embedded mode.

Postgres: a GIN index on the expression `to_tsvector('english', text)` of `captions`; a query
uses the same expression so the planner takes the index. SQLite: an external-content FTS5 table
`captions_fts` (porter stemming, like Postgres' english configuration) kept in step with
`captions` by triggers. Both match ANY of the query's words and rank by the engine's relevance
(ts_rank_cd / bm25). The migrations create these objects (shared/db/migrations/versions/).
"""

from __future__ import annotations

import re

from sqlalchemy import text
from sqlalchemy.orm import Session

TS_CONFIG = "english"
FTS_TABLE = "captions_fts"  # SQLite: the FTS5 table (and the prefix of its shadow tables)
POSTGRES_FTS_INDEX = "ix_captions_text_fts"  # Postgres: the GIN index on the caption's tsvector
MAX_TERMS = 32

# the commonest English function words: they match nearly every caption and only add noise
STOP_WORDS = frozenset("""
a an and are as at be but by for from has have in into is it its of on or that the their
there these this to was were with while who which what where when his her he she they them
""".split())


def query_terms(query: str) -> list[str]:
    """The query's distinct lower-case words (letters and digits only), stop words dropped."""
    words = re.findall(r"[^\W_]+", query.lower())
    return list(dict.fromkeys(w for w in words if w not in STOP_WORDS))[:MAX_TERMS]


def match_captions(session: Session, query: str, limit: int) -> list[int]:
    """Ids of images whose caption matches any word of the query, best match first."""
    terms = query_terms(query)
    if not terms or limit < 1:
        return []
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        rows = session.execute(text(
            f"SELECT image_id, max(ts_rank_cd(to_tsvector('{TS_CONFIG}'::regconfig, text), q)) "
            f"AS rank FROM captions, to_tsquery('{TS_CONFIG}'::regconfig, :q) AS q "
            f"WHERE to_tsvector('{TS_CONFIG}'::regconfig, text) @@ q "
            "GROUP BY image_id ORDER BY rank DESC, image_id LIMIT :limit"),
            {"q": " | ".join(terms), "limit": limit})
    elif dialect == "sqlite":
        match = " OR ".join(f'"{t}"' for t in terms)  # quoted: never FTS5 query syntax
        # bm25() only works in the query that does the MATCH: rank there, group outside
        rows = session.execute(text(
            "SELECT c.image_id, min(m.score) AS rank FROM ("
            "SELECT rowid, bm25(captions_fts) AS score FROM captions_fts "
            "WHERE captions_fts MATCH :match ORDER BY score LIMIT :depth) AS m "
            "JOIN captions AS c ON c.id = m.rowid "
            "GROUP BY c.image_id ORDER BY rank, c.image_id LIMIT :limit"),
            {"match": match, "depth": limit * 4, "limit": limit})
    else:
        raise NotImplementedError(f"no full-text search for the {dialect} dialect")
    return [int(image_id) for image_id, _ in rows]

