"""Coat (Schnabel et al. 2016): real self-selected feedback beside a real randomised audit.

290 shoppers each rated 24 coats they chose (missing not at random: they chose what they liked)
and 16 coats drawn uniformly at random for them, 1–5 stars. As an rmpipe table:
- a shopper's profile is the prompt ("A woman aged 20-30, urban, very interested in fashion,
  shopping for a coat."), a coat's features are the response; label = rating ≥ 4;
  ``group_id`` = the shopper, and the split is by shopper (``prepare.split``: seed, fractions);
- train and val shoppers: one row per (shopper, coat) for all 300 coats — their chosen ratings
  are the observed feedback, every other coat an unobserved row — plus, as ``audit`` rows, a
  share (``prepare.source.audit_share``, default a quarter) of their random ratings, drawn per
  shopper with ``prepare.source.seed``; their other random ratings are not used (counted);
- test shoppers: their 16 random ratings only, clean and fully observed (their chosen ratings
  would not be a sample of what the model scores: dropped and counted).
A coat both chosen and drawn at random for one shopper gives two rows: they are two events.
Lines that do not parse, ids without features and ratings outside 1–5 are dropped and counted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from pipeline.config import SplitParams
from pipeline.errors import RmpipeError
from stages.prepare.rows import Drops, Loaded
from stages.prepare.splits import split_groups

DEFAULT_AUDIT_SHARE = 0.25
LICENCE = ("research use (Schnabel et al., ICML 2016; redistributed in DongHande/AutoDebias, MIT); "
           "read in place, never copied")
GENDER = {"men": "men's", "women": "women's"}
AGE = {"under 20": "under 20", "over 60": "over 60"}
INTEREST = {"very": "very interested in fashion", "moderately": "moderately interested in fashion",
            "not at all": "not interested in fashion"}


def _features(path: Path, names: list[str], drops: Drops, what: str) -> list[dict[str, str] | None]:
    """One-hot rows -> {group: value} per id (None where a row does not parse)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        bits = line.split()
        if len(bits) != len(names) or any(b not in ("0", "1") for b in bits):
            drops.add(f"{what} feature line that does not parse")
            out.append(None)
            continue
        row = {}
        for bit, name in zip(bits, names):
            if bit == "1":
                group, value = name.split(":", 1)
                row[group] = value
        out.append(row)
    return out


def shopper_text(f: dict[str, str]) -> str:
    who = {"women": "A woman", "men": "A man"}.get(f.get("gender", ""), "A shopper")
    age = f.get("age")
    parts = [f"{who} aged {AGE.get(age, age)}" if age else who]
    if f.get("location"):
        parts.append(f["location"])
    if f.get("fashioninterest"):
        parts.append(INTEREST.get(f["fashioninterest"], f["fashioninterest"]))
    return ", ".join(parts) + ", shopping for a coat."


def coat_text(f: dict[str, str]) -> str:
    kind = f.get("jackettype", "other")
    noun = "coat" if kind == "other" else f"{kind} jacket" if kind not in ("vests", "parkas", "shells") else kind[:-1]
    colour = f.get("color")
    words = [GENDER.get(f.get("gender", ""), ""), "" if colour in (None, "other", "multi") else colour,
             "multicoloured" if colour == "multi" else "", noun]
    text = "A " + " ".join(w for w in words if w)
    return text + (", featured on the front page." if f.get("onfrontpage") == "yes" else ".")


def _ratings(path: Path, n_users: int, n_items: int, drops: Drops, what: str) -> np.ndarray:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.strip().split(",")
        try:
            u, i, r = (int(p) for p in parts)
        except ValueError:
            drops.add(f"{what} line that does not parse")
            continue
        if not (0 <= u < n_users and 0 <= i < n_items):
            drops.add(f"{what} rating of an unknown shopper or coat")
        elif not 1 <= r <= 5:
            drops.add(f"{what} rating outside 1-5")
        else:
            rows.append((u, i, r))
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def load_coat(root: Path, split: SplitParams | None = None, audit_share: float | None = None,
              seed: int = 0) -> Loaded:
    folder = root / "coat"
    feats = folder / "user_item_features"
    for p in (folder / "user.txt", folder / "random.txt", feats / "user_features.ascii", feats / "item_features.ascii"):
        if not p.exists():
            raise RmpipeError(f"{p}: shared data not found (set RMPIPE_SHARED_DATA to the folder that holds coat/)")
    split = split or SplitParams()
    share = DEFAULT_AUDIT_SHARE if audit_share is None else audit_share
    drops = Drops()
    users = _features(feats / "user_features.ascii", (feats / "user_features_map.txt").read_text().split("\n"), drops, "shopper")
    items = _features(feats / "item_features.ascii", (feats / "item_features_map.txt").read_text().split("\n"), drops, "coat")
    chosen = _ratings(folder / "user.txt", len(users), len(items), drops, "self-selected")
    random = _ratings(folder / "random.txt", len(users), len(items), drops, "random")
    ok_u = np.array([u is not None for u in users])
    ok_i = np.array([i is not None for i in items])
    for name, r in (("self-selected", chosen), ("random", random)):
        bad = ~(ok_u[r[:, 0]] & ok_i[r[:, 1]])
        if bad.any():
            drops.add(f"{name} rating of a shopper or coat whose features do not parse", int(bad.sum()))
    chosen = chosen[ok_u[chosen[:, 0]] & ok_i[chosen[:, 1]]]
    random = random[ok_u[random[:, 0]] & ok_i[random[:, 1]]]
    user_ids = np.flatnonzero(ok_u)
    user_split = dict(zip(user_ids, split_groups([f"u{u}" for u in user_ids], split.fractions, split.seed)))
    rng = np.random.default_rng([seed, 13])
    prompts = {u: shopper_text(users[u]) for u in user_ids}
    responses = {i: coat_text(items[i]) for i in np.flatnonzero(ok_i)}
    rows: list[tuple] = []  # (user, item, rating|None, observed, audit, split)

    def add(u, i, r, observed, audit):
        rows.append((int(u), int(i), None if r is None else float(r), observed, audit, user_split[u]))

    unused = 0
    for u in user_ids:
        mine, rand = chosen[chosen[:, 0] == u], random[random[:, 0] == u]
        if user_split[u] == "test":
            drops.add("self-selected rating of a test shopper (the test split is the random ratings)", len(mine))
            for _, i, r in rand:
                add(u, i, r, True, False)
            continue
        picked = set(mine[:, 1].tolist())
        for _, i, r in mine:
            add(u, i, r, True, False)
        for i in np.flatnonzero(ok_i):
            if i not in picked:
                add(u, i, None, False, False)
        k = int(round(share * len(rand)))
        audit_idx = set(rng.choice(len(rand), size=k, replace=False).tolist()) if k else set()
        for j, (_, i, r) in enumerate(rand):
            if j in audit_idx:
                add(u, i, r, True, True)
        unused += len(rand) - len(audit_idx)
    u_, i_, r_, o_, a_, s_ = zip(*rows)
    rating = pl.Series("rating", r_, dtype=pl.Float64)
    label = (rating >= 4).cast(pl.Int8)
    df = pl.DataFrame({
        "prompt": [prompts[u] for u in u_], "response": [responses[i] for i in i_],
        "group_id": [f"coat-shopper-{u}" for u in u_], "comparison_id": pl.Series([None] * len(rows), dtype=pl.String),
        "rating": rating, "observed": list(o_), "audit": list(a_), "feedback": label, "label": label,
        "given_split": list(s_), "shopper": [str(u) for u in u_], "coat": [str(i) for i in i_],
        **{f"coat_{g}": [str(items[i].get(g, "none")) for i in i_] for g in ("jackettype", "color", "onfrontpage", "gender")},
        **{f"shopper_{g}": [str(users[u].get(g, "none")) for u in u_] for g in ("gender", "age", "location", "fashioninterest")},
    })
    note = (f"rating ≥ 4 of 1-5 stars = liked; {unused} random ratings of train/val shoppers left out of the "
            f"audit (audit share {share:g} of each shopper's random ratings)")
    return Loaded(df, "shared:coat (Schnabel et al. 2016)", LICENCE, (1.0, 5.0), note, dict(drops),
                  logged=True, where=str(folder))
