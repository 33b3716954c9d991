"""The trainer: recipes, the DSLM learning-rate rule, exact resume after SIGKILL, DDP and FSDP2 against one
process, non-finite detection, run-directory checks, export and plot."""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import dslm_zoo
from dslm_zoo.cli import main as cli_main
from dslm_zoo.data import DataNotFoundError
from dslm_zoo.train import NonFiniteError, RecipeError, RunDirError, Trainer, load_recipe, read_metrics
from dslm_zoo.train.config import Recipe, apply_overrides, recipe_diff
from dslm_zoo.train.optim import dslm_lr_multipliers, lr_factor, param_groups
from dslm_zoo.train.config import OptimSection, ScheduleSection

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "recipes" / "tiny_mlm.yaml"
# a few-second version of the tiny recipe: 2 layers, short windows, no dropout (so runs compare exactly)
FAST = [
    "model.kwargs.depth=2", "model.kwargs.drop_rate=0.0", "train.steps=6", "train.batch_size=8",
    "data.kwargs.seq_len=32", "train.eval_every=3", "train.eval_batches=2", "train.checkpoint_every=3",
    "schedule.warmup_steps=2",
]


def fast_recipe(*extra: str) -> Recipe:
    return load_recipe(TINY, [*FAST, *extra])


def losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir) if "split" not in r]


def run_cli(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    e = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "dslm_zoo.train", *args], capture_output=True, text=True, env=e, **kw)


def torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "dslm_zoo.train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=240)


def set_args(items: list[str]) -> list[str]:
    return [x for item in items for x in ("--set", item)]


# ------------------------------------------------------------------------------------------------- recipes


def test_shipped_recipes_load():
    for path in sorted((ROOT / "recipes").glob("*.y*ml")):
        r = load_recipe(path)
        assert dslm_zoo.is_model(r.model.name), path


def test_unknown_keys_name_the_key_and_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("  batch_size: 32", "  batchsize: 32"))
    with pytest.raises(RecipeError, match=r"bad\.yaml.*'batchsize'.*did you mean 'batch_size'"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match=r"unknown section.*'optimiser'"):
        Recipe.from_dict({"model": {"name": "dslm_bert_tiny"}, "task": {"name": "masked_lm"}, "train": {"steps": 1},
                          "optimiser": {}}, "x.yaml")
    with pytest.raises(RecipeError, match=r"tiny_mlm\.yaml --set 'optim\.lrr=1'.*'lrr'"):
        load_recipe(TINY, ["optim.lrr=1"])
    with pytest.raises(RecipeError, match=r"train\.precision must be one of"):
        load_recipe(TINY, ["train.precision=fp8"])
    with pytest.raises(RecipeError, match=r"train\.steps must be >= 1"):
        load_recipe(TINY, ["train.steps=0"])
    with pytest.raises(RecipeError, match="expected section.key=value"):
        load_recipe(TINY, ["steps"])


def test_overrides_parse_yaml_scalars_and_nested_kwargs():
    r = load_recipe(TINY, ["optim.lr=5e-4", "optim.betas=[0.8, 0.9]", "model.kwargs.depth=3", "train.compile=true"])
    assert r.optim.lr == 5e-4 and r.optim.betas == (0.8, 0.9) and r.model.kwargs["depth"] == 3 and r.train.compile is True
    d = apply_overrides(r.to_dict(), ["train.steps=7"])
    assert recipe_diff(r.to_dict(), d) == ["train.steps: 600 -> 7"]


def test_toml_recipe(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text('[model]\nname = "dslm_bert_tiny"\n[task]\nname = "masked_lm"\n[train]\nsteps = 3\n[optim]\nlr = 1e-3\n')
    r = load_recipe(p)
    assert r.train.steps == 3 and r.optim.lr == 1e-3 and r.data.name == "toy_text"


def test_unknown_task_and_task_options(tmp_path):
    with pytest.raises(RecipeError, match="unknown task 'mlm'"):
        Trainer(fast_recipe("task.name=mlm"), tmp_path / "a")
    with pytest.raises(RecipeError, match=r"no option\(s\) \['mask_rate'\]"):
        Trainer(fast_recipe("task.kwargs.mask_rate=0.2"), tmp_path / "b")
    with pytest.raises(RecipeError, match="causal decoder"):
        Trainer(fast_recipe("task.name=causal_lm", "task.kwargs={}"), tmp_path / "c")


# --------------------------------------------------------------------------------------- the DSLM lr rule


def test_dslm_rule_from_init_scales_and_beta():
    m = dslm_zoo.create_model("dslm_bert_tiny", depth=6, vocab_size=100, max_seq_len=32, drop_rate=0.1, dslm_k=2.0)
    mult = dslm_lr_multipliers(m)
    # embedding table: DSLM std sqrt((1-p)/n_t) over the baseline's 0.02 (three tables: word, position, segment)
    assert mult["embed.word.weight"] == pytest.approx(math.sqrt(0.9 / 3) / 0.02)
    # FFN W1 in a branch: init ratio times (2/sqrt(N_sub))/beta = 2/sqrt(k)
    fc1 = m.encoder.blocks[0].mlp.branch.fc1
    ratio = fc1.weight.std().item() / math.sqrt(2 / (64 + 256))
    assert mult["encoder.blocks.0.mlp.branch.fc1.weight"] == pytest.approx(ratio * 2 / math.sqrt(2), rel=0.05)
    # LayerNorms and the head are outside the branches and drawn alike: factor 1
    assert mult["encoder.blocks.0.mlp.norm.weight"] == 1.0 and mult["head.dense.weight"] == 1.0
    # depth does not change the rule (the branch factor is 2/sqrt(k) at every depth)
    deep = dslm_lr_multipliers(dslm_zoo.create_model("dslm_bert_tiny", depth=48, vocab_size=100, max_seq_len=32, drop_rate=0.1, device="meta"))
    assert deep["encoder.blocks.0.mlp.branch.fc1.weight"] == pytest.approx(mult["encoder.blocks.0.mlp.branch.fc1.weight"], rel=1e-6)
    # a larger k (larger beta) asks for a smaller rate in the branches, not outside them
    k8 = dslm_lr_multipliers(dslm_zoo.create_model("dslm_bert_tiny", depth=6, vocab_size=100, max_seq_len=32, drop_rate=0.1, dslm_k=8.0))
    assert k8["encoder.blocks.0.mlp.branch.fc1.weight"] == pytest.approx(mult["encoder.blocks.0.mlp.branch.fc1.weight"] / 2, rel=1e-6)
    assert k8["embed.word.weight"] == mult["embed.word.weight"]


def test_param_groups_weight_decay_and_rule_selection():
    m = dslm_zoo.create_model("dslm_bert_tiny", depth=2, vocab_size=100, max_seq_len=32)
    groups, plan = param_groups(m, m, OptimSection(lr=1e-3, weight_decay=0.1))
    assert plan.rule == "dslm" and plan.max_multiplier > 20
    by_name = {n: g for g in groups for n in g["names"]}
    assert by_name["embed.word.weight"]["weight_decay"] == 0.0  # embeddings, norms and biases: no decay
    assert by_name["encoder.blocks.0.attn.norm.weight"]["weight_decay"] == 0.0
    assert by_name["encoder.blocks.0.mlp.branch.fc1.bias"]["weight_decay"] == 0.0
    assert by_name["encoder.blocks.0.mlp.branch.fc1.weight"]["weight_decay"] == 0.1
    assert by_name["embed.word.weight"]["lr"] == pytest.approx(1e-3 * by_name["embed.word.weight"]["lr_mult"])
    assert sum(len(g["params"]) for g in groups) == len(list(m.parameters()))
    x = dslm_zoo.create_model("dslm_bert_tiny", depth=2, vocab_size=100, max_seq_len=32, init="xavier")
    groups, plan = param_groups(x, x, OptimSection())
    assert plan.rule == "none" and {g["lr_mult"] for g in groups} == {1.0}
    _, forced = param_groups(x, x, OptimSection(lr_rule="dslm"))
    assert forced.rule == "dslm"


def test_schedule_warmup_then_cosine_or_linear():
    s = ScheduleSection(warmup_steps=4, decay="cosine", min_lr_ratio=0.1)
    f = [lr_factor(i, 14, s) for i in range(14)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0] and f[4] == pytest.approx(1.0) and f[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(f[3:], f[4:]))
    lin = ScheduleSection(warmup_steps=0, decay="linear", min_lr_ratio=0.0)
    assert [lr_factor(i, 5, lin) for i in range(5)] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])


# ----------------------------------------------------------------------------------------------- the loop


def test_tiny_run_writes_metrics_plot_export_and_checkpoints(tmp_path):
    run = tmp_path / "run"
    trainer = Trainer(fast_recipe(), run)
    res = trainer.run()
    assert res.steps == 6
    rows = read_metrics(run)
    train = [r for r in rows if "split" not in r]
    assert [r["step"] for r in train] == list(range(1, 7))
    assert all({"step", "loss", "lr", "tokens_per_s", "grad_norm", "step_s", "peak_mem_mb"} <= set(r) for r in train)
    # the process's peak resident set: at least the model's fp32 weights, and it never goes down
    peaks = [r["peak_mem_mb"] for r in train]
    assert peaks == sorted(peaks) and peaks[0] > trainer.num_params * 4 / 2**20
    evals = [r for r in rows if r.get("split") == "validation"]
    assert [r["step"] for r in evals] == [3, 6] and all("eval_loss" in r and "eval_ppl" in r for r in evals)
    assert (run / "loss.png").stat().st_size > 10_000
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000003", "step_000006"]
    info = json.loads((run / "run.json").read_text())
    assert info["lr_plan"]["rule"] == "dslm" and info["data"]["name"] == "toy_text"
    # the export is the hub layout: it rebuilds the trained model exactly, and its card tells how it was made
    card = (run / "export" / "README.md").read_text()
    assert "dslm-zoo train" in card and "6 steps" in card and "toy_text" in card and "eval_loss" in card
    from tokenizers import Tokenizer

    assert Tokenizer.from_file(str(run / "export" / "tokenizer.json")).get_vocab_size() == trainer.task.text.vocab_size
    assert json.loads((run / "export" / "config.json").read_text())["pretrained_cfg"]["tokenizer"] == "tokenizer.json"
    loaded = dslm_zoo.create_model(f"local-dir:{run / 'export'}").eval()
    x = torch.randint(5, loaded.cfg.vocab_size, (2, 16))
    torch.testing.assert_close(loaded(x), trainer.bare.eval()(x), rtol=0, atol=0)


def test_loss_goes_down_and_accumulation_matches_one_batch(tmp_path):
    a = Trainer(fast_recipe("train.steps=8"), tmp_path / "a").run()
    b = Trainer(fast_recipe("train.steps=8", "train.micro_batch_size=2"), tmp_path / "b").run()
    la, lb = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert la[-1] < la[0] - 0.5
    assert lb == pytest.approx(la, rel=1e-5, abs=1e-5)
    assert a.final_loss == pytest.approx(b.final_loss, rel=1e-5)


def test_bf16_autocast_and_grad_checkpointing(tmp_path):
    ref = losses(Trainer(fast_recipe(), tmp_path / "fp32").run().run_dir)
    ckpt = losses(Trainer(fast_recipe("train.grad_checkpointing=true"), tmp_path / "ckpt").run().run_dir)
    assert ckpt == pytest.approx(ref, rel=1e-5, abs=1e-5)  # recomputation, same numbers
    t = Trainer(fast_recipe("train.precision=bf16"), tmp_path / "bf16")
    bf = losses(t.run().run_dir)
    assert all(p.dtype == torch.float32 for p in t.bare.parameters())  # fp32 master weights
    assert all(math.isfinite(x) for x in bf) and bf == pytest.approx(ref, rel=0.05)


def test_fp16_is_refused_on_cpu(tmp_path):
    with pytest.raises(RecipeError, match="fp16.*needs a GPU"):
        Trainer(fast_recipe("train.precision=fp16", "train.device=cpu"), tmp_path / "r")


def test_causal_lm_task_trains_a_gpt(tmp_path):
    r = fast_recipe("model.name=dslm_gpt_tiny", "task.name=causal_lm", "task.kwargs={}")
    res = Trainer(r, tmp_path / "gpt").run()
    ls = losses(tmp_path / "gpt")
    assert res.steps == 6 and ls[-1] < ls[0]


# ------------------------------------------------------------------------------------------ never lose a run


def test_sigkill_then_resume_logs_bitwise_the_same_losses(tmp_path):
    args = set_args(FAST[:-5] + ["train.steps=40", "train.batch_size=32", "data.kwargs.seq_len=64", "train.eval_every=0",
                                 "train.checkpoint_every=10", "train.keep_checkpoints=5"])
    ref = run_cli(str(TINY), "--out", str(tmp_path / "ref"), *args, timeout=300)
    assert ref.returncode == 0, ref.stderr
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "dslm_zoo.train", str(TINY), "--out", str(run), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        rows = read_metrics(run) if (run / "metrics.jsonl").exists() else []
        if rows and rows[-1]["step"] >= 13:
            proc.send_signal(signal.SIGKILL)
            killed_at = rows[-1]["step"]
            break
        time.sleep(0.005)
    proc.wait()
    assert killed_at is not None, "the run ended before it could be killed"
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("step_"))
    last = int(ckpts[-1].split("_")[1])
    assert 10 <= last < 40 and last % 10 == 0  # killed after a checkpoint and before the end
    res = run_cli("--resume", str(run), timeout=300)
    assert res.returncode == 0, res.stderr
    assert losses(run) == losses(tmp_path / "ref")  # bitwise: CPU, fp32, one process
    assert [r["step"] for r in read_metrics(run)] == [r["step"] for r in read_metrics(tmp_path / "ref")]


def test_resume_refuses_a_changed_recipe_unless_forced(tmp_path):
    run = tmp_path / "r"
    Trainer(fast_recipe(), run).run()
    with pytest.raises(RecipeError, match=r"changed recipe is refused \(pass --force.*optim\.lr: 0\.002 -> 0\.001"):
        Trainer(None, run, resume=True, overrides=["optim.lr=1e-3"])
    with pytest.raises(RunDirError, match="already holds a run"):
        Trainer(fast_recipe(), run)
    t = Trainer(None, run, resume=True, overrides=["train.steps=8"], force=True)
    assert t.step == 6
    t.run()
    assert [r["step"] for r in read_metrics(run) if "split" not in r] == list(range(1, 9))


def test_ddp_and_fsdp2_match_one_process(tmp_path):
    base = [str(TINY), *set_args(FAST)]
    one = run_cli(*base, "--out", str(tmp_path / "one"), timeout=120)
    assert one.returncode == 0, one.stderr
    ref = losses(tmp_path / "one")
    for strategy in ("ddp", "fsdp2"):
        out = tmp_path / strategy
        r = torchrun(2, *base, "--out", str(out), "--set", f"train.strategy={strategy}")
        assert r.returncode == 0, r.stderr[-3000:]
        assert json.loads((out / "run.json").read_text())["world_size"] == 2
        assert losses(out) == pytest.approx(ref, rel=1e-5, abs=1e-5), strategy
    # FSDP2 resumes from its sharded DCP checkpoint: drop everything after step 3 and continue under torchrun
    run = tmp_path / "fsdp2"
    shutil.rmtree(run / "checkpoints" / "step_000006")
    shutil.rmtree(run / "export")
    r = torchrun(2, "--resume", str(run))
    assert r.returncode == 0, r.stderr[-3000:]
    assert losses(run) == pytest.approx(ref, rel=1e-5, abs=1e-5)


class _InjectInf:
    """A forward hook that turns one sub-layer's output into inf from its ``at_call``-th forward on, ``times``
    times: 2 covers the failing step and the trainer's replay of it that locates the sub-layer."""

    def __init__(self, at_call: int, times: int = 2):
        self.calls, self.at_call, self.times = 0, at_call, times

    def __call__(self, mod, args, out):
        self.calls += 1
        if self.at_call <= self.calls < self.at_call + self.times:
            return out * float("inf")
        return out


def test_injected_inf_is_caught_named_and_the_last_checkpoint_kept(tmp_path):
    t = Trainer(fast_recipe("train.checkpoint_every=2", "train.eval_every=0"), tmp_path / "r")  # forwards = steps
    fc2 = t.bare.encoder.blocks[1].mlp.branch.fc2
    fc2.register_forward_hook(_InjectInf(at_call=5))  # step 5's forward
    with pytest.raises(NonFiniteError, match=r"step 5.*activations: encoder\.blocks\.1\.mlp \(ffn sub-layer 3 of stack 0.*step_000004"):
        t.run()
    assert sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir()) == ["step_000002", "step_000004"]
    assert "nonfinite" in read_metrics(tmp_path / "r")[-1]


def test_skip_mode_drops_the_bad_step_and_continues(tmp_path):
    t = Trainer(fast_recipe("train.on_nonfinite=skip", "train.eval_every=0"), tmp_path / "r")
    t.bare.encoder.blocks[0].attn.branch.proj.register_forward_hook(_InjectInf(at_call=3))
    res = t.run()
    rows = [r for r in read_metrics(tmp_path / "r") if "split" not in r]
    assert res.steps == 6 and rows[2].get("skipped") is True and "encoder.blocks.0.attn" in rows[2]["nonfinite"]
    assert t.counters["skipped"] == 1 and all(math.isfinite(p.detach().sum()) for p in t.bare.parameters())


def test_nonfinite_exit_code_from_the_cli(tmp_path):
    r = run_cli(str(TINY), "--out", str(tmp_path / "r"), *set_args(FAST + ["optim.lr=1e30", "optim.clip_grad_norm=null",
                                                                         "train.steps=4"]), timeout=120)
    assert r.returncode == 3 and "non-finite" in r.stderr and "Traceback" not in r.stderr


def test_missing_data_names_the_prep_command(tmp_path, monkeypatch):
    monkeypatch.setenv("DSLM_ZOO_DATA", str(tmp_path / "empty"))
    with pytest.raises(DataNotFoundError, match="dslm-zoo data prepare python-docs"):
        Trainer(fast_recipe("data.name=python-docs"), tmp_path / "r")
    assert not (tmp_path / "r").exists()  # nothing was created before the failure


def test_unwritable_or_full_run_dir_fails_before_training(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunDirError, match="not writable"):
        Trainer(fast_recipe(), blocker / "run")
    import shutil as sh
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(sh, "disk_usage", lambda p: usage(10 << 20, 10 << 20, 1 << 20))
    with pytest.raises(RunDirError, match="MiB free; this run needs about"):
        Trainer(fast_recipe(), tmp_path / "full")
    assert not (tmp_path / "full" / "metrics.jsonl").exists()


def test_cli_errors_are_one_line_and_plot_command(tmp_path, capsys):
    assert cli_main(["train", str(TINY), "--out", str(tmp_path / "x"), "--set", "train.stepz=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown key" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert cli_main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "no run to resume" in capsys.readouterr().err
    Trainer(fast_recipe(), tmp_path / "run").run()
    (tmp_path / "run" / "loss.png").unlink()
    assert cli_main(["plot", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "loss.png").is_file()
    assert cli_main(["plot", str(tmp_path)]) == 2


@pytest.mark.slow
def test_compile_per_block_matches_eager_and_compiles_once(tmp_path):
    """`compile: true` compiles each block; identical blocks share one graph, so depth does not add compiles."""
    import torch._dynamo

    eager = losses(Trainer(fast_recipe("model.kwargs.depth=4"), tmp_path / "eager").run().run_dir)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    t = Trainer(fast_recipe("model.kwargs.depth=4", "train.compile=true"), tmp_path / "compiled")
    compiled = losses(t.run().run_dir)
    assert compiled == pytest.approx(eager, rel=1e-4, abs=1e-4)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] <= 2  # train and eval mode, not one per block


def test_checkpoint_averaging_exports_the_mean_of_the_last_checkpoints(tmp_path):
    t = Trainer(fast_recipe("train.checkpoint_every=2", "train.keep_checkpoints=3", "train.average_last=3"), tmp_path / "r")
    t.run()
    import torch.distributed.checkpoint as dcp

    means = {}
    for step in (2, 4, 6):
        sd = {k: v.clone() for k, v in t.bare.state_dict().items()}
        dcp.load({"model": sd}, checkpoint_id=str(tmp_path / "r" / "checkpoints" / f"step_{step:06d}"))
        for k, v in sd.items():
            means[k] = means.get(k, 0) + v.double() / 3
    exported = dslm_zoo.create_model(f"local-dir:{tmp_path / 'r' / 'export'}").state_dict()
    for k, v in exported.items():
        torch.testing.assert_close(v, means[k].float(), rtol=1e-6, atol=1e-7)
    assert read_metrics(tmp_path / "r")[-1]["averaged_checkpoints"] == 3
    with pytest.raises(RecipeError, match=r"average_last=3 needs train\.keep_checkpoints >= it"):
        fast_recipe("train.keep_checkpoints=2", "train.average_last=3")


def test_bucketing_refuses_tasks_of_fixed_size_samples(tmp_path):
    from dslm_zoo.train import Trainer, load_recipe
    from dslm_zoo.train.config import RecipeError
    from dslm_zoo.train.trainer import GlobalSampler

    recipe = load_recipe(ROOT / "recipes" / "tiny_mlm.yaml", ["train.steps=1", "train.bucket_batches=4"])
    with pytest.raises(RecipeError, match="bucket_batches needs sample lengths"):
        Trainer(recipe, tmp_path / "run")
    with pytest.raises(RecipeError, match="bucket_batches"):
        load_recipe(ROOT / "recipes" / "tiny_mlm.yaml", ["train.bucket_batches=-1"])
    with pytest.raises(ValueError, match="one length per sample"):
        GlobalSampler(5, 0, lengths=[1, 2], bucket=2, batch=2)
