"""Results of a run: collection, medians, ratios and the printed tables."""

import os
import platform
import statistics
import subprocess
from collections import Counter

KERNEL = "kernel"


class Results:
    """Per-round values and failures, keyed by metric or workload and implementation."""

    def __init__(self, workloads, impls):
        self.workloads = workloads
        self.impls = impls
        self.values = {}  # (metric key, impl key) -> list of float or None
        self.failures = {}  # (workload key, impl key) -> list of messages
        self.runs = Counter()  # (workload key, impl key) -> runs attempted
        self.requests = {}  # workload key -> Counter of opcodes
        self.step_requests = {}  # workload key -> {metric key: Counter}
        self.request_failures = {}  # workload key -> message
        self.problems = []  # teardown problems, as messages

    def add(self, workload, impl, values):
        self.runs[workload.key, impl.key] += 1
        for metric in workload.metrics:
            self.values.setdefault((metric.key, impl.key), []).append(values.get(metric.key))

    def fail(self, workload, impl, message):
        self.runs[workload.key, impl.key] += 1
        self.failures.setdefault((workload.key, impl.key), []).append(message)

    def median(self, metric, impl):
        numbers = [v for v in self.values.get((metric.key, impl.key), []) if v is not None]
        return statistics.median(numbers) if numbers else None

    def cell(self, workload, metric, impl, with_ratio=True):
        runs = self.runs[workload.key, impl.key]
        failed = len(self.failures.get((workload.key, impl.key), []))
        if runs == 0:
            return "-"
        values = self.values.get((metric.key, impl.key), [])
        if not values:
            return "failed"
        value = self.median(metric, impl)
        if value is None:
            return "n/a"
        text = format_value(value, metric.unit)
        kernel = next((i for i in self.impls if i.key == KERNEL), None)
        if with_ratio and kernel is not None and impl.key != KERNEL:
            base = self.median(metric, kernel)
            if base:
                text += f" ({format_ratio(value / base)})"
        if failed:
            text += f" [{failed}/{runs} failed]"
        return text

    def rows(self, with_ratio=True):
        """Yield (label, cells) for each metric of each workload that ran."""
        for workload in self.workloads:
            for metric in workload.metrics:
                label = metric.label
                cells = [self.cell(workload, metric, impl, with_ratio) for impl in self.impls]
                yield label, cells

    def failure_notes(self):
        """Return one line per implementation and distinct failure message."""
        where = {}  # (impl label, message) -> workload keys
        for workload in self.workloads:
            for impl in self.impls:
                for message in self.failures.get((workload.key, impl.key), []):
                    keys = where.setdefault((impl.label, message), [])
                    if workload.key not in keys:
                        keys.append(workload.key)
        return [f"{label} ({', '.join(keys)}): {message}"
                for (label, message), keys in where.items()]

    def to_json(self):
        return {
            "values": [{"metric": m, "impl": i, "rounds": v} for (m, i), v in self.values.items()],
            "failures": [{"workload": w, "impl": i, "messages": v}
                         for (w, i), v in self.failures.items()],
            "requests": {w: dict(c) for w, c in self.requests.items()},
            "step_requests": {w: {m: dict(c) for m, c in steps.items()}
                              for w, steps in self.step_requests.items()},
            "request_failures": self.request_failures,
            "problems": self.problems,
        }


def format_value(value, unit):
    if unit == "s":
        if value >= 100:
            return f"{value:.0f} s"
        if value >= 10:
            return f"{value:.1f} s"
        if value >= 0.1:
            return f"{value:.2f} s"
        return f"{value * 1000:.2f} ms"
    if unit == "MiB":
        return f"{value:.0f} MiB"
    if unit == "B/inode":
        return f"{value:.0f} B"
    return f"{value:g} {unit}"


def format_ratio(ratio):
    if ratio >= 100:
        return f"{ratio:.0f}x"
    if ratio >= 10:
        return f"{ratio:.1f}x"
    if ratio >= 0.1:
        return f"{ratio:.2f}x"
    return f"{ratio:.2g}x"


def text_table(results):
    header = ["workload"] + [impl.label for impl in results.impls]
    rows = [header] + [[label] + cells for label, cells in results.rows()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths))).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(results):
    header = ["Workload"] + [impl.label for impl in results.impls]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join([" --- "] + [" ---: "] * len(results.impls)) + "|"]
    for label, cells in results.rows():
        lines.append("| " + " | ".join([label] + cells) + " |")
    return "\n".join(lines)


def _requests_row(label, counts):
    top = ", ".join(f"{op} {n}" for op, n in counts.most_common(6))
    return f"| {label} | {sum(counts.values())} | {top} |"


def requests_table(results):
    """One row per timed step, then one for the whole run with mounting."""
    lines = ["| Workload or step | lamina requests | most frequent opcodes |",
             "| --- | ---: | --- |"]
    for workload in results.workloads:
        if workload.key in results.request_failures:
            lines.append(f"| {workload.key} | failed | {results.request_failures[workload.key]} |")
            continue
        counts = results.requests.get(workload.key)
        if counts is None:
            continue
        steps = results.step_requests.get(workload.key, {})
        for metric in workload.metrics:
            if metric.key in steps:
                lines.append(_requests_row(metric.label, steps[metric.key]))
        lines.append(_requests_row(f"{workload.key}, whole run", counts))
    return "\n".join(lines)


def _output(argv):
    try:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=30, errors="replace")
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({e})"
    return " ".join(done.stdout.split()) or f"unavailable (exit status {done.returncode})"


def _first_match(path, prefix):
    with open(path) as f:
        for line in f:
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    return "unknown"


def machine_info(cache_root, tmp_root, lamina_binary, source_dir):
    """Describe the machine and the software versions the run used."""
    mem_kib = int(_first_match("/proc/meminfo", "MemTotal").split()[0])
    info = {
        "CPU": _first_match("/proc/cpuinfo", "model name"),
        "cores": str(os.cpu_count()),
        "memory": f"{mem_kib / (1 << 20):.1f} GiB",
        "kernel": platform.release(),
        "file system of the data set": f"{_output(['findmnt', '-no', 'FSTYPE,SOURCE', '-T', cache_root])}"
                                       f" ({cache_root})",
        "file system of upper and work": f"{_output(['findmnt', '-no', 'FSTYPE,SOURCE', '-T', tmp_root])}"
                                         f" ({tmp_root})",
        "fuse-overlayfs": _output(["dpkg-query", "-W", "-f", "${Version}", "fuse-overlayfs"]),
        "unionfs-fuse": _output(["dpkg-query", "-W", "-f", "${Version}", "unionfs-fuse"]),
        "libfuse3": _output(["dpkg-query", "-W", "-f", "${Version}", "libfuse3-3"]),
        "git": _output(["git", "--version"]),
    }
    # "-dirty" marks a work tree with uncommitted changes, which a build of
    # lamina may include.
    done = subprocess.run(["git", "-C", source_dir, "describe", "--always", "--dirty"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, errors="replace")
    commit = done.stdout.strip() if done.returncode == 0 else "not a git checkout"
    if lamina_binary and os.access(lamina_binary, os.X_OK):
        info["lamina"] = f"{_output([lamina_binary, '--version'])}, source tree {commit}"
    else:
        info["lamina"] = f"binary unavailable ({lamina_binary or 'LAMINA not set'}), source tree {commit}"
    return info
