"""The streamed fit against the in-memory fit on the default world: same metrics within seed noise?

For each seed (the simulation's draw of feedback and the head's seed), prepares the built-in
world, embeds it with MiniLM (once, params' dtype), then fits the same methods twice — with
the embeddings loaded (``fit.stream_gb`` 8) and streamed from the store (``fit.stream_gb`` 0:
store order, windowed shuffle; the nuisance models keep the raw embeddings, which fit
``NUISANCE_BYTES`` here) — and evaluates both. A third fit loads the embeddings but gives the
nuisance models a 64-d projection: what a streamed store too big for raw nuisance features
pays. Prints R², MAE and AUROC per mode (mean over seeds) and the paired differences
with 95% t-intervals, beside the seed-to-seed spread of the loaded fit: "within seed noise" means the
interval holds 0 or is small against that spread.

    .venv/bin/python bench/fit_stream_parity.py [--seeds 3] [--methods naive causalrm causalrm_dr]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.paper_report import _ci, paired  # noqa: E402
from pipeline.config import load_params  # noqa: E402

METRICS = ("r2", "mae", "auroc")
# (name, fit.stream_gb, fit.propensity.pca_dim): the third is the cost of projecting the nuisance
# features, which a streamed store does only when the raw ones exceed NUISANCE_BYTES
MODES = (("loaded", 8.0, None), ("streamed", 0.0, None), ("loaded, nuisance on 64-d PCA", 8.0, 64))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--methods", nargs="+", default=["naive", "causalrm", "causalrm_dr"])
    ap.add_argument("--max-epochs", type=int, default=40)
    args = ap.parse_args()

    from stages.embed.run import embed
    from stages.evaluate.run import evaluate
    from stages.fit.run import fit
    from stages.prepare.run import prepare

    base = load_params(REPO / "params.yaml")
    values = {mode: {m: {k: {} for k in METRICS} for m in args.methods} for mode, _, _ in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        base = dataclasses.replace(base, embed=dataclasses.replace(base.embed, store_dir=f"{tmp}/emb",
                                                                   backbones=("minilm",)))
        for seed in range(args.seeds):
            sim = dataclasses.replace(base.prepare.simulate, seed=seed)
            params = dataclasses.replace(base, data_dir=f"{tmp}/data{seed}",
                                         prepare=dataclasses.replace(base.prepare, simulate=sim))
            prepare(params)
            embed(params, "minilm", progress=False)
            for mode, gb, pca in MODES:
                head = dataclasses.replace(params.fit.head, seed=seed, max_epochs=args.max_epochs)
                prop = dataclasses.replace(params.fit.propensity, pca_dim=pca)
                fitp = dataclasses.replace(params.fit, head=head, propensity=prop, stream_gb=gb,
                                           heads_dir=f"{tmp}/heads-{mode}-{seed}")
                run = dataclasses.replace(params, fit=fitp, evaluate=dataclasses.replace(
                    params.evaluate, reports_dir=f"{tmp}/reports-{mode}-{seed}"))
                fit(run, "minilm", args.methods, progress=False, log=lambda _: None)
                reports = evaluate(run, "minilm", args.methods, log=lambda _: None)
                for m in args.methods:
                    for k in METRICS:
                        values[mode][m][k][seed] = reports[m]["metrics"][k]
                print(f"  seed {seed} {mode}: " + ", ".join(
                    f"{m} R² {reports[m]['metrics']['r2']:+.3f}" for m in args.methods), file=sys.stderr)
    print(f"streamed vs loaded fit, default world, MiniLM, {args.seeds} seeds, ≤{args.max_epochs} epochs")
    pca = MODES[2][0]
    print(f"| method | metric | loaded (mean ± sd over seeds) | streamed | streamed − loaded | {pca} − loaded "
          f"| streamed − ({pca}) |")
    print("|---|---|---:|---:|---|---|---|")
    for m in args.methods:
        for k in METRICS:
            a, b, c = values["streamed"][m][k], values["loaded"][m][k], values[pca][m][k]
            la = np.array(list(b.values()))
            print(f"| {m} | {k} | {la.mean():.3f} ± {la.std(ddof=1) if len(la) > 1 else 0:.3f} | "
                  f"{np.mean(list(a.values())):.3f} | {_ci(paired(a, b))} | {_ci(paired(c, b))} | {_ci(paired(a, c))} |")


if __name__ == "__main__":
    main()
