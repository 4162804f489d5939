"""The search service against Postgres: start-up load, rebuild and memory at N vectors.

    python bench/index_load_bench.py --n 1000000 [--json]

Creates a scratch database (`capsearch_bench_<random>` on --admin-url), writes N image rows
and N caption vectors by COPY, then times `IndexService.load()` with no version (exact),
`rebuild()` (fit + memberships + swap), and a fresh replica's `load()` of that IVF version,
with the process's resident memory against the raw float32 vector bytes. Drops the database.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psutil
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_bench import embedding_like  # noqa: E402

from services.search.pgcopy import _HEADER, _TRAILER  # noqa: E402
from services.search.service import IndexService  # noqa: E402
from shared.config import IndexSettings, Settings  # noqa: E402
from shared.db import EmbeddingKind, make_engine, make_session_factory  # noqa: E402
from shared.db.migrate import upgrade  # noqa: E402

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


def fill(url: str, x: np.ndarray, model: str) -> None:
    """N image rows (text COPY) and N embeddings (binary COPY) in a few seconds."""
    n, dim = x.shape
    engine = make_engine(url)
    upgrade(engine)
    now = datetime.now(UTC)
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        lines = "".join(f"{i}\t{i:064x}\t{i}.jpg\tbench\tjpeg\t8\t8\t1\tindexed\t0\t{now}\t{now}\n"
                        for i in range(1, n + 1))
        cur.copy_expert("COPY images (id, sha256, filename, source, format, width, height, "
                        "size_bytes, status, attempts, created_at, updated_at) FROM STDIN",
                        io.StringIO(lines))
        kind, mdl = EmbeddingKind.caption.value.encode(), model.encode()
        dtype = np.dtype([("n", ">i2"), ("l1", ">i4"), ("id", ">i8"), ("l2", ">i4"),
                          ("kind", f"S{len(kind)}"), ("l3", ">i4"), ("model", f"S{len(mdl)}"),
                          ("l4", ">i4"), ("dim", ">i4"), ("l5", ">i4"), ("v", "<f4", (dim,)),
                          ("l6", ">i4"), ("ts", ">i8")])
        rows = np.empty(n, dtype=dtype)
        rows["n"], rows["l1"], rows["id"] = 6, 8, np.arange(1, n + 1)
        rows["l2"], rows["kind"], rows["l3"], rows["model"] = len(kind), kind, len(mdl), mdl
        rows["l4"], rows["dim"], rows["l5"], rows["v"] = 4, dim, 4 * dim, x
        rows["l6"], rows["ts"] = 8, int((now - PG_EPOCH).total_seconds() * 1e6)
        cur.copy_expert("COPY embeddings (image_id, kind, model, dim, vector, created_at) "
                        "FROM STDIN (FORMAT binary)",
                        io.BytesIO(_HEADER + rows.tobytes() + _TRAILER))
        del rows
        cur.execute("SELECT setval(pg_get_serial_sequence('images', 'id'), %s)", (n,))
        raw.commit()
    finally:
        raw.close()
        engine.dispose()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--admin-url", default="postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--storage", choices=["float32", "float16"], default="float32")
    p.add_argument("--json", action="store_true")
    p.add_argument("--replica", help=argparse.SUPPRESS)  # internal: load from this URL
    args = p.parse_args()
    if args.replica:
        settings = Settings(database_url=args.replica,
                            index=IndexSettings(storage=args.storage))
        engine = make_engine(args.replica)
        base = rss()
        t0 = time.perf_counter()
        service = IndexService(settings, make_session_factory(engine))
        service.load()
        load_s = time.perf_counter() - t0
        print(json.dumps({"load_s": load_s, "rss_bytes": rss() - base,
                          "counted_bytes": service.stats().memory_bytes}))
        return

    name = f"capsearch_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(args.admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = args.admin_url.rsplit("/", 1)[0] + f"/{name}"
    out: dict[str, float | int] = {"n": args.n, "dim": args.dim}
    try:
        x = embedding_like(args.n, args.dim)
        t0 = time.perf_counter()
        settings = Settings(database_url=url, index=IndexSettings(storage=args.storage))
        fill(url, x, settings.embedding_model)
        raw_bytes = x.nbytes
        del x
        print(f"wrote {args.n} vectors in {time.perf_counter() - t0:.1f} s", flush=True)
        engine = make_engine(url)
        sessions = make_session_factory(engine)

        base = rss()
        t0 = time.perf_counter()
        first = IndexService(settings, sessions)
        first.load()
        out["load_exact_s"] = time.perf_counter() - t0
        print(f"load (exact, no version yet): {out['load_exact_s']:.1f} s", flush=True)
        t0 = time.perf_counter()
        built = first.rebuild()
        out["rebuild_s"] = time.perf_counter() - t0
        print(f"rebuild: {out['rebuild_s']:.1f} s -> version {built.index_version}, "
              f"{built.n_clusters} clusters", flush=True)
        del first
        engine.dispose()
        # a fresh process, as a replica starting up: its resident memory is all the index's
        child = subprocess.run([sys.executable, __file__, "--replica", url, "--storage",
                                args.storage], capture_output=True, text=True, check=True)
        replica = json.loads(child.stdout.strip().splitlines()[-1])
        out["load_ivf_s"] = replica["load_s"]
        out["rss_over_raw"] = replica["rss_bytes"] / raw_bytes
        out["counted_over_raw"] = replica["counted_bytes"] / raw_bytes
        print(f"replica start-up load (IVF version): {out['load_ivf_s']:.1f} s; resident +"
              f"{replica['rss_bytes'] / 2**20:.0f} MiB = {out['rss_over_raw']:.3f} x raw; "
              f"counted {out['counted_over_raw']:.3f} x raw", flush=True)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
