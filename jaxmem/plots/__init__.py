"""The figures users look at; one module per experiment family, saved via jaxmem.io.save_figure."""

import matplotlib

matplotlib.use("Agg")


def line_text(slope: float, intercept: float, spec: str = ".4g", intercept_spec: str | None = None) -> str:
    """'a N + b' with the sign of b: line_text(0.729, -3.06) == '0.729 N - 3.06' (the intercept
    formatted with intercept_spec, default `spec`)."""
    sign = "-" if intercept < 0 else "+"
    return f"{slope:{spec}} N {sign} {abs(intercept):{intercept_spec or spec}}"
