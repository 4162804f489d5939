"""Pure ranking pieces of search: reciprocal rank fusion, date orders, opaque page cursors."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import datetime

from shared.errors import ValidationFailed


def reciprocal_rank_fusion(rankings: Sequence[Sequence[int]], weights: Sequence[float], *,
                           k: int = 60) -> list[int]:
    """Ids ordered by sum(weight / (k + rank)) over the rankings they appear in (rank 1 = best).

    Cormack, Clarke & Büttcher (2009): robust to the lists' incomparable score scales; ties keep
    the order of first appearance (so the first ranking breaks them)."""
    fused: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, item in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + weight / (k + rank)
    order = {item: pos for pos, item in enumerate(dict.fromkeys(
        item for ranking in rankings for item in ranking))}
    return sorted(fused, key=lambda item: (-fused[item], order[item]))


def newest_first(ids: Sequence[int], created: dict[int, datetime]) -> list[int]:
    """Ids by upload time, newest first; the newer id first on equal times."""
    return sorted(ids, key=lambda i: (created[i], i), reverse=True)


def newest_taken_first(ids: Sequence[int], taken: dict[int, datetime | None],
                       created: dict[int, datetime]) -> list[int]:
    """Ids by capture time, newest first; those without one after, newest upload first."""
    dated = [i for i in ids if taken[i] is not None]
    undated = [i for i in ids if taken[i] is None]
    return (sorted(dated, key=lambda i: (taken[i], i), reverse=True)
            + newest_first(undated, created))


def encode_cursor(offset: int, fingerprint: str) -> str:
    """An opaque cursor: where the next page starts, bound to the query that made it."""
    raw = json.dumps({"o": offset, "f": fingerprint}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, fingerprint: str) -> int:
    """The offset in a cursor made by `encode_cursor` for the same query, else 422."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        body = json.loads(base64.urlsafe_b64decode(padded.encode()))
        offset, made_for = body["o"], body["f"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise ValidationFailed("cursor: not a cursor this API made") from None
    if not isinstance(offset, int) or offset < 0:
        raise ValidationFailed("cursor: not a cursor this API made")
    if made_for != fingerprint:
        raise ValidationFailed("cursor: it belongs to a different query, sort or filters")
    return offset
