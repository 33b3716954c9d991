"""eval/depth_stability.py and the sweep runner under it, on the toy language (the study itself is a long run:
docs/depth.md). Checks the mechanics: every method and placement runs or is reported, finished runs are reused,
divergence is read off the losses, the analysis reads the exported weights."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

import dslm_zoo
from dslm_zoo.diagnostics import attention_entropy
from dslm_zoo.layers import Attention
from dslm_zoo.train.sweep import summarize_run

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("depth_stability", ROOT / "eval" / "depth_stability.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow  # training subprocesses; `make test-slow` (the default run must fit in 10 minutes)
def test_depth_stability_runs_every_method_and_reuses_finished_runs(tmp_path, capsys):
    ds = _script()
    argv = ["--recipe", str(ROOT / "recipes" / "tiny_mlm.yaml"), "--depths", "2", "--steps", "3",
            "--methods", "dslm", "peri_ln", "--placements", "pre", "post", "--workers", "2", "--set", "optim.lr=5e-4",
            "--runs", str(tmp_path / "runs"), "--md", str(tmp_path / "t.md"), "--png", str(tmp_path / "l.png"),
            "--grad-png", str(tmp_path / "g.png")]
    assert ds.main(argv) == 0
    table = (tmp_path / "t.md").read_text()
    body = [line.split(" | ") for line in table.splitlines() if line.startswith("| 2 |")]
    assert sorted((r[1], r[3]) for r in body) == sorted([("pre", "dslm"), ("pre", "peri_ln"), ("post", "dslm")])
    rows = json.loads((tmp_path / "runs" / "results.json").read_text())
    for r in rows:
        assert "error" not in r, r
        assert math.isfinite(r["eval_loss"]) and len(r["grad_profile"]) == 4 and 0 <= r["attn_entropy_last"] <= 1
        assert len(r["curve"]) == 3
    assert (tmp_path / "l.png").stat().st_size > 0 and (tmp_path / "g.png").stat().st_size > 0
    from dslm_zoo.train.rundir import read_recipe

    run = read_recipe(tmp_path / "runs" / "peri_ln_d2_pre_fp32")
    assert run.optim.lr == 5e-4 and run.model.kwargs["peri_norm"] is True and run.model.kwargs["norm_first"] is True
    assert read_recipe(tmp_path / "runs" / "dslm_d2_post_fp32").model.kwargs["norm_first"] is False
    stamp = (tmp_path / "runs" / "dslm_d2_pre_fp32" / "metrics.jsonl").stat().st_mtime_ns
    assert ds.main(argv) == 0  # the second call trains nothing
    assert (tmp_path / "runs" / "dslm_d2_pre_fp32" / "metrics.jsonl").stat().st_mtime_ns == stamp


def test_divergence_is_a_non_finite_loss_or_a_loss_above_its_start(tmp_path):
    def write(rows):
        (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return summarize_run(tmp_path)

    ok = write([{"step": 1, "loss": 5.0}, {"step": 2, "loss": 4.0}, {"step": 2, "split": "validation", "eval_loss": 4.1}])
    assert not ok.diverged and ok.eval_loss == 4.1 and ok.train_losses == [(1, 5.0), (2, 4.0)]
    up = write([{"step": 1, "loss": 5.0}, {"step": 2, "loss": 6.0}, {"step": 2, "split": "validation", "eval_loss": 6.1}])
    assert up.diverged and up.eval_loss == 6.1
    nan = summarize_run(tmp_path, returncode=3)
    assert nan.diverged and nan.eval_loss == float("inf")


def test_attention_entropy_is_one_for_uniform_rows_and_zero_for_one_hot_rows():
    torch.manual_seed(0)
    for causal in (False, True):
        m = dslm_zoo.create_model("dslm_gpt_tiny" if causal else "dslm_bert_tiny", depth=1, pos_embed="learned")
        att = next(a for a in m.modules() if isinstance(a, Attention))
        with torch.no_grad():
            att.qkv.weight[: att.qkv.weight.shape[1]].zero_()  # q = bias = 0: every logit 0, uniform rows
            att.qkv.bias.zero_()
        assert attention_entropy(m, torch.randint(5, 100, (2, 12))) == [pytest.approx(1.0, abs=1e-5)]
    # one head, q = 100 x and k = x on near-orthogonal tokens: each row on its own token
    att = Attention(16, 1)
    with torch.no_grad():
        att.qkv.weight.copy_(torch.cat([100 * torch.eye(16), torch.eye(16), torch.eye(16)]))
        att.qkv.bias.zero_()
    x = torch.eye(16)[None] * 3
    wrapper = torch.nn.Sequential(att)
    assert attention_entropy(wrapper, x)[0] < 1e-3


@pytest.mark.slow  # two training runs and an analysis per checkpoint; run with `make test-slow`
def test_postln_collapse_reads_every_checkpoint_with_theory_and_measurement(tmp_path, capsys):
    """eval/postln_collapse.py on the toy language: one row per checkpoint plus the init, the theory and the
    measurement on the same weights; the last checkpoint's weights are the run's final weights."""
    spec = importlib.util.spec_from_file_location("postln_collapse", ROOT / "eval" / "postln_collapse.py")
    pc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pc)
    runs = tmp_path / "runs"
    argv = ["--recipe", str(ROOT / "recipes" / "tiny_mlm.yaml"), "--depth", "2", "--steps", "4", "--every", "2",
            "--placements", "post", "--set", "train.eval_every=0", "--runs", str(runs), "--md", str(tmp_path / "t.md"),
            "--png", str(tmp_path / "p.png")]
    assert pc.main(argv) == 0
    rows = [line.split(" | ") for line in (tmp_path / "t.md").read_text().splitlines() if line.startswith("| post |")]
    assert [int(r[1]) for r in rows] == [0, 2, 4]
    for r in rows:
        grad, pred_grad, corr, pred_corr, gain, gain_max, skip = (float(x.strip(" |")) for x in r[2:])
        assert 0 < grad and 0 < pred_grad and 0 <= corr <= 1 and 0 <= pred_corr <= 1
        assert 0 < gain <= gain_max and 0 < skip < 1  # a Post-LN skip share is lambda^2 Var(x) / Var(sum) < 1
    assert (tmp_path / "p.png").stat().st_size > 0
    from dslm_zoo.train.checkpoint import CheckpointManager, model_weights

    run = runs / "dslm_d2_post"
    steps = CheckpointManager(run, rank=0, world=1, keep=0).steps()
    assert [s for s, _ in steps] == [2, 4]
    final = dslm_zoo.create_model(f"local-dir:{run / 'export'}")
    got = model_weights(steps[-1][1], final)
    for k, v in final.state_dict().items():
        torch.testing.assert_close(got[k], v, msg=k)


@pytest.mark.slow  # training subprocesses; `make test-slow` (the default run must fit in 10 minutes)
def test_deep_vs_shallow_reports_seeds_and_milestones_and_resumes_a_cut_run(tmp_path):
    """eval/deep_vs_shallow.py on the toy language: equal block parameters (2x32 and 8x16), two seeds, milestones,
    the crossing line; a run cut after its last checkpoint continues from it instead of training again."""
    spec = importlib.util.spec_from_file_location("deep_vs_shallow", ROOT / "eval" / "deep_vs_shallow.py")
    dvs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dvs)
    runs = tmp_path / "runs"
    argv = ["--recipe", str(ROOT / "recipes" / "tiny_mlm.yaml"), "--shapes", "2x32", "8x16", "--seeds", "0",
            "--steps", "4", "--evals", "2", "--workers", "2", "--runs", str(runs), "--md", str(tmp_path / "t.md"),
            "--png", str(tmp_path / "c.png")]
    assert dvs.main(argv) == 0
    text = (tmp_path / "t.md").read_text()
    table = [line.split(" | ") for line in text.splitlines() if line.startswith(("| 8x16 |", "| 2x32 |"))]
    assert [r[0].strip("| ") for r in table] == ["8x16", "2x32"]
    assert all(r[1] == "0.02M" and r[2] == "1" for r in table)  # 12 L D^2 = 24,576 each, one seed (CI's budget)
    milestones = [line for line in text.splitlines() if line.startswith("| 0.00")]
    assert len(milestones) == 2 and "Deepest (8x16) vs shallowest (2x32)" in text
    rows = json.loads((runs / "results.json").read_text())
    assert len(rows) == 2 and all(len(r["curve"]) == 2 and all(math.isfinite(p) for _, p in r["curve"]) for r in rows)
    assert (tmp_path / "c.png").stat().st_size > 0
    # cut: the run lost its status and export but kept its checkpoints -> it is continued, not trained again
    run = runs / "8x16_seed0_steps4"
    first_line = (run / "metrics.jsonl").read_text().splitlines()[0]
    (run / "sweep_status.json").unlink()
    import shutil

    shutil.rmtree(run / "export")
    assert dvs.main(argv) == 0
    assert json.loads((run / "sweep_status.json").read_text())["command"][3] == "--resume"
    assert (run / "metrics.jsonl").read_text().splitlines()[0] == first_line and (run / "export").is_dir()
    with pytest.raises(SystemExit):
        dvs.main(["--shapes", "96by64"])
    # the last checkpoint holds the run's final weights (train.checkpoint.model_weights reads any of them)
    from dslm_zoo.train.checkpoint import CheckpointManager, model_weights

    steps = CheckpointManager(run, rank=0, world=1, keep=0).steps()
    assert [s for s, _ in steps] == [2, 4]  # a checkpoint at every milestone
    final = dslm_zoo.create_model(f"local-dir:{run / 'export'}")
    got = model_weights(steps[-1][1], final)
    for k, v in final.state_dict().items():
        torch.testing.assert_close(got[k], v, msg=k)
