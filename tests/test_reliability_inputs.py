"""Bad input is one `error:` line (exit 2; exit 1 for a failed write) with no traceback, before any
work; a failed checkpoint leaves no partial step; a corrupt checkpoint is reported in words;
every launcher answers --help with exit 0."""

import os
import resource
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxmem.train.checkpoint import Checkpointer, CheckpointWriteError

from conftest import REPO, first_in_fast_tier
from test_reliability_workdirs import launch, one_error

CROSSOVER = ["--config=configs/gmm_crossover.py:smoke"]
EDM = ["--config=configs/edm_training.py:smoke"]

BAD_INPUTS = {  # launcher, arguments (the workdir is added), exit status, a part of the error line
    "file as workdir": ("gmm_crossover", [*CROSSOVER, "--workdir={tmp}/a_file"], 2, "not an existing file"),
    "workdir under /proc": ("gmm_crossover", [*CROSSOVER, "--workdir=/proc/jaxmem_run"], 1, "cannot write /proc/"),
    "workdir inside a file (read-only as for root)": (
        "gmm_crossover", [*CROSSOVER, "--workdir={tmp}/a_file/run"], 1, "cannot write"),
    "not a config file": ("gmm_crossover", ["--config=README.md:smoke", "--workdir={tmp}/w"], 2, "not a Python config"),
    "infinite peak_lr": ("gmm_crossover", [*CROSSOVER, "--config.training.peak_lr=inf", "--workdir={tmp}/w"], 2,
                         "training.peak_lr = inf"),
    "attention at a resolution the network lacks": (
        "edm_training", [*EDM, "--config.model.attn_resolutions=(3,)", "--workdir={tmp}/w"], 2, "model.attn_resolutions"),
    "npz of identical images": ("edm_training", [*EDM, "--config.data.dataset=npz", "--config.data.path={tmp}/same.npz",
                                        "--workdir={tmp}/w"], 2, "2 distinct images"),
    "missing regimes file": ("denoiser_swaps", ["--config=configs/denoiser_swaps.py:smoke", "--config.swap.regions=geometry",
                                      "--config.swap.regimes_path={tmp}/none.json", "--workdir={tmp}/w"], 2,
                             "swap.regimes_path"),
    "malformed regimes file": ("denoiser_swaps", ["--config=configs/denoiser_swaps.py:smoke", "--config.swap.regions=geometry",
                                        "--config.swap.regimes_path={tmp}/bad.json", "--workdir={tmp}/w"], 2,
                               "swap.regimes_path"),
    "regimes file of another shape": ("denoiser_swaps", ["--config=configs/denoiser_swaps.py:smoke", "--config.swap.regions=geometry",
                                               "--config.swap.regimes_path={tmp}/list.json", "--workdir={tmp}/w"], 2,
                                      "regime map"),
    "text for a tuple of numbers": ("gmm_crossover", [*CROSSOVER, "--config.data.train_sizes=many", "--workdir={tmp}/w"],
                                    2, "data.train_sizes"),
    "more training images than the dataset holds": ("edm_training", [*EDM, "--config.data.num_train=100000",
                                                            "--workdir={tmp}/w"], 2, "data.num_train"),
    "a split the dataset lacks": ("edm_training", [*EDM, "--config.data.split=nope", "--workdir={tmp}/w"], 2, "data.split"),
    "three channels for grey images": ("edm_training", [*EDM, "--config.model.in_channels=3", "--workdir={tmp}/w"], 2,
                                       "model.image_size, model.in_channels"),
    "a positional argument to bench": ("bench", ["extra", "--workdir={tmp}/w"], 2, "unexpected arguments"),
    "zero attention heads": ("edm_training", [*EDM, "--config.model.attn_heads=0", "--workdir={tmp}/w"], 2,
                             "model.attn_heads"),
    "NaN samples to score": ("sample_quality", ["--config=configs/sample_quality.py:smoke", "--config.samples.path={tmp}/nan.npz",
                                         "--workdir={tmp}/w"], 2, "NaN"),
    "aggregate a folder that holds no sweep": ("sweep", ["--aggregate_only", "--workdir={tmp}/w"], 2, "sweep.json"),
    "a sweep launcher that does not exist": ("sweep", [*CROSSOVER, "--sweep.training.steps=10,20",
                                                       "--launcher={tmp}/none.py", "--workdir={tmp}/w"], 2,
                                             "--launcher"),
    "a compare table whose rows do not match its header": (
        "compare_crossover", ["--reference={tmp}/badcsv", "--candidate={tmp}/badcsv", "--out={tmp}/x.md"], 2,
        "does not match its header"),
    "sweep run nothing at once": ("sweep", [*CROSSOVER, "--sweep.training.steps=10,20", "--parallel=0",
                                            "--workdir={tmp}/w"], 2, "--parallel = 0"),
    "a flag value that does not parse": ("bench", ["--size=huge", "--workdir={tmp}/w"], 2, "flag --size=huge"),
    "a helper launcher's usage error": ("readme_timings", ["--only=nope", "--out={tmp}/w"], 2, "unknown commands"),
    "negative gpu_check budget": ("gpu_check", ["--budget_s=-1", "--skip_install", "--out={tmp}/w"], 2,
                                  "--budget_s"),
    "NaN tolerance": ("compare_crossover", ["--reference={tmp}", "--candidate={tmp}", "--out={tmp}/x.md",
                                            "--tolerance=nan"], 2, "--tolerance"),
}


@pytest.mark.parametrize("case", first_in_fast_tier(BAD_INPUTS))
def test_bad_input_is_one_error_line(tmp_path, case):
    name, args, code, words = BAD_INPUTS[case]
    (tmp_path / "a_file").write_text("")
    (tmp_path / "bad.json").write_text('{"regimes": {"small": ')
    (tmp_path / "list.json").write_text("[1, 2, 3]")
    np.savez(tmp_path / "same.npz", images=np.zeros((40, 8, 8, 1), np.uint8))
    np.savez(tmp_path / "nan.npz", samples=np.full((4, 8, 8, 1), np.nan, np.float32))
    (tmp_path / "badcsv").mkdir()
    for table in ("models.csv", "crossover.csv"):
        (tmp_path / "badcsv" / table).write_text("d,K\n6,2,12,0\n")
    out = launch(name, *[a.format(tmp=tmp_path) for a in args])
    assert words in one_error(out, code)
    assert not (tmp_path / "w").exists()


def test_an_edm_batch_larger_than_the_training_set_is_warned_about_before_any_work(caplog):
    from jaxmem.config import load_config
    from jaxmem.experiments import edm_training

    config = load_config("configs/edm_training.py:smoke")
    config.training.batch_size = 2 * config.data.num_train
    with caplog.at_level("WARNING"):
        edm_training.validate_config(config)
    assert f"training.batch_size = {config.training.batch_size} is larger than the training set" in caplog.text


def test_an_unwritable_compare_report_is_one_line_exit_1(tmp_path):
    for run in ("ref", "cand"):
        (tmp_path / run).mkdir()
        (tmp_path / run / "models.csv").write_text("d,K,N,seed,M,ratio\n6,2,12,0,3,0.5\n")
        (tmp_path / run / "crossover.csv").write_text("d,K,N,seed,M_pt,window_start,window_end\n6,2,12,0,3,3,3\n")
    (tmp_path / "a_file").write_text("")
    out = launch("compare_crossover", f"--reference={tmp_path / 'ref'}", f"--candidate={tmp_path / 'cand'}",
                 f"--out={tmp_path / 'a_file' / 'anchor.md'}")
    assert "cannot write" in one_error(out, 1)


@pytest.mark.parametrize("name", first_in_fast_tier(sorted(p.stem for p in (Path(REPO) / "launch").glob("*.py"))))
def test_help_exits_0_on_every_launcher(name):
    out = launch(name, "--help")
    assert out.returncode == 0 and "--" in out.stdout, out.stderr[-2000:]


def test_a_failed_checkpoint_save_leaves_no_partial_step(tmp_path):
    state = {"w": np.random.default_rng(0).normal(size=20_000).astype(np.float32)}  # 80 kB, incompressible
    checkpointer = Checkpointer(str(tmp_path / "ck"), keep=2, with_position=False)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, hard))  # a full disk
    try:
        checkpointer.save(1, state)
        with pytest.raises(CheckpointWriteError):
            checkpointer.close()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert os.listdir(tmp_path / "ck") == []


def test_a_corrupt_checkpoint_is_reported_in_words_without_tensorstores_spec(tmp_path, caplog):
    state = {"w": np.arange(1000, dtype=np.float32), "b": np.ones(3, np.float32)}
    checkpointer = Checkpointer(str(tmp_path / "ck"), keep=2, with_position=False)
    for step in (1, 2):
        checkpointer.save(step, state)
    checkpointer.close()
    removed = list((tmp_path / "ck" / "2" / "state" / "d").iterdir())
    for data in removed:  # the array store's data files are gone
        data.unlink()
    abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    again = Checkpointer(str(tmp_path / "ck"), keep=2, with_position=False)
    with caplog.at_level("ERROR"):
        assert again.restore_latest(abstract, total_steps=2).step == 1
    again.close()
    [(step, message)] = again.rejected
    assert step == 2 and message.startswith("ValueError: NOT_FOUND: ") and "tensorstore_spec" not in message
    assert any(message.endswith(f'local file "{data}"') for data in removed), message  # whole, not cut short
    assert message in caplog.text and "tensorstore_spec" not in caplog.text


def test_the_crossover_figure_labels_what_the_report_says(tmp_path, monkeypatch):
    from jaxmem.theory import linear_fits
    from jaxmem.plots import crossover

    rows = [dict(d=6, K=2, N=n, M_pt=0.8 * n, window_start=0.8 * n - 1, window_end=0.8 * n + 1,
                 Mstar_measured_x0=0.762 * n + 3 + (n % 7) / 10) for n in (20, 40, 60, 80)]
    measured = linear_fits([r["N"] for r in rows], [r["Mstar_measured_x0"] for r in rows])
    figures = []
    monkeypatch.setattr(crossover.io, "save_figure", lambda path, figure: figures.append(figure) or path)
    crossover.save_crossover(str(tmp_path / "crossover.png"), rows, linear_fits([r["N"] for r in rows],
                                                                                 [r["M_pt"] for r in rows]))
    axis = figures[0].axes[0]
    labels = axis.get_legend_handles_labels()[1]
    assert any(f"{measured['slope']:.3f} N" in label and "measured losses" in label for label in labels), labels
    assert "M_pt" in axis.get_title() and "M*" not in axis.get_title()
    assert len(labels) == len(axis.get_legend().get_texts())
    assert any("per data set" in label for label in labels)  # the measured M* markers have an entry
