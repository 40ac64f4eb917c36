"""The published results table measured the published weights: every model row names the checkpoint it
sampled and the SHA-256 that file has now, so a re-trained model cannot sit beside stale numbers."""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def published_hashes() -> dict[str, str]:
    lines = (ROOT / "checkpoints" / "SHA256SUMS").read_text().splitlines()
    return {name: digest for digest, name in (line.split() for line in lines if line.strip())}


def test_every_model_row_measured_the_checkpoint_published_now():
    rows = json.loads((ROOT / "results" / "metrics.json").read_text())
    hashes = published_hashes()
    models = [row for row in rows if row["kind"] == "model"]
    assert models, "results/metrics.json has no model rows"
    for row in models:
        assert row.get("checkpoint") in hashes, f"{row['model']}: names no published checkpoint"
        assert row["checkpoint_sha256"] == hashes[row["checkpoint"]], (
            f"{row['model']} was measured on a {row['checkpoint']} that is no longer the published one: "
            "re-run notebooks/07_evaluation.ipynb (make results)")
    for row in rows:
        if row["kind"] != "model":
            assert row.get("checkpoint") is None, f"{row['model']} is a {row['kind']}, not a checkpoint"


def test_every_row_says_where_and_how_it_was_measured():
    rows = json.loads((ROOT / "results" / "metrics.json").read_text())
    kinds = {row["kind"] for row in rows}
    assert {"floor", "model", "baseline"} <= kinds
    for row in rows:
        assert row["n_samples"] >= 1000 and row["seeds"] >= 2, row["model"]
        assert row["profile"] in ("cpu", "gpu") and row["hardware"] and len(row["commit"]) == 40, row["model"]
    floors = [row for row in rows if row["kind"] == "floor"]
    assert any("binarized" in row["model"] for row in floors), "no floor for binarized samples"
