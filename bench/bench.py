"""Side-by-side benchmark of lamina and other union file systems.

Runs each workload on fresh mounts of every selected implementation,
in pairs of rounds, then prints medians, ratios to kernel
overlayfs and a markdown table. Started by bench/run.sh, which builds the
stat helper and owns the temporary directory; see docs/benchmarks.md.
"""

import argparse
import datetime
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
import traceback

import mounts
import report
import workloads
from dataset import FULL, QUICK, Dataset

SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv):
    impl_keys = [i.key for i in mounts.implementations(None)]
    default_impls = [i.key for i in mounts.implementations(None) if i.default]
    workload_keys = [w.key for w in workloads.WORKLOADS]
    parser = argparse.ArgumentParser(
        prog="bench/run.sh",
        description="Compare lamina with native, kernel overlayfs, fuse-overlayfs and unionfs-fuse.")
    parser.add_argument("--rounds", type=int, default=4,
                        help="rounds per workload; each round runs every implementation once; an even number keeps the order balanced (default 4)")
    parser.add_argument("--quick", action="store_true",
                        help="use the small data set (5,000 files, 64 MiB file, 20,000-file tree) "
                             "to try the harness")
    parser.add_argument("--workloads", default=",".join(workload_keys),
                        help=f"comma-separated workloads to run (default all: {','.join(workload_keys)})")
    parser.add_argument("--impls", default=",".join(default_impls),
                        help=f"comma-separated implementations: {','.join(impl_keys)} "
                             f"(default {','.join(default_impls)})")
    parser.add_argument("--timeout", type=int, default=600,
                        help="seconds one command of a workload may take before it counts as failed "
                             "(default 600)")
    parser.add_argument("--count-requests", action="store_true",
                        help="after the timed rounds, run each workload once more on lamina with "
                             "-f -d and count the FUSE requests in its log (untimed)")
    parser.add_argument("--stat-count", type=int, default=2000,
                        help="stat(2) calls in the stat workload (default 2000)")
    parser.add_argument("--page-cache-mounts", type=int, default=4,
                        help="mounts over the same lower in the pagecache workload (default 4)")
    parser.add_argument("--cache", default="/var/tmp/lamina-bench",
                        help="directory holding the cached data set and the results "
                             "(default /var/tmp/lamina-bench)")
    parser.add_argument("--out", help="directory for results.json and report.md "
                                      "(default CACHE/results/DATE-full or -quick)")
    parser.add_argument("--lamina", default=os.environ.get("LAMINA"),
                        help="path of the lamina binary (default: $LAMINA)")
    parser.add_argument("--tmpdir", help=argparse.SUPPRESS)
    parser.add_argument("--stat-helper", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    chosen = [k for k in args.impls.split(",") if k]
    unknown = [k for k in chosen if k not in impl_keys]
    if unknown or not chosen:
        parser.error(f"invalid --impls {args.impls!r}; choose from {','.join(impl_keys)}")
    try:
        args.workload_list = workloads.select([k for k in args.workloads.split(",") if k])
    except ValueError as e:
        parser.error(str(e))
    if not args.workload_list:
        parser.error("--workloads selects nothing")
    if args.lamina:
        args.lamina = os.path.abspath(args.lamina)
    args.impl_list = [i for i in mounts.implementations(args.lamina) if i.key in chosen]
    return args


class Interrupted(Exception):
    pass


def on_signal(signum, _frame):
    raise Interrupted(f"interrupted by signal {signum}")


def run_one(workload, impl, dataset, args, debug=False):
    """Run one workload once on one implementation; return (context, error message)."""
    run = workloads.RunContext(impl, dataset, args.tmpdir, args, debug=debug)
    error = None
    try:
        workload.run(run)
    except Interrupted:
        raise
    except Exception as e:
        # Any error of one implementation fails this run only.
        if isinstance(e, (workloads.WorkloadError, mounts.MountError)):
            error = str(e)
        else:
            error = f"{type(e).__name__}: {e}"
    finally:
        run.close()
    return run, error


def round_order(impls, round_index):
    """Return the order of one round.

    Rounds go in pairs: the list rotated by the pair's number, then the
    same backwards. A step that writes 1 GiB without syncing slows the
    disk for whatever runs next, so in each pair every implementation
    follows each of its two neighbours in the list once. Rotation alone
    put the same implementation before lamina in every round.
    """
    shift = (round_index // 2) % len(impls)
    order = impls[shift:] + impls[:shift]
    return order if round_index % 2 == 0 else order[::-1]


def run_rounds(args, dataset, results):
    for workload in args.workload_list:
        for round_index in range(args.rounds):
            order = round_order(args.impl_list, round_index)
            for impl in order:
                reason = impl.unavailable_reason()
                if reason:
                    results.fail(workload, impl, reason)
                    continue
                run, error = run_one(workload, impl, dataset, args)
                results.problems += [f"{workload.key} on {impl.label}: {p}" for p in run.problems]
                where = f"{workload.key} round {round_index + 1}/{args.rounds} {impl.label}"
                if error:
                    results.fail(workload, impl, error)
                    log(f"{where}: failed: {error}")
                else:
                    results.add(workload, impl, run.values)
                    summary = ", ".join(f"{k}={v:.4g}" for k, v in run.values.items() if v is not None)
                    log(f"{where}: {summary or 'n/a'}")


def count_requests(args, dataset, results):
    lamina = next((i for i in mounts.implementations(args.lamina) if i.key == "lamina"))
    reason = lamina.unavailable_reason()
    for workload in args.workload_list:
        if reason:
            results.request_failures[workload.key] = reason
            continue
        run, error = run_one(workload, lamina, dataset, args, debug=True)
        if error:
            results.request_failures[workload.key] = error
            log(f"{workload.key} request count: failed: {error}")
        else:
            results.requests[workload.key] = run.requests
            results.step_requests[workload.key] = run.step_requests
            log(f"{workload.key} request count: {sum(run.requests.values())}")


def write_report(args, results, machine, dataset, started, finished):
    command = "bench/run.sh " + " ".join(shlex.quote(a) for a in args.argv)
    lines = [f"# Benchmark run {started:%Y-%m-%d %H:%M} UTC", "",
             f"Command: `{command}` (LAMINA={args.lamina_source or 'unset'})", "",
             f"Rounds: {args.rounds}; data set: {dataset.sizes.name} ({dataset.root}); "
             f"duration: {finished - started}", "", "Machine:", ""]
    lines += [f"- {k}: {v}" for k, v in machine.items()]
    lines += ["", "Data set:", ""] + [f"- {k}: {v}" for k, v in dataset.meta.items()]
    lines += ["", "Medians; ratios are to kernel overlayfs; lower is better.", "",
              report.markdown_table(results), ""]
    notes = results.failure_notes()
    if notes:
        lines += ["Failures:", ""] + [f"- {n}" for n in notes] + [""]
    if results.problems:
        lines += ["Teardown problems:", ""] + [f"- {p}" for p in results.problems] + [""]
    if args.count_requests:
        lines += ["FUSE requests seen by lamina (separate untimed pass with -f -d):", "",
                  report.requests_table(results), ""]
    text = "\n".join(lines)

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"command": command, "machine": machine, "dataset": dataset.meta,
                   "rounds": args.rounds, "started": started.isoformat(),
                   "finished": finished.isoformat(), **results.to_json()}, f, indent=1)
    return text


def main(argv):
    args = parse_args(argv)
    # The command as the user typed it, without what run.sh adds.
    args.argv = [a for a in argv
                 if a not in (f"--tmpdir={args.tmpdir}", f"--stat-helper={args.stat_helper}")]
    if os.geteuid() != 0:
        sys.exit("bench: must run as root: it mounts file systems and drops caches")
    own_tmp = args.tmpdir is None
    if own_tmp:
        args.tmpdir = tempfile.mkdtemp(prefix="lamina-bench.", dir="/tmp")
    if args.stat_helper is None:
        args.stat_helper = os.path.join(args.tmpdir, "statloop")
    if args.lamina and os.access(args.lamina, os.X_OK):
        # Run a copy, so that a rebuild of the tree during the run cannot
        # mix two versions of lamina in one table.
        snapshot = os.path.join(args.tmpdir, "lamina")
        shutil.copy2(args.lamina, snapshot)
        args.lamina_source, args.lamina = args.lamina, snapshot
        args.impl_list = [i for i in mounts.implementations(args.lamina)
                          if i.key in [j.key for j in args.impl_list]]
    else:
        args.lamina_source = args.lamina
    started = datetime.datetime.now(datetime.timezone.utc)
    sizes = QUICK if args.quick else FULL
    if args.out is None:
        args.out = os.path.join(args.cache, "results", f"{started:%Y%m%d-%H%M%S}-{sizes.name}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    dataset = Dataset(args.cache, sizes)
    results = report.Results(args.workload_list, args.impl_list)
    machine = {}
    status = 0
    try:
        dataset.ensure(any(w.key == "memory" for w in args.workload_list), log)
        machine = report.machine_info(args.cache, args.tmpdir, args.lamina, SOURCE_DIR)
        log(f"machine: {machine}")
        run_rounds(args, dataset, results)
        if args.count_requests:
            count_requests(args, dataset, results)
    except (KeyboardInterrupt, Interrupted) as e:
        log(f"stopping: {e or 'interrupted'}; the results so far follow")
        status = 130
    except Exception:
        traceback.print_exc()
        status = 1
    finally:
        for m in list(mounts.ACTIVE):
            problems = m.impl.unmount(m)
            for p in problems:
                log(f"cleanup: {p}")
        if own_tmp and not mounts.mounts_below(args.tmpdir):
            os.system(f"rm -rf --one-file-system {shlex.quote(args.tmpdir)}")

    if not dataset.meta:
        return status or 1
    finished = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    started = started.replace(microsecond=0)
    text = write_report(args, results, machine, dataset, started, finished)
    print(report.text_table(results))
    print()
    print(text)
    log(f"wrote {args.out}/report.md and results.json")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
