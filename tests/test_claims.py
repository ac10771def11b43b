"""The claims report: exact claims against closed forms, and a smoke run of the generator."""

import importlib.util
import math
import subprocess
import sys

import pytest
import torch

from conftest import DATA_ROOT, ROOT, runs_in


def load_claims():
    spec = importlib.util.spec_from_file_location("claims", ROOT / "scripts" / "claims.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["claims"] = module
    spec.loader.exec_module(module)
    return module


claims = load_claims()


def test_claim_1_cross_entropy_is_never_negative_and_its_soft_floor_is_the_entropy():
    c = claims.claim_1()
    assert c.metrics["min_ce_one_hot"] >= 0
    assert c.metrics["ce_at_perfect_one_hot"] < 1e-12
    assert c.metrics["max_gap_to_entropy"] < 1e-12  # CE(y, y) = H(y)
    assert c.metrics["min_ce_minus_entropy_soft"] >= 0  # Gibbs' inequality
    assert c.metrics["ce_at_soft_target_mean"] > 0.5  # far from 0 for soft targets
    assert c.verdict.startswith("holds only")


def test_claim_1_closed_form_for_a_two_class_soft_target():
    y = torch.tensor([[0.7, 0.3]], dtype=torch.float64)
    h = -(0.7 * math.log(0.7) + 0.3 * math.log(0.3))
    assert claims.cce(y.log(), y).item() == pytest.approx(h, abs=1e-12)


def test_claim_2_cross_entropy_is_entropy_plus_kl_and_asymmetric():
    c = claims.claim_2()
    assert c.metrics["max_abs_ce_minus_h_plus_kl"] < 1e-12 and c.metrics["mean_abs_asymmetry"] > 0.05
    assert c.verdict == "holds"


def test_claim_3_sparse_and_one_hot_agree_and_one_hot_targets_grow_with_classes():
    c = claims.claim_3(torch.device("cpu"), classes=(10, 1000), steps=1)
    assert c.metrics["max_abs_diff_10"] < 1e-5 and c.metrics["max_abs_diff_1000"] < 1e-5
    # 512 one-hot float32 rows vs 512 int64 labels
    assert c.metrics["cce_target_mib_1000"] == pytest.approx(512 * 1000 * 4 / 2**20)
    assert c.metrics["sparse_target_mib_1000"] == pytest.approx(512 * 8 / 2**20)


def test_claim_4_bce_is_the_mean_of_two_class_cces():
    c = claims.claim_4()
    assert c.metrics["max_abs_diff"] < 1e-12 and c.verdict == "holds"


def test_claim_6_bce_is_convex_in_the_weight_and_mse_is_not():
    m = claims.claim_6_exact()
    assert m["bce_min_second_derivative"] >= -1e-12
    assert m["mse_min_second_derivative"] < 0
    assert abs(m["mse_slope_at_w_minus_12"]) < 1e-3 < abs(m["bce_slope_at_w_minus_12"])  # MSE's plateau
    # closed form at w = 0: d2/dw2 mean BCE = mean(x^2) * sigma'(0) = mean(x^2) / 4
    w = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    (g1,) = torch.autograd.grad(claims.logistic_curves(w)["bce"].sum(), w, create_graph=True)
    (g2,) = torch.autograd.grad(g1.sum(), w)
    x2 = torch.tensor([4.0, 1.0, 0.25, 0.25, 1.0, 4.0]).mean().item()
    assert g2.item() == pytest.approx(x2 / 4, rel=1e-9)


def test_claim_10_soft_targets_are_learnt_and_the_loss_stops_at_their_entropy():
    c = claims.claim_10(steps=2000)
    assert c.metrics["max_abs_gap"] < 0.01
    assert abs(c.metrics["p_for_0.5"] - 0.5) < 0.01
    assert c.metrics["final_loss"] == pytest.approx(c.metrics["entropy_floor"], abs=2e-3)
    h = -(0.5 * math.log(0.5) * 2 + 0.2 * math.log(0.2) + 0.8 * math.log(0.8) + 0.9 * math.log(0.9)
          + 0.1 * math.log(0.1)) / 5
    assert c.metrics["entropy_floor"] == pytest.approx(h, abs=1e-4)


def test_claim_11_two_output_softmax_cce_is_bce_of_the_logit_difference():
    assert claims.claim_11_exact() < 1e-12


def test_report_table_has_a_row_per_claim_and_escapes_pipes():
    rows = [claims.Claim(n, f"claim {n} | with a pipe", ["001"], "cmd", "result", "holds") for n in (2, 1)]
    text = claims.render(rows, claims.QUICK, 60.0, "p" * 32, "sqlite:///x.db")
    table = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [line.split(" | ")[0] for line in table] == ["| 1", "| 2"]
    assert "claim 1 \\| with a pipe" in text and "001_431bb6897eaf075d.txt" in text


@pytest.mark.slow
def test_generator_smoke_on_tiny_data(mnist_root, store, tmp_path):
    out_md = tmp_path / "CLAIMS.md"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "claims.py"), "--quick", "--claims", "1,2,4,10,11",
                           "--out", str(out_md), "--tracking-uri", store, "--data-root", str(DATA_ROOT),
                           "--sweeps-dir", str(tmp_path / "sweeps")], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = out_md.read_text()
    table = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [int(line.split(" | ")[0][2:]) for line in table] == [1, 2, 4, 10, 11]
    assert "python run.py -m task=binary activation=sigmoid,softmax loss=bce,cce" in text
    client, runs = runs_in(store)
    (parent,) = [r for r in runs if r.data.tags.get("claims") == "parent"]
    assert parent.info.status == "FINISHED" and parent.data.tags["claim11_verdict"].startswith("holds")
    (sweep,) = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    jobs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == sweep.info.run_id]
    assert sorted((r.data.tags["activation"], r.data.tags["loss"]) for r in jobs if r.data.tags["seed"] == "0") == [
        ("sigmoid", "bce"), ("softmax", "bce"), ("softmax", "cce")]  # sigmoid+cce is skipped (invalid)
    assert "CLAIMS.md" in [a.path for a in client.list_artifacts(parent.info.run_id)]
    assert parent.data.metrics["claim4/max_abs_diff"] < 1e-12
