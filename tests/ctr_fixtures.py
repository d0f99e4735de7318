"""Small Open Bandit style folders written by the CTR tests (never the real data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

N_ITEMS = 4


def write_bandit_folder(root: Path, policy: str, campaign: str, rows: int, seed: int) -> Path:
    """``rows`` impressions over ``N_ITEMS`` items, item 3 clicked most, with the propensities
    of a uniform (``random``) or a skewed (``bts``) logging policy."""
    rng = np.random.default_rng(seed)
    folder = root / "open-bandit-sample" / "obd" / policy / campaign
    folder.mkdir(parents=True, exist_ok=True)
    items = [",item_id,item_feature_0,item_feature_1,item_feature_2,item_feature_3"]
    items += [f"{i},{i},{i / 3:.3f},{policy}a{i % 2},{policy}b,{policy}c" for i in range(N_ITEMS)]
    (folder / "item_context.csv").write_text("\n".join(items) + "\n")
    skew = np.array([0.1, 0.2, 0.3, 0.4]) if policy == "bts" else np.full(N_ITEMS, 0.25)
    header = (
        ",timestamp,item_id,position,click,propensity_score,"
        + ",".join(f"user_feature_{i}" for i in range(4))
        + ","
        + ",".join(f"user-item_affinity_{i}" for i in range(N_ITEMS))
    )
    lines = [header]
    for row in range(rows):
        item = int(rng.choice(N_ITEMS, p=skew))
        position = int(rng.integers(1, 4))
        user = f"u{rng.integers(0, 3)}"
        rate = (0.05 + 0.25 * (item == 3)) * (1.0 if position == 1 else 0.6)
        click = int(rng.random() < rate)
        affinity = ",".join(
            "1.0" if (k == item and user == "u0") else "0.0" for k in range(N_ITEMS)
        )
        minute, second = divmod(row, 60)
        lines.append(
            f"{row},2019-11-24 {minute // 60:02d}:{minute % 60:02d}:{second:02d}+00:00,{item},"
            f"{position},{click},{skew[item]},{user},v,w,x,{affinity}"
        )
    (folder / f"{campaign}.csv").write_text("\n".join(lines) + "\n")
    return folder


def write_bandit_data(root: Path, rows: int = 600) -> Path:
    for seed, policy in enumerate(("random", "bts")):
        write_bandit_folder(root, policy, "men", rows, seed)
    return root
