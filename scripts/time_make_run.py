"""Time `make run`'s command end to end, as a new user's first run: a fresh clone, an empty cache.

    python scripts/time_make_run.py            # measure, then write docs/make_run.json,
                                               # docs/img/make_run_cpu.png and docs/benchmarks.md's section

What is timed: ``ganbench run --profile auto --config configs/sngan.yaml`` (what ``make run`` runs once
``make setup`` has made the virtual environment), in a ``git clone`` of this repository's HEAD, with an
empty ``GANBENCH_CACHE`` — so the feature net behind fd_fmnist and the reference statistics are got as on
a first run — from the process's start to its exit. The environment's ``make setup`` (venv, torch wheels,
Debian's Fashion-MNIST) is not in the figure: it is a one-time install whose time is the network's and
the disk's. The machine should be idle: the 1-minute load average before the start is recorded, and a
run that starts above 0.5 is refused unless ``--allow-load``.

The result goes to ``docs/make_run.json`` (read by README's figure check in tests/test_make_run.py,
together with the settings of the CPU profile it measured) and to the section between the markers below
in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PROFILE = "configs/profiles/sngan_cpu.yaml"
COMMAND = ["ganbench", "run", "--profile", "auto", "--config", "configs/sngan.yaml"]
BEGIN, END = "<!-- make-run:begin -->", "<!-- make-run:end -->"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def final_metrics(run: Path) -> dict[str, float]:
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    out: dict[str, float] = {}
    for row in rows:
        for key, value in row.items():
            if key.startswith("val/") and value not in ("", None):
                out[key] = float(value)
    return out


def measure(args: argparse.Namespace) -> dict:
    load = os.getloadavg()[0]
    if load > 0.5 and not args.allow_load:
        sys.exit(f"time_make_run: the 1-minute load average is {load:.2f}; the figure is for an idle machine "
                 "(wait, or pass --allow-load and say so)")
    work = Path(tempfile.mkdtemp(prefix="ganbench-make-run-"))
    clone, cache = work / "clone", work / "cache"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    head = subprocess.run(["git", "-C", str(clone), "rev-parse", "--short", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    ganbench = Path(sys.executable).parent / "ganbench"
    env = {**os.environ, "GANBENCH_CACHE": str(cache), "PYTHONPATH": str(clone), "WANDB_MODE": "offline",
           "GANBENCH_RUN_STAMP": "timed"}
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # a new user's shell sets neither
        env.pop(key, None)
    log = work / "console.log"
    start = time.monotonic()
    with open(log, "w") as out, subprocess.Popen([str(ganbench), *COMMAND[1:]], cwd=clone, env=env, text=True,
                                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        shown = 0.0
        for line in proc.stdout:  # text mode: a progress bar's carriage returns end lines too
            out.write(line)
            now = time.monotonic() - start
            bar = line.startswith("G-iterations") and now - shown >= 60
            if line.startswith("ganbench:") or bar:  # ganbench's own lines, and the bar once a minute
                shown = now if bar else shown
                print(f"  [{now:6.0f} s] {line.strip()}", flush=True)
    wall = time.monotonic() - start
    console = log.read_text(errors="replace")
    if proc.returncode != 0:
        sys.exit(f"time_make_run: the run exited {proc.returncode}; its console is in {log}")
    run = clone / "runs" / "sngan-timed"
    summary = json.loads((run / "summary.json").read_text())
    grids = sorted((run / "samples").glob("step_*.png"))
    shutil.copyfile(grids[-1], ROOT / "docs" / "img" / "make_run_cpu.png")
    thread_lines = [ln for ln in console.splitlines() if ln.startswith("ganbench: torch threads")]
    return {
        "command": " ".join(COMMAND),
        "wall_s": round(wall, 1),
        "fit_wall_s": round(float(summary["wall_s"]), 1),
        "g_steps": summary["g_steps"],
        "status": summary["status"],
        "metrics": final_metrics(run),
        "load_before": round(load, 2),
        "thread_changes": thread_lines,
        "machine": f"{os.cpu_count()} cores, {cpu_model()}",
        "python": platform.python_version(),
        "torch": __import__("torch").__version__,
        "date": datetime.date.today().isoformat(),
        "commit": head,
        "profile": yaml.safe_load((ROOT / PROFILE).read_text()),  # its settings; comments may change
        "base": yaml.safe_load((ROOT / "configs" / "sngan.yaml").read_text()),
        "console_first_lines": [ln for ln in console.splitlines() if ln.startswith("ganbench:")][:4],
        "grid": f"docs/img/make_run_cpu.png (samples/{grids[-1].name})",
    }


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(round(seconds % 60)):02d} s"


def section(r: dict) -> str:
    m = r["metrics"]
    fd = next((f"{k} = {v:.1f}" for k, v in m.items() if k.startswith("val/fd_fmnist")), "no fd_fmnist")
    extra = ", ".join(f"{k.split('/')[-1]} {v:.2f}" for k, v in m.items()
                      if k.startswith(("val/precision", "val/recall")))
    threads = "; ".join(r["thread_changes"]) or "torch's default (one per core) all along"
    return "\n".join([
        BEGIN,
        "## `make run` on a CPU, end to end (first run)",
        "",
        f"- command: `python scripts/time_make_run.py` — times `{r['command']}` (what `make run` runs after "
        "`make setup`) in a fresh `git clone` with an empty `GANBENCH_CACHE`, from start to exit, feature net "
        "and reference statistics included",
        f"- machine: {r['machine']}, idle (1-minute load {r['load_before']} at the start); Python {r['python']}, "
        f"torch {r['torch']}; date {r['date']}; commit {r['commit']}",
        f"- **{minutes(r['wall_s'])}** in all ({r['wall_s']} s); the fit itself {r['fit_wall_s']} s for "
        f"{r['g_steps']} G iterations ({r['status']})",
        f"- final {fd}" + (f", {extra}" if extra else "") + " (the shipped feature net, sha256 fc82f8b7765c)",
        f"- threads: {threads}",
        f"- last sample grid: `{r['grid'].split(' ')[0]}`",
        "",
        f"![make run's last grid]({Path(r['grid'].split(' ')[0]).relative_to('docs')})",
        END,
    ])


def write(r: dict) -> None:
    (ROOT / "docs" / "make_run.json").write_text(json.dumps(r, indent=2) + "\n")
    bench = ROOT / "docs" / "benchmarks.md"
    text = bench.read_text()
    block = section(r)
    if BEGIN in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    bench.write_text(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--allow-load", action="store_true", help="measure although the machine is not idle")
    p.add_argument("--from-json", type=str, default=None, help="rewrite the docs from a saved result")
    args = p.parse_args()
    if args.from_json:
        result = json.loads(Path(args.from_json).read_text())
    else:
        print(f"time_make_run: timing `{' '.join(COMMAND)}` in a fresh clone (several minutes)", flush=True)
        result = measure(args)
    write(result)
    print(json.dumps({k: result[k] for k in ("wall_s", "fit_wall_s", "g_steps", "metrics")}, indent=1))


if __name__ == "__main__":
    main()
