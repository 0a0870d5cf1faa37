"""Benchmark set-up: four simulated CPU devices (as in tests/), collection of
the ``bench_*.py`` files, and each benchmark's ``extra_info`` (per-iteration
times, ratios, memory) printed after pytest-benchmark's table."""
import os

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
