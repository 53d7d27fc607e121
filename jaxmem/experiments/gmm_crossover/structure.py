"""The crossover on structured data across a sweep: M_pt against N per replication level, M_pt
against the intrinsic dimension C, and where memorised samples land by multiplicity.

Sweep hook (configs/sweeps/gmm_crossover_replication.py, crossover_rank.py): a sweep of
launch/gmm_crossover.py runs over one data field (`field`, e.g. data.replicated_fraction or
data.rank) sets ANALYSIS = "jaxmem.experiments.gmm_crossover.structure:analyze", and
jaxmem.sweep.aggregate calls analyze(rows, root, field=...). From each finished run's
crossover.csv (one row per data set) and models.csv (one row per model) it writes into the
sweep root:
  structure.csv / .md      per (field value, N): M_pt over seeds (mean, Student-t 95% interval),
                           the predicted M* (closed form and measured losses, x0 weighting)
  structure.json           per field value: the fit M_pt = a N + b (with standard errors) and
                           through the origin, over the per-seed points
  structure.png            M_pt against N, one colour per field value, the closed-form
                           prediction dashed; against the field value when every run has one N
  multiplicity.csv / .png  (replicated data) per field value, model capacity M/N and
                           multiplicity m: the memorisation rate per distinct point of
                           multiplicity m relative to the all-points rate (ratio_x<m> / share
                           of points stored m times): m = 10 above m = 1 means replicated
                           points are memorised first
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

import numpy as np

from jaxmem import io, theory
from jaxmem.experiments.gmm_crossover.analysis import by_train_size
from jaxmem.experiments.gmm_crossover.report import fit_text, number_or_text, read_table

ANALYSIS = "jaxmem.experiments.gmm_crossover.structure:analyze"
TABLE_COLUMNS = ("value", "N", "seeds", "M_pt", "ci95_lo", "ci95_hi", "M_pt_over_N", "Mstar_formula_x0",
                 "Mstar_measured_x0", "models")
MULTIPLICITY_COLUMNS = ("value", "N", "seed", "M", "M_over_N", "ratio", "multiplicity", "ratio_on_these",
                        "rate_per_point_relative")


def runs_by_value(rows: Sequence[Mapping], root: str, field: str) -> dict:
    """{field value: [run folder]} of the finished runs that hold a crossover.csv."""
    groups: dict = {}
    for row in rows:
        folder = os.path.join(root, str(row["run"]))
        if row.get("status", "done") == "done" and os.path.isfile(os.path.join(folder, "crossover.csv")):
            groups.setdefault(number_or_text(str(row[field])), []).append(folder)
    if not groups:
        raise ValueError(f"no finished run under {root} has a crossover.csv (field {field!r})")
    return dict(sorted(groups.items()))


def structure_table(groups: Mapping) -> tuple[list[dict], dict]:
    """(per (value, N) pooled rows, {value: fit over the per-seed M_pt})."""
    table, fits = [], {}
    for value, folders in groups.items():
        sets = [row for folder in folders for row in read_table(folder, "crossover.csv")]
        table += [{"value": value, **row} for row in by_train_size(sets)]
        fits[value] = theory.linear_fits([r["N"] for r in sets], [r["M_pt"] for r in sets])
    return table, fits


def multiplicity_table(groups: Mapping) -> list[dict]:
    """Per model and multiplicity m (models.csv's ratio_x<m>, enrichment_x<m>): the share of its
    samples memorising a point stored m times and its rate per such point relative to its rate
    over all points (1 = memorised samples land on points regardless of their multiplicity)."""
    table = []
    for value, folders in groups.items():
        for folder in folders:
            for model in read_table(folder, "models.csv"):
                for key in model:
                    found = re.fullmatch(r"ratio_x(\d+)", key)
                    if found:
                        m = int(found.group(1))
                        table.append(dict(value=value, N=model["N"], seed=model["seed"], M=model["M"],
                                          M_over_N=model["M_over_N"], ratio=model["ratio"], multiplicity=m,
                                          ratio_on_these=model[key],
                                          rate_per_point_relative=model[f"enrichment_x{m}"]))
    return table


def analyze(rows: Sequence[Mapping], root: str, field: str = "data.replicated_fraction") -> list[str]:
    """The sweep hook: writes the tables and figures above into `root`; returns report lines."""
    from jaxmem.plots import structure as plots

    groups = runs_by_value(rows, root, field)
    table, fits = structure_table(groups)
    io.write_csv(os.path.join(root, "structure.csv"), table, TABLE_COLUMNS)
    io.write_text(os.path.join(root, "structure.md"), io.markdown_table(table, TABLE_COLUMNS) + "\n")
    io.write_json(os.path.join(root, "structure.json"), dict(field=field, fits={str(k): v for k, v in fits.items()}))
    plots.save_structure(os.path.join(root, "structure.png"), table, fits, field)
    fit_lines = [f"- {field} = {value}: {fit_text(f)}" for value, f in fits.items()
                 if np.isfinite(f.get("slope", np.nan))]
    lines = [f"## The crossover against {field}", "", *fit_lines, "",
             "Also as [structure.csv](structure.csv) and [structure.json](structure.json).", "",
             io.markdown_table(table, TABLE_COLUMNS), f"![M_pt against {field}](structure.png)", ""]
    per_multiplicity = multiplicity_table(groups)
    if per_multiplicity:
        io.write_csv(os.path.join(root, "multiplicity.csv"), per_multiplicity, MULTIPLICITY_COLUMNS)
        plots.save_multiplicity(os.path.join(root, "multiplicity.png"), per_multiplicity, field)
        lines += ["## Where memorised samples land, by multiplicity", "",
                  "Rate per distinct point of multiplicity m relative to the model's rate over all points "
                  "([multiplicity.csv](multiplicity.csv)).", "",
                  "![relative memorisation rate per multiplicity](multiplicity.png)", ""]
    return lines
