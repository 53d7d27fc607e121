"""Bad-input survey: every launcher in launch/ given inputs a new user gets wrong, each run once
and classified by what the user sees.

    python results/reliability/survey.py [--repo=.] [--out=results/reliability/survey] [--jobs=2]

Outcomes: `clean error` (exactly one `error:` line on stderr, exit 2, or 1 for a failed write,
no traceback, nothing in the case's folder changed), `traceback`, `warned` (accepted, with a
warning that names the config field), `silently wrong` (exit 0, or still working after --timeout
seconds: the input was accepted without a word), `killed` (ended by a signal jaxmem did not
send, e.g. the kernel's out-of-memory killer), `unclear` (anything else).
Every case fails before any work when the launcher validates at the door, so each takes the
seconds of a Python start. Writes <out>.csv (one row per case) and <out>.md (counts).
"""

import argparse
import collections
import concurrent.futures
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

import numpy as np

X = "--config=configs/gmm_crossover.py:smoke"
E = "--config=configs/edm_training.py:smoke"
G = "--config=configs/noise_regimes.py:smoke"
S = "--config=configs/denoiser_swaps.py:smoke"
Q = "--config=configs/sample_quality.py:smoke"
SAMPLES = "--config.samples.path={tmp}/samples.npz"
W = "--workdir={tmp}/w"
GEO = ["--config.swap.regions=geometry"]

# (case, launcher, arguments); {tmp} is the case's own folder, which holds the fixtures of make_fixtures.
CASES = [
    # the config launchers: presets, files, fields, types
    ("unknown preset", "gmm_crossover", ["--config=configs/gmm_crossover.py:nope", W]),
    ("missing config file", "edm_training", ["--config=configs/nope.py:smoke", W]),
    ("a Markdown file as config", "gmm_crossover", ["--config=README.md:smoke", W]),
    ("a TOML file as config", "edm_training", ["--config=pyproject.toml", W]),
    ("a Python file that is no config", "noise_regimes", ["--config=launch/gmm_crossover.py", W]),
    ("no --config", "gmm_crossover", [W]),
    ("misspelled field", "gmm_crossover", [X, "--config.training.stepz=10", W]),
    ("misspelled group", "edm_training", [E, "--config.trainin.batch_size=8", W]),
    ("text for an integer", "gmm_crossover", [X, "--config.training.steps=abc", W]),
    ("fraction for an integer", "edm_training", [E, "--config.training.batch_size=1.5", W]),
    ("text for a float", "edm_training", [E, "--config.optim.peak_lr=fast", W]),
    ("text for a tuple", "gmm_crossover", [X, "--config.data.train_sizes=many", W]),
    ("text for a bool", "gmm_crossover", [X, "--config.sampling.final_denoise=maybe", W]),
    ("override without a value", "noise_regimes", [G, "--config.data.num_train", W]),
    ("unknown flag", "gmm_crossover", [X, "--bogus=1", W]),
    ("positional argument", "edm_training", [E, W, "extra"]),
    # numbers out of range
    ("negative steps", "gmm_crossover", [X, "--config.training.steps=-5", W]),
    ("zero steps", "gmm_crossover", [X, "--config.training.steps=0", W]),
    ("NaN peak_lr", "gmm_crossover", [X, "--config.training.peak_lr=nan", W]),
    ("infinite peak_lr", "gmm_crossover", [X, "--config.training.peak_lr=inf", W]),
    ("negative peak_lr", "gmm_crossover", [X, "--config.training.peak_lr=-0.01", W]),
    ("negative train size", "gmm_crossover", [X, "--config.data.train_sizes=(-8,)", W]),
    ("zero train size", "gmm_crossover", [X, "--config.data.train_sizes=(0,)", W]),
    ("empty train sizes", "gmm_crossover", [X, "--config.data.train_sizes=()", W]),
    ("zero dimension", "gmm_crossover", [X, "--config.data.dims=(0,)", W]),
    ("zero components", "gmm_crossover", [X, "--config.data.num_components=(0,)", W]),
    ("negative capacity fraction", "gmm_crossover", [X, "--config.model.capacity_fractions=(-0.5,)", W]),
    ("unknown data model", "gmm_crossover", [X, "--config.data.model=banana", W]),
    ("negative variance", "gmm_crossover", [X, "--config.data.variance=-1.0", W]),
    ("replicated fraction above 1", "gmm_crossover", [X, "--config.data.replication=fraction",
                                                 "--config.data.replicated_fraction=1.5", W]),
    ("unknown replication", "gmm_crossover", [X, "--config.data.replication=nope", W]),
    ("negative delta", "gmm_crossover", [X, "--config.eval.delta=-1.0", W]),
    ("unknown weighting", "gmm_crossover", [X, "--config.eval.weightings=('nope',)", W]),
    ("zero samples", "gmm_crossover", [X, "--config.sampling.num_samples=0", W]),
    ("zero sampler steps", "gmm_crossover", [X, "--config.sampling.num_steps=0", W]),
    ("negative batch", "gmm_crossover", [X, "--config.training.batch_size=-1", W]),
    ("unknown estimator", "gmm_crossover", [X, "--config.training.estimator=nope", W]),
    ("unknown optimizer", "gmm_crossover", [X, "--config.training.optimizer=nope", W]),
    ("unknown init", "gmm_crossover", [X, "--config.model.init=nope", W]),
    ("warmup fraction above 1", "gmm_crossover", [X, "--config.training.warmup_fraction=2.0", W]),
    ("t_min above t_max", "gmm_crossover", [X, "--config.training.t_min=0.5", "--config.training.t_max=0.1", W]),
    ("zero seeds", "gmm_crossover", [X, "--config.model.num_seeds=0", W]),
    ("zero validation points", "gmm_crossover", [X, "--config.data.num_val=0", W]),
    ("100M training points (memory)", "gmm_crossover", [X, "--config.data.train_sizes=(100000000,)", W]),
    ("unknown dataset", "edm_training", [E, "--config.data.dataset=nope", W]),
    ("negative training images", "edm_training", [E, "--config.data.num_train=-1", W]),
    ("more training images than the dataset", "edm_training", [E, "--config.data.num_train=100000", W]),
    ("unknown split", "edm_training", [E, "--config.data.split=nope", W]),
    ("zero batch", "edm_training", [E, "--config.training.batch_size=0", W]),
    ("batch larger than the training set", "edm_training", [E, "--config.training.batch_size=64", W]),
    ("zero training images seen", "edm_training", [E, "--config.training.total_images=0", W]),
    ("NaN lr", "edm_training", [E, "--config.optim.peak_lr=nan", W]),
    ("infinite lr", "edm_training", [E, "--config.optim.peak_lr=inf", W]),
    ("negative lr", "edm_training", [E, "--config.optim.peak_lr=-0.001", W]),
    ("beta1 of 1.5", "edm_training", [E, "--config.optim.adam_b1=1.5", W]),
    ("one kept checkpoint", "edm_training", [E, "--config.training.keep_checkpoints=1", W]),
    ("attention at an absent resolution", "edm_training", [E, "--config.model.attn_resolutions=(3,)", W]),
    ("image size of the wrong data", "edm_training", [E, "--config.model.image_size=32", W]),
    ("odd image size", "edm_training", [E, "--config.model.image_size=7", W]),
    ("three channels for grey data", "edm_training", [E, "--config.model.in_channels=3", W]),
    ("empty channel_mult", "edm_training", [E, "--config.model.channel_mult=()", W]),
    ("zero channels", "edm_training", [E, "--config.model.channels=0", W]),
    ("dropout of 1.5", "edm_training", [E, "--config.model.dropout=1.5", W]),
    ("unknown dtype", "edm_training", [E, "--config.model.dtype=float7", W]),
    ("zero attention heads", "edm_training", [E, "--config.model.attn_heads=0", W]),
    ("unknown solver", "edm_training", [E, "--config.sampling.solver=rk4", W]),
    ("zero sampling steps", "edm_training", [E, "--config.sampling.num_steps=0", W]),
    ("negative sigma_min", "edm_training", [E, "--config.sampling.sigma_min=-1.0", W]),
    ("sigma_min above sigma_max", "edm_training", [E, "--config.sampling.sigma_min=100.0", W]),
    ("npz without a path", "edm_training", [E, "--config.data.dataset=npz", W]),
    ("npz path that does not exist", "edm_training", [E, "--config.data.dataset=npz", "--config.data.path={tmp}/no.npz", W]),
    ("a text file as npz", "edm_training", [E, "--config.data.dataset=npz", "--config.data.path={tmp}/a_file", W]),
    ("npz without images", "edm_training", [E, "--config.data.dataset=npz", "--config.data.path={tmp}/nokey.npz", W]),
    ("npz of identical images", "edm_training", [E, "--config.data.dataset=npz", "--config.data.path={tmp}/same.npz", W]),
    ("npz with NaN pixels", "edm_training", [E, "--config.data.dataset=npz", "--config.data.path={tmp}/nan.npz", W]),
    ("npz of 1-D images", "edm_training", [E, "--config.data.dataset=npz", "--config.data.path={tmp}/flat.npz", W]),
    ("geometry: unknown preset", "noise_regimes", ["--config=configs/noise_regimes.py:nope", W]),
    ("geometry: zero training points", "noise_regimes", [G, "--config.data.num_train=0", W]),
    ("geometry: negative held-out points", "noise_regimes", [G, "--config.data.num_heldout=-1", W]),
    ("geometry: zero levels", "noise_regimes", [G, "--config.grid.num_sigmas=0", W]),
    ("geometry: negative sigma_min", "noise_regimes", [G, "--config.grid.sigma_min=-1.0", W]),
    ("geometry: sigma_min above sigma_max", "noise_regimes", [G, "--config.grid.sigma_min=100.0", W]),
    ("geometry: zero block size", "noise_regimes", [G, "--config.compute.block_size=0", W]),
    ("geometry: NaN shell constant", "noise_regimes", [G, "--config.coverage.c=nan", W]),
    ("geometry: threshold above 1", "noise_regimes", [G, "--config.regimes.w_threshold=2.0", W]),
    ("geometry: more points than the training set", "noise_regimes", [G, "--config.concentration.num_points=100000", W]),
    ("geometry: unknown dataset", "noise_regimes", [G, "--config.data.dataset=nope", W]),
    ("geometry: unknown held-out split", "noise_regimes", [G, "--config.data.heldout_split=nope", W]),
    ("swap: missing regimes file", "denoiser_swaps", [S, *GEO, "--config.swap.regimes_path={tmp}/no.json", W]),
    ("swap: malformed regimes.json", "denoiser_swaps", [S, *GEO, "--config.swap.regimes_path={tmp}/bad.json", W]),
    ("swap: regimes.json of another shape", "denoiser_swaps", [S, *GEO, "--config.swap.regimes_path={tmp}/list.json", W]),
    ("swap: geometry regions without a file", "denoiser_swaps", [S, *GEO, W]),
    ("swap: unknown regions", "denoiser_swaps", [S, "--config.swap.regions=nope", W]),
    ("swap: reversed window", "denoiser_swaps", [S, "--config.swap.windows.small=(5, 4)", W]),
    ("swap: window past the grid", "denoiser_swaps", [S, "--config.swap.windows.small=(4, 100)", W]),
    ("swap: unknown solver", "denoiser_swaps", [S, "--config.swap.solver=rk4", W]),
    ("swap: unknown mitigation region", "denoiser_swaps", [S, "--config.mitigation.region=nope", W]),
    ("swap: negative mitigation weight", "denoiser_swaps", [S, "--config.mitigation.weight=-1.0", W]),
    ("swap: confidence level above 1", "denoiser_swaps", [S, "--config.eval.level=1.5", W]),
    ("swap: guidance scales without 1.0", "denoiser_swaps", [S, "--config.trajectory.guidance_scales=(2.0,)", W]),
    ("swap: model A on RGB input", "denoiser_swaps", [S, "--config.memorizing.model.in_channels=3", W]),
    ("quality: no samples path", "sample_quality", [Q, W]),
    ("quality: missing samples file", "sample_quality", [Q, "--config.samples.path={tmp}/no.npz", W]),
    ("quality: a text file as samples", "sample_quality", [Q, "--config.samples.path={tmp}/a_file", W]),
    ("quality: npz without samples", "sample_quality", [Q, "--config.samples.path={tmp}/nokey.npz", W]),
    ("quality: samples with NaN", "sample_quality", [Q, "--config.samples.path={tmp}/nan.npz", W]),
    ("quality: zero KID subsets", "sample_quality", [Q, SAMPLES, "--config.metrics.kid_subsets=0", W]),
    ("quality: zero neighbours", "sample_quality", [Q, SAMPLES, "--config.metrics.neighbours=0", W]),
    ("quality: unknown dataset", "sample_quality", [Q, SAMPLES, "--config.data.dataset=nope", W]),
    # workdirs
    ("workdir is a file", "gmm_crossover", [X, "--workdir={tmp}/a_file"]),
    ("workdir inside a file", "edm_training", [E, "--workdir={tmp}/a_file/run"]),
    ("workdir under /proc", "gmm_crossover", [X, "--workdir=/proc/jaxmem_survey"]),
    ("workdir under /sys", "noise_regimes", [G, "--workdir=/sys/jaxmem_survey"]),
    ("read-only workdir", "gmm_crossover", [X, "--workdir={tmp}/readonly/w"]),
    ("read-only workdir (edm)", "edm_training", [E, "--workdir={tmp}/readonly/w"]),
    ("edm on a crossover run", "edm_training", [E, "--workdir={tmp}/crossover_run"]),
    ("crossover on an edm run", "gmm_crossover", [X, "--workdir={tmp}/edm_run"]),
    ("geometry on a crossover run", "noise_regimes", [G, "--workdir={tmp}/crossover_run"]),
    ("swap on an edm run", "denoiser_swaps", [S, "--workdir={tmp}/edm_run"]),
    ("swap model folder in a crossover run", "denoiser_swaps", [S, "--config.workdirs.memorizing={tmp}/crossover_run", W]),
    ("swap model folder is a file", "denoiser_swaps", [S, "--config.workdirs.generalizing={tmp}/a_file", W]),
    ("quality on a geometry run", "sample_quality", [Q, SAMPLES, "--workdir={tmp}/geometry_run"]),
    ("crossover on an unknown non-empty folder", "gmm_crossover", [X, "--workdir={tmp}/thesis"]),
    ("edm on a folder with a malformed experiment.json", "edm_training", [E, "--workdir={tmp}/bad_owner"]),
    ("sweep on an edm run", "sweep", [X, "--sweep.training.steps=10,20", "--workdir={tmp}/edm_run"]),
    # the sweep driver
    ("sweep: --parallel=0", "sweep", [X, "--sweep.training.steps=10,20", "--parallel=0", W]),
    ("sweep: --parallel=-1", "sweep", [X, "--sweep.training.steps=10,20", "--parallel=-1", W]),
    ("sweep: --parallel=two", "sweep", [X, "--sweep.training.steps=10,20", "--parallel=two", W]),
    ("sweep: --gpus_per_run=-1", "sweep", [X, "--sweep.training.steps=10,20", "--gpus_per_run=-1", W]),
    ("sweep: --busy_wait=-1", "sweep", [X, "--sweep.training.steps=10,20", "--busy_wait=-1", W]),
    ("sweep: --run_index out of range", "sweep", [X, "--sweep.training.steps=10,20", "--run_index=9", W]),
    ("sweep: empty axis", "sweep", [X, "--sweep.training.steps=", W]),
    ("sweep: axis of an unknown field", "sweep", [X, "--sweep.training.stepz=10,20", W]),
    ("sweep: text values for an integer axis", "sweep", [X, "--sweep.training.steps=a,b", W]),
    ("sweep: missing sweep file", "sweep", [X, "--sweep=configs/sweeps/nope.py", W]),
    ("sweep: a Markdown sweep file", "sweep", [X, "--sweep=README.md", W]),
    ("sweep: no --config", "sweep", ["--sweep.training.steps=10,20", W]),
    ("sweep: unknown preset", "sweep", ["--config=configs/gmm_crossover.py:nope", "--sweep.training.steps=10,20", W]),
    ("sweep: --aggregate_only of an empty folder", "sweep", ["--aggregate_only", "--workdir={tmp}/empty"]),
    ("sweep: --aggregate_only of an edm run", "sweep", ["--aggregate_only", "--workdir={tmp}/edm_run"]),
    ("sweep: missing --launcher", "sweep", [X, "--sweep.training.steps=10,20", "--launcher={tmp}/no.py", W]),
    ("sweep: override of an unknown field", "sweep", [X, "--sweep.training.steps=10,20",
                                                      "--config.training.stepz=3", W]),
    ("sweep: runs that cannot fit in memory together", "sweep", [
        X, "--sweep.seed=0,1,2,3,4,5,6,7", "--config.data.train_sizes=(20000,)", "--config.training.point_block=5000",
        "--parallel=8", W]),
    # helper launchers
    ("compare: no flags", "compare_crossover", []),
    ("compare: missing reference", "compare_crossover", ["--reference={tmp}/no", "--candidate={tmp}/ref",
                                                         "--out={tmp}/x.md"]),
    ("compare: folder without tables", "compare_crossover", ["--reference={tmp}/empty", "--candidate={tmp}/ref",
                                                             "--out={tmp}/x.md"]),
    ("compare: malformed table", "compare_crossover", ["--reference={tmp}/badcsv", "--candidate={tmp}/ref",
                                                       "--out={tmp}/x.md"]),
    ("compare: NaN tolerance", "compare_crossover", ["--reference={tmp}/ref", "--candidate={tmp}/ref",
                                                     "--out={tmp}/x.md", "--tolerance=nan"]),
    ("compare: negative tolerance", "compare_crossover", ["--reference={tmp}/ref", "--candidate={tmp}/ref",
                                                          "--out={tmp}/x.md", "--tolerance=-1"]),
    ("compare: report inside a file", "compare_crossover", ["--reference={tmp}/ref", "--candidate={tmp}/ref",
                                                            "--out={tmp}/a_file/x.md"]),
    ("compare: report under /proc", "compare_crossover", ["--reference={tmp}/ref", "--candidate={tmp}/ref",
                                                          "--out=/proc/x.md"]),
    ("convert: missing TorchScript", "convert_inception", ["--torchscript={tmp}/no.pt", "--out={tmp}/w.msgpack"]),
    ("convert: positional argument", "convert_inception", ["extra"]),
    ("bench: unknown size", "bench", ["--size=huge", W]),
    ("bench: unknown entry", "bench", ["--only=nope", W]),
    ("bench: positional argument", "bench", ["extra", W]),
    ("compile_check: unknown target", "compile_check", [X, "--target=nope", W]),
    ("compile_check: unknown program", "compile_check", [X, "--programs=nope", W]),
    ("gpu_check: unknown stage", "gpu_check", ["--stages=nope", "--out={tmp}/w", "--skip_install"]),
    ("gpu_check: negative budget", "gpu_check", ["--budget_s=-1", "--out={tmp}/w", "--skip_install"]),
    ("gpu_check: NaN timeout factor", "gpu_check", ["--timeout_factor=nan", "--out={tmp}/w", "--skip_install"]),
    ("accelerator_plan: unknown job", "accelerator_plan", ["--jobs=nope", W]),
    ("readme_timings: unknown command", "readme_timings", ["--only=nope", "--out={tmp}/w"]),
]


def make_fixtures(tmp: str) -> None:
    """The files and folders the cases name, fresh in every case's folder."""
    def write(name, text):
        os.makedirs(os.path.dirname(os.path.join(tmp, name)), exist_ok=True)
        with open(os.path.join(tmp, name), "w") as f:
            f.write(text)

    write("a_file", "just text\n")
    for name, owner in (("crossover_run", "gmm_crossover"), ("edm_run", "edm_training"), ("geometry_run", "noise_regimes")):
        write(f"{name}/experiment.json", json.dumps({"experiment": owner}) + "\n")
        write(f"{name}/summary.json", '{"finished": true}\n')
    write("thesis/thesis.tex", "years of work\n")
    write("bad_owner/experiment.json", "{not json")
    write("bad_owner/config.json", "{}")
    write("bad.json", '{"small": [4, 5], ')
    write("list.json", "[1, 2, 3]\n")
    os.makedirs(os.path.join(tmp, "empty"))
    os.makedirs(os.path.join(tmp, "readonly"))
    write("ref/models.csv", "d,K,N,seed,M,ratio\n6,2,12,0,3,0.5\n")
    write("ref/crossover.csv", "d,K,N,seed,M_pt,window_start,window_end\n6,2,12,0,3,3,3\n")
    write("badcsv/models.csv", "d,K\n6,2,12,0\n\x00\x01")
    write("badcsv/crossover.csv", "nothing here")
    rng = np.random.default_rng(0)
    np.savez(os.path.join(tmp, "same.npz"), images=np.zeros((40, 8, 8, 1), np.uint8))
    np.savez(os.path.join(tmp, "nokey.npz"), labels=np.zeros(40))
    np.savez(os.path.join(tmp, "nan.npz"), images=np.full((40, 8, 8, 1), np.nan, np.float32),
             samples=np.full((40, 8, 8, 1), np.nan, np.float32))
    np.savez(os.path.join(tmp, "flat.npz"), images=rng.integers(0, 255, (40, 64), np.uint8))
    np.savez(os.path.join(tmp, "samples.npz"), samples=rng.integers(0, 255, (40, 8, 8, 1), np.uint8))


def snapshot(folder: str) -> dict:
    """{relative path: bytes} of every file under folder."""
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = f.read()
    return found


def classify(code: int | None, stderr: str, changed: bool) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    if code is not None and (code < 0 or code == 128 + signal.SIGKILL):
        return "killed"
    if "Traceback (most recent call last)" in stderr:
        return "traceback"
    if code is None or code == 0:  # accepted: warned when a warning names a config field
        warned = re.search(r"^W\d{4} [^\]]*\] [a-z_]+\.[a-z_.]+ = ", stderr, re.MULTILINE)
        return "warned" if warned else "silently wrong"
    if code in (1, 2) and len(errors) == 1 and not changed:
        return "clean error"
    return "unclear"


def run_case(index: int, case: tuple, repo: str, python: str, scratch: str, timeout: float) -> dict:
    name, launcher, args = case
    tmp = os.path.join(scratch, f"{index:03d}")
    make_fixtures(tmp)
    before = snapshot(tmp)
    command = [python, os.path.join(repo, "launch", f"{launcher}.py"), *[a.format(tmp=tmp) for a in args]]
    if "{tmp}/readonly" in " ".join(args):  # a read-only mount (root writes through file modes)
        ro = os.path.join(tmp, "readonly")
        command = ["unshare", "-m", "sh", "-c", f'mount --bind {ro} {ro} && mount -o remount,ro,bind {ro} && '
                   'exec "$@"', "sh", *command]
    process = subprocess.Popen(["nice", "-n", "5", *command], cwd=repo, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True,
                               env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=repo))
    try:
        _, stderr = process.communicate(timeout=timeout)
        code = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the launcher and any children it started
        _, stderr = process.communicate()
        code = None
    changed = snapshot(tmp) != before
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    shown = errors[0] if errors else (lines[-1] if lines else "")
    return dict(case=name, launcher=launcher, command=" ".join([f"launch/{launcher}.py", *args]),
                exit_code="timeout" if code is None else code, outcome=classify(code, stderr, changed),
                other_stderr_lines=len(lines) - len(errors), first_error_line=shown[:300])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", default=".", help="checkout whose launchers are surveyed")
    parser.add_argument("--out", default="results/reliability/survey", help="<out>.csv and <out>.md")
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before a case counts as accepted")
    parser.add_argument("--only", default="", help="run only the cases whose name contains this")
    parser.add_argument("--skip", default="\0", help="leave out the cases whose name contains this")
    options = parser.parse_args()
    repo = os.path.abspath(options.repo)
    cases = [c for c in CASES if options.only in c[0] and options.skip not in c[0]]
    scratch = tempfile.mkdtemp(prefix="jaxmem_survey_")
    try:
        with concurrent.futures.ThreadPoolExecutor(options.jobs) as pool:
            rows = list(pool.map(lambda ic: run_case(*ic, repo, sys.executable, scratch, options.timeout),
                                 enumerate(cases)))
    finally:
        subprocess.run(["chmod", "-R", "u+w", scratch], check=False)
        shutil.rmtree(scratch, ignore_errors=True)
    with open(options.out + ".csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    outcomes = ["clean error", "traceback", "warned", "silently wrong", "killed", "unclear"]
    counts = collections.Counter((r["launcher"], r["outcome"]) for r in rows)
    launchers = sorted({r["launcher"] for r in rows})
    table = ["| launcher | cases | " + " | ".join(outcomes) + " |", "|---" * (len(outcomes) + 2) + "|"]
    for name in [*launchers, "all"]:
        row = [sum(counts[(n, o)] for n in (launchers if name == "all" else [name])) for o in outcomes]
        table.append(f"| {name} | {sum(row)} | " + " | ".join(map(str, row)) + " |")
    with open(options.out + ".md", "w") as f:
        f.write("\n".join(table) + "\n\nNot clean:\n\n" + "\n".join(
            f"- {r['case']} ({r['launcher']}): {r['outcome']}, exit {r['exit_code']}: {r['first_error_line']}"
            for r in rows if r["outcome"] != "clean error") + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
