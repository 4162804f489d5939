"""Caption text as searchable text: Postgres full-text search, SQLite FTS5 in embedded mode.

Postgres: a GIN index on the expression `to_tsvector('english', text)` of `captions`; a query
uses the same expression so the planner takes the index. SQLite: an external-content FTS5 table
`captions_fts` (porter stemming, like Postgres' english configuration) kept in step with
`captions` by triggers. Both match ANY of the query's words and rank by the engine's relevance
(ts_rank_cd / bm25); `ensure_fulltext` creates what is missing and is safe to run again.
"""

from __future__ import annotations

import re

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

TS_CONFIG = "english"
MAX_TERMS = 32

# the commonest English function words: they match nearly every caption and only add noise
STOP_WORDS = frozenset("""
a an and are as at be but by for from has have in into is it its of on or that the their
there these this to was were with while who which what where when his her he she they them
""".split())

_POSTGRES_DDL = (
    f"CREATE INDEX IF NOT EXISTS ix_captions_text_fts ON captions "
    f"USING gin (to_tsvector('{TS_CONFIG}'::regconfig, text))",
)

_SQLITE_DDL = (
    "CREATE VIRTUAL TABLE captions_fts USING fts5("
    "text, content='captions', content_rowid='id', tokenize='porter unicode61')",
    "CREATE TRIGGER IF NOT EXISTS captions_fts_ai AFTER INSERT ON captions BEGIN "
    "INSERT INTO captions_fts(rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER IF NOT EXISTS captions_fts_ad AFTER DELETE ON captions BEGIN "
    "INSERT INTO captions_fts(captions_fts, rowid, text) VALUES ('delete', old.id, old.text); "
    "END",
    "CREATE TRIGGER IF NOT EXISTS captions_fts_au AFTER UPDATE ON captions BEGIN "
    "INSERT INTO captions_fts(captions_fts, rowid, text) VALUES ('delete', old.id, old.text); "
    "INSERT INTO captions_fts(rowid, text) VALUES (new.id, new.text); END",
    # index the captions written before the table existed
    "INSERT INTO captions_fts(captions_fts) VALUES ('rebuild')",
)


def ensure_fulltext(conn: Connection) -> None:
    """Create the full-text index of caption text if it is missing (idempotent)."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        for ddl in _POSTGRES_DDL:
            conn.execute(text(ddl))
    elif dialect == "sqlite":
        exists = conn.execute(text(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'captions_fts'")).first()
        if exists is None:
            for ddl in _SQLITE_DDL:
                conn.execute(text(ddl))


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

