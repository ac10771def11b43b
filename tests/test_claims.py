"""The claims report: exact claims against closed forms, and a smoke run of the generator."""

import math
import subprocess
import sys

import pytest
import torch

from xentlab.report import claims

from conftest import DATA_ROOT, ROOT, runs_in


def test_claim_1_cross_entropy_is_never_negative_and_its_soft_floor_is_the_entropy():
    c = claims.claim_1()
    assert c.metrics["min_ce_one_hot"] >= 0
    assert c.metrics["ce_at_perfect_one_hot"] < 1e-12
    assert c.metrics["max_gap_to_entropy"] < 1e-12  # CE(y, y) = H(y)
    assert c.metrics["min_ce_minus_entropy_soft"] >= 0  # Gibbs' inequality
    assert c.metrics["ce_at_soft_target_mean"] > 0.5  # far from 0 for soft targets


def test_claim_1_closed_form_for_a_two_class_soft_target():
    y = torch.tensor([[0.7, 0.3]], dtype=torch.float64)
    h = -(0.7 * math.log(0.7) + 0.3 * math.log(0.3))
    assert claims.cce(y.log(), y).item() == pytest.approx(h, abs=1e-12)


def test_claim_2_cross_entropy_is_entropy_plus_kl_and_asymmetric():
    c = claims.claim_2()
    assert c.metrics["max_abs_ce_minus_h_plus_kl"] < 1e-12 and c.metrics["mean_abs_asymmetry"] > 0.05


def test_claim_3_sparse_and_one_hot_agree_and_one_hot_targets_grow_with_classes():
    c = claims.claim_3(torch.device("cpu"), classes=(10, 1000), steps=1, rounds=2)
    assert c.metrics["max_abs_diff_10"] < 1e-5 and c.metrics["max_abs_diff_1000"] < 1e-5
    # 512 one-hot float32 rows vs 512 int64 labels
    assert c.metrics["cce_target_mib_1000"] == pytest.approx(512 * 1000 * 4 / 2**20)
    assert c.metrics["sparse_target_mib_1000"] == pytest.approx(512 * 8 / 2**20)


def test_claim_4_bce_is_the_mean_of_two_class_cces():
    c = claims.claim_4()
    assert c.metrics["max_abs_diff"] < 1e-12


def test_claim_5b_sigmoid_stays_in_range_too_and_float32_rounds_it_to_the_ends():
    m = claims.claim_5b().metrics
    assert m["sigmoid_min"] == 0.0 and m["sigmoid_max"] == 1.0 and 0 <= m["softmax_min"] <= m["softmax_max"] <= 1
    # 1 / (1 + e^-z) rounds to 1 once e^-z is below half an ulp of 1 (2^-24), and to 0 once e^-z overflows
    assert m["sigmoid_is_one_from"] == pytest.approx(24 * math.log(2), abs=2e-3)
    assert m["sigmoid_is_zero_below"] == pytest.approx(-math.log(torch.finfo(torch.float32).max), abs=2e-3)
    assert m["softmax_max_abs_row_sum_minus_1"] < 1e-6 and m["sigmoid_row_sum_max"] - m["sigmoid_row_sum_min"] > 5


def test_claim_12_cce_splits_the_probability_evenly_over_several_tags():
    m = claims.claim_12_exact()
    for k in (1, 2, 3):  # the minimiser of -sum_c y_c log q_c over the simplex is q = y / k
        assert m[f"p_per_tag_{k}_tags"] == pytest.approx(1 / k, abs=1e-3)


def test_claim_13_the_mean_divides_the_sgd_step_by_the_batch_size():
    m = claims.claim_13(n=32, steps=20).metrics
    assert m["mean_minus_sum_over_n"] < 1e-12
    assert m["sgd_sum_lr_over_n_vs_mean"] < 1e-12 < 0.1 < m["sgd_sum_same_lr_vs_mean"]
    assert m["adam_sum_vs_mean_same_lr"] < 1e-5  # Adam divides a constant scale out (up to its eps)


def test_claim_14_a_clipped_confidently_wrong_output_has_no_gradient():
    m = claims.claim_14_exact()
    for z in (20, 200):
        assert m[f"logits_grad_at_{z}"] == pytest.approx(torch.sigmoid(torch.tensor(-float(z))).item() - 1)
        assert m[f"logits_loss_at_{z}"] == pytest.approx(z, rel=1e-6)  # -log sigmoid(-z) = z + log(1 + e^-z)
        assert m[f"clipped_grad_at_{z}"] == 0.0
        assert m[f"clipped_loss_at_{z}"] == pytest.approx(-math.log(1e-7), rel=1e-5)
    assert m["layer_loss_at_200"] == 100.0 and m["layer_grad_at_200"] == 0.0  # torch's BCELoss clamps log at -100


def runs_of(task, kind, cells):
    """RunInfos for (loss, lr, seed) -> (test score, validation curve) written by hand."""
    rank = claims.analysis.rank_by(kind)
    return [claims.analysis.RunInfo(f"{loss}{lr}{seed}", task, kind, "auto", loss, str(seed), "valid",
                                    {f"test/{rank}": score, f"val/{rank}": curve[-1]},
                                    curves={f"val/{rank}": list(enumerate(curve))},
                                    params={"optimizer.lr": lr, "task.min_digits": "1", "task.max_digits": "3"})
            for (loss, lr, seed), (score, curve) in cells.items()]


class HandLab:
    """Hands claim_7_and_8 runs written by hand instead of sweeping (its statistics are what is tested)."""

    scale = claims.QUICK

    def __init__(self, runs):
        self.runs = runs

    def sweep(self, name, task, *grid):
        return f"python run.py -m task={task}", self.runs[task]


def test_claim_7_compares_speed_at_the_same_learning_rate_and_scores_with_welch():
    slow, fast = [0.90, 0.94, 0.96], [0.96, 0.97, 0.97]
    mnist = {("sparse_cce", "0.001", s): (0.95 + 0.001 * s, slow) for s in range(3)}
    mnist |= {("sparse_cce", "0.01", s): (0.95 + 0.001 * s, fast) for s in range(3)}
    mnist |= {("mse", "0.001", s): (0.90 + 0.001 * s, fast) for s in range(3)}  # fast, but worse
    mnist |= {("mse", "0.01", s): (0.80 + 0.001 * s, [0.5, 0.6, 0.7]) for s in range(3)}
    binary = {(loss, "0.001", s): (0.97 + 0.001 * s, fast) for loss in ("bce", "mse") for s in range(3)}
    multilabel = {(loss, "0.001", s): (0.5, [0.6]) for loss in ("bce", "mse") for s in range(3)}
    lab = HandLab({"mnist": runs_of("mnist", "multiclass", mnist), "binary": runs_of("binary", "binary", binary),
                   "multilabel": runs_of("multilabel", "multilabel", multilabel)})
    c7, c8 = claims.claim_7_and_8(lab)
    # mnist: CE better (Welch separates 0.95.. from 0.90..); at lr 0.001 MSE is sooner (1 vs 3 epochs),
    # at lr 0.01 CE is (1 vs never): sooner at 1 of 2 learning rates, not "sooner" across two rates
    assert c7.metrics["mnist_sparse_cce_lr0.001_epochs_to_target"] == 3
    assert c7.metrics["mnist_mse_lr0.001_epochs_to_target"] == 1
    assert "mnist_mse_lr0.01_epochs_to_target" not in c7.metrics
    assert c7.verdict == ("holds only in part: CE ends better on mnist; CE reaches the target sooner on mnist "
                          "(1 of 2 learning rates); MSE ends as good (or better) on binary, multilabel")
    assert c7.sources == ["001"] and c8.sources == ["002"]


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


def test_report_table_has_a_row_per_claim_in_order_and_escapes_pipes():
    rows = [claims.Claim(n, f"claim {n} | with a pipe", ["001"], "cmd", "result", "holds")
            for n in ("10", "5b", "5a", "2")]
    text = claims.render(rows, claims.QUICK, 60.0, "p" * 32, "sqlite:///x.db")
    table = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [line.split(" | ")[0] for line in table] == ["| 2", "| 5a", "| 5b", "| 10"]
    assert "claim 5a \\| with a pipe" in text and "001_431bb6897eaf075d.txt" in text


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
    assert [line.split(" | ")[0][2:] for line in table] == ["1", "2", "4", "10", "11"]
    assert "python run.py -m task=binary activation=sigmoid,softmax loss=bce,cce" in text
    client, runs = runs_in(store)
    (parent,) = [r for r in runs if r.data.tags.get("claims") == "parent"]
    assert parent.info.status == "FINISHED"
    # the verdicts in MLflow are those of the report
    verdicts = {line.split(" | ")[0][2:]: line.rsplit(" | ", 1)[1].strip("*| ") for line in table}
    assert {k: parent.data.tags[f"claim{k}_verdict"] for k in verdicts} == verdicts
    (sweep,) = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    jobs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == sweep.info.run_id]
    assert sorted((r.data.tags["activation"], r.data.tags["loss"]) for r in jobs if r.data.tags["seed"] == "0") == [
        ("sigmoid", "bce"), ("softmax", "bce"), ("softmax", "cce")]  # sigmoid+cce is skipped (invalid)
    assert "CLAIMS.md" in [a.path for a in client.list_artifacts(parent.info.run_id)]
    assert parent.data.metrics["claim4/max_abs_diff"] < 1e-12


def test_the_scale_line_counts_budget_limited_runs_by_the_analysis_rule():
    """``analysis.budget_limited``: without a tag, a run whose best epoch falls within the last
    ``trainer.patience`` epochs of ``trainer.max_epochs`` is budget-limited (best 35 of 40 with patience 8
    is; best 20 is not); a tag, written when it trained, wins."""
    def run(seed, best, tag=None):
        return claims.analysis.RunInfo(
            f"r{seed}", "mnist", "multiclass", "softmax", "sparse_cce", str(seed), "valid",
            {"best_epoch": best}, params={"optimizer.lr": "0.001", "trainer.max_epochs": "40",
                                          "trainer.patience": "8", "selection": "best val/acc"},
            tags={"budget_limited": tag} if tag else {})
    runs = [run(0, 35), run(1, 20), run(2, 20, tag="true")]
    assert claims.budget_line(runs) == ("2 of 3 runs budget-limited (mnist softmax+sparse_cce lr 0.001 seed 0, "
                                        "mnist softmax+sparse_cce lr 0.001 seed 2)")
    assert claims.budget_line([]) == "no runs"
    text = claims.render([], claims.QUICK, 60.0, "p" * 32, "sqlite:///x.db", runs=runs[1:2])
    assert "0 of 1 runs budget-limited;" in text
