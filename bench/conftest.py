"""Benchmark set-up: four simulated CPU devices (as in tests/), collection of
the ``bench_*.py`` files, and each benchmark's ``extra_info`` (per-iteration
times, ratios, memory) printed after pytest-benchmark's table."""
import os
from pathlib import Path

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=4").strip()

import pytest  # noqa: E402


def pytest_collect_file(file_path, parent):
    # `pytest bench` collects bench_*.py; files named on the command line are
    # collected by pytest itself.
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    benchmarks = [b for b in getattr(session, "benchmarks", []) if b and b.extra_info]
    if not benchmarks:
        return
    terminalreporter.section("benchmark figures (extra_info)")
    group = None
    for bench in sorted(benchmarks, key=lambda b: (b.group or "", b.fullname)):
        if bench.group != group:
            group = bench.group
            terminalreporter.write_line(f"{group or ''}")
        info = ", ".join(f"{key}: {value}" for key, value in bench.extra_info.items())
        terminalreporter.write_line(f"  {bench.name}: {info}")


RESULTS = "bench/results.md"
PLOT = "docs/bench_scaling.png"


def pytest_sessionfinish(session, exitstatus):
    """After ``make bench`` (the whole suite), write every figure to bench/results.md
    and draw bench_scaling.py's time per iteration against n_s as docs/bench_scaling.png.
    Runs of single files (``pytest bench/bench_x.py``) leave both alone."""
    benchmarks = [b for b in getattr(getattr(session.config, "_benchmarksession", None),
                                     "benchmarks", []) if b and b.extra_info]
    if not benchmarks or session.config.getoption("benchmark_disable", False):
        return
    if any(session.isinitpath(path) for path in
           Path(__file__).parent.glob("bench_*.py")):
        return
    root = Path(__file__).resolve().parents[1]
    write_table(benchmarks, root / RESULTS)
    points = [b for b in benchmarks if {"variant", "n_s", "ms/it"} <= set(b.extra_info)]
    if points:
        plot_scaling(points, root / PLOT)


def write_table(benchmarks, path):
    import datetime
    import platform

    import jax

    machine = platform.processor() or platform.machine()
    lines = [f"# Benchmark figures ({datetime.date.today()}, {machine}, {os.cpu_count()} cores, "
             f"jax {jax.__version__}, devices: {len(jax.devices())} × "
             f"{jax.devices()[0].platform})", "",
             "Written by `make bench` (bench/conftest.py); every benchmark's extra figures.", ""]
    def title(bench):
        return bench.group or bench.fullname.split("::")[0]

    def show(value):
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    group = None
    for bench in sorted(benchmarks, key=lambda b: (title(b), b.name)):
        if title(bench) != group:
            group = title(bench)
            lines += ["", f"## {group}", "", "| benchmark | figures |", "|---|---|"]
        info = ", ".join(f"{key} = {show(value)}" for key, value in bench.extra_info.items())
        lines.append(f"| `{bench.name}` | {info} |")
    path.write_text("\n".join(lines) + "\n")


def plot_scaling(points, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, axis = plt.subplots(figsize=(7, 4.5))
    variants = sorted({b.extra_info["variant"] for b in points})
    for variant in variants:
        xy = sorted((b.extra_info["n_s"], b.extra_info["ms/it"]) for b in points
                    if b.extra_info["variant"] == variant)
        axis.plot(*zip(*xy), "o-", label=variant)
    axis.set(xscale="log", yscale="log", xlabel="n_s = n_d (simulations per iteration)",
             ylabel="ms per iteration", title="fit iteration time, mean/variance, MLP 128-128")
    n_s = sorted({b.extra_info["n_s"] for b in points})
    axis.set_xticks(n_s, [str(n) for n in n_s])
    axis.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    path.parent.mkdir(exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
