"""Which MiniLM matmuls int8 may take: retrieval R@K of quantisation variants, against fp32.

A fast proxy of `capsearch eval retrieval` for the encoder alone: the shipped head's image
vectors and tag captions of a pool are computed once; then, per variant of the ONNX Runtime
export, the tag captions are encoded as ingest does (one call per 32 photos) and every human
caption as the gateway does (one query a call: a dynamic int8 scale is computed per call),
the fused vectors served, and each query ranked exactly against the pool's photos.

    python bench/encoder_quant_eval.py --pool flickr8k-dev [--variants fp32 int8 ...] [--json]

Variants: `fp32`; `int8` (every matmul and attention, the pre-2026-12-03 default); `int8-no-X`
with X's nodes left fp32: `ffn-out` (the feed-forward output matmuls, the default since),
`attn` (the fused attentions), `first` / `last` (a whole block). The shipped numbers come
from `capsearch eval retrieval` (docs/quality.md); this picks the candidate. With --json the
LAST line is one JSON object.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from datasets import datasets_dir  # noqa: E402
from machine import describe_machine, machine_line, print_figures  # noqa: E402

from capsearch.files import read_captions  # noqa: E402
from services.caption.projection import build_embedder  # noqa: E402
from services.encoder.encoder import build_text_encoder, default_model_dir  # noqa: E402
from services.encoder.export import (  # noqa: E402
    export_encoder,
    feed_forward_outputs,
    quantise_int8,
)
from shared.config import get_settings  # noqa: E402
from shared.images import decode_rgb  # noqa: E402
from shared.onnxrt import make_session  # noqa: E402

VARIANTS = ("fp32", "int8", "int8-no-ffn-out", "int8-no-attn", "int8-no-first",
            "int8-no-last")


def excluded(model: object, variant: str) -> list[str]:
    """The node names a variant keeps in fp32."""
    nodes = list(model.graph.node)  # type: ignore[attr-defined]
    blocks = sorted({n.name.split("/")[3] for n in nodes if n.name.startswith("/model/encoder/")})

    def block(name: str) -> list[str]:
        index = int(name.split(".")[1])
        return [n.name for n in nodes if f"/{name}/" in n.name] + [f"Attention_{index}"]

    return {"int8": [], "int8-no-ffn-out": feed_forward_outputs(model),
            "int8-no-attn": [n.name for n in nodes if n.op_type == "Attention"],
            "int8-no-first": block(blocks[0]), "int8-no-last": block(blocks[-1])}[variant]


def quantised(fp32: Path, variant: str, folder: Path) -> Path:
    import onnx

    out = folder / f"{variant}.onnx"
    quantise_int8(fp32, out, exclude=excluded(onnx.load(str(fp32)), variant))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", default="flickr8k-dev", help="a folder of the datasets")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    settings = get_settings()
    root = datasets_dir(settings) / args.pool
    captions = read_captions(root / "captions.tsv")
    files = [f for f in sorted((root / "images").glob("*.jpg")) if f.name in captions]
    embedder = build_embedder(settings)
    if embedder is None:
        raise SystemExit("the `caption` representation has no head to evaluate with")
    embedder.load()
    image, tags = [], []
    for start in range(0, len(files), 32):
        done = embedder.embed([decode_rgb(f.read_bytes()) for f in files[start:start + 32]])
        image.append(done.vectors)
        tags += done.texts
    vectors = np.vstack(image)
    queries = [(c, i) for i, f in enumerate(files) for c in captions[f.name]]
    owner = np.array([i for _, i in queries])
    encoder = build_text_encoder(settings, precision="fp32")
    encoder.load()
    fp32 = export_encoder(default_model_dir(), name=encoder.name, precision="fp32",
                          cache_dir=settings.cache_dir)
    print(machine_line())
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="capsearch-quant-") as tmp:
        for variant in args.variants:
            path = fp32 if variant == "fp32" else quantised(fp32, variant, Path(tmp))
            encoder._model = make_session(path, 1)  # noqa: SLF001 (the session it runs)
            start = time.process_time()
            fusion = np.vstack([encoder.encode(tags[i:i + 32]) for i in range(0, len(tags), 32)])
            asked = np.vstack([encoder.encode([q]) for q, _ in queries])
            cpu = (time.process_time() - start) / (len(tags) + len(queries)) * 1000
            served = embedder.serve("fused", fusion, vectors, settings.fusion_weight)
            sims = asked @ served.T
            rank = (sims > sims[np.arange(len(asked)), owner][:, None]).sum(axis=1) + 1
            results[variant] = {f"r{k}": round(100 * float((rank <= k).mean()), 2)
                                for k in (1, 5, 10)} | {"cpu_ms_per_text": round(cpu, 2)}
            print(f"{args.pool} {variant:16s} {results[variant]}", flush=True)
    print_figures({"pool": args.pool, "queries": len(queries), "variants": results,
                   "machine": describe_machine()}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
