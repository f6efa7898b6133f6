"""Assignment in dense scenes: every preset on one 1024 px image with 5,000 GTs (as in xView or
SKU-110K), and how time and memory grow with the number of GTs and the input size.

    .venv-bench/bin/python benchmarks/dense_scene.py [--threads 2] [--skip-scaling] [--presets atss tal ...]
    .venv-bench/bin/python benchmarks/dense_scene.py --busy 2 [--rounds 5] [--caller-threads]

Scene: a square image of ``--size`` px, anchor-free points at strides 8/16/32 (21,504 at 1024 px),
``--gts`` GTs with sides log-uniform from 7 to 67 px, centres uniform over the image, 80 classes;
predictions near the priors (4 strides wide, centres jittered by half a stride, sizes by a factor
e^N(0, 0.5)), scores mostly low. Grid-based presets (``grid``, ``yolov5``) read the points as one
square anchor per cell (``PointGenerator``'s 8-stride squares).

Every case runs in a fresh process of its own (``assigners_measure.run_isolated``): the time of its
first call and the median of two more, the growth of the peak resident set over the call, and the
process's whole peak (``ru_maxrss``: import, inputs and the call, what an out-of-memory killer
sees). Targets (issue 16): every preset under 3 s and 2 GiB of peak process memory on 2 cores.
With ``.venv-bench`` the table adds Ultralytics' TaskAlignedAssigner on the same scene.

The scaling table runs a few presets (``--scaling-presets``) at M = 50, 500, 5,000 GTs and 640, 1024,
1280 px, next to the count of candidate pairs (a prior's centre inside a GT's box, summed over GTs)
and N x M; ``--dense`` rows run the same rule's dense form (``assign_dense``) where N x M allows.

Contention (``--busy N``, issue 29): every side in this one process, on one scene; each round times every
side quiet and then with N background processes spinning (``assigners_measure.busy``), the order rotating;
the table gives best and median of each phase, the busy/quiet ratio of the medians (target <= 3) and, for
the task-aligned presets, the median per-round ratio to Ultralytics' TAL under the same load (target
<= 0.8). ``--caller-threads`` adds each preset run on the caller's intra-op threads
(``assignment_threads(None)``, detkit before issue 29) as a row of its own. "Quiet" means no process of
ours: on a shared machine other jobs still run, so read the load lines and compare rows of one run. The
CPU column (this process's CPU seconds per call) tells the two costs of load apart: a one-thread call's CPU
stays its work and its wall time grows by the share of a core it gets; pool threads waiting at parallel
regions spin, so a call whose CPU grows under load is waiting on its own threads.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helpers beside this file
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from assigners_measure import alternate_busy, load_line, peak_of, ratio, run_isolated  # noqa: E402

STRIDES = (8, 16, 32)
NUM_CLASSES = 80
ULTRALYTICS = "ultralytics TAL (v8 loss settings)"
DENSE_LIMIT = 50_000_000  # N x M pairs above which the dense form is not run in the scaling table


def make_scene(size: int, num_gts: int, seed: int = 0) -> dict:
    from detkit.anchors import PointGenerator

    g = torch.Generator().manual_seed(seed)
    grid = PointGenerator(list(STRIDES)).grid_priors([(size // s,) * 2 for s in STRIDES])
    priors, strides, counts = grid
    grid = None if isinstance(grid, tuple) else grid  # a PriorGrid (detkit >= issue 30) goes to assign as is
    n = priors.shape[0]
    side = torch.exp(torch.empty(1, num_gts, 2).uniform_(2.0, 4.2, generator=g))  # 7.4 .. 66.7 px
    centre = torch.rand(1, num_gts, 2, generator=g) * size
    gt_boxes = torch.cat([centre - side / 2, centre + side / 2], -1).clamp(0, size)
    centres = (priors[:, :2] + priors[:, 2:]) / 2
    pc = centres + torch.randn(1, n, 2, generator=g) * strides[:, None] * 0.5
    pwh = strides[:, None] * 4 * torch.exp(torch.randn(1, n, 2, generator=g) * 0.5)
    return dict(priors=priors, grid=grid, prior_strides=strides, num_level_priors=counts, points=centres,
                gt_boxes=gt_boxes,
                gt_labels=torch.randint(0, NUM_CLASSES, (1, num_gts), generator=g),
                gt_mask=torch.ones(1, num_gts, dtype=torch.bool),
                pred_boxes=torch.cat([pc - pwh / 2, pc + pwh / 2], -1),
                pred_scores=torch.rand(1, n, NUM_CLASSES, generator=g) ** 6)


def candidate_pairs(x: dict) -> int:
    """Priors whose centre lies inside a GT's box, summed over the GTs (by grid arithmetic)."""
    from detkit.assigners import candidates
    from detkit.assigners.candidates import level_regions, window_pairs

    layout = x["grid"] if x["grid"] is not None else candidates.prior_layout(
        x["priors"], x["num_level_priors"], x["prior_strides"])
    boxes = x["gt_boxes"][0]
    return int(window_pairs(layout, level_regions(layout, boxes, [0.0] * len(layout.levels)))[0].numel())


def side(name: str, dense: bool):
    if name == ULTRALYTICS:
        from ultralytics.utils.tal import TaskAlignedAssigner

        tal = TaskAlignedAssigner(topk=10, num_classes=NUM_CLASSES, alpha=0.5, beta=6.0, stride=list(STRIDES))
        return lambda x: tal(x["pred_scores"], x["pred_boxes"], x["points"], x["gt_labels"][..., None].float(),
                             x["gt_boxes"], x["gt_mask"][..., None].float())
    from detkit.assigners.presets import build_preset

    assigner = build_preset(name)
    # dense: every prior against every GT (a rule's assign_dense, or assign on bare priors: the all-pairs table)
    call = getattr(assigner, "assign_dense", assigner.assign) if dense else assigner.assign
    return lambda x: call(x["priors"] if dense or x["grid"] is None else x["grid"],
                          x["gt_boxes"], x["gt_labels"], x["gt_mask"],
                          num_level_priors=x["num_level_priors"], prior_strides=x["prior_strides"],
                          pred_boxes=x["pred_boxes"], pred_scores=x["pred_scores"])


CALLER = " [caller threads]"  # suffix of a preset's row run with assignment_threads(None)


def caller_threads(fn):
    """``fn`` run with every op on the caller's intra-op threads (no assignment thread limit)."""
    from detkit.assigners.threads import assignment_threads

    def run(x: dict):
        with assignment_threads(None):
            return fn(x)

    return run


def contention(names: list[str], args: argparse.Namespace) -> None:
    """The ``--busy`` table: quiet and busy figures of every side, alternated in this process."""
    torch.set_num_threads(args.threads)
    x = make_scene(args.size, args.gts)
    fns = {}
    for name in names:
        fns[name] = side(name, False)
        if args.caller_threads and name != ULTRALYTICS:
            fns[name + CALLER] = caller_threads(side(name, False))
    cpu: dict = {}
    with torch.no_grad():
        quiet, loaded, loads = alternate_busy({n: (lambda f=f: f(x)) for n, f in fns.items()}, args.rounds,
                                              args.busy, cpu)
    print("\n".join(loads))
    print(f"\n| side | quiet best (s) | quiet median (s) | busy best (s) | busy median (s) | busy / quiet "
          f"(medians; <= 3) | / {ULTRALYTICS} under load (<= 0.8 for TAL) | CPU s per call, quiet / busy |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in fns:
        q, b = statistics.median(quiet[name]), statistics.median(loaded[name])
        vs = f"{ratio(loaded, name, ULTRALYTICS):.2f}x" if ULTRALYTICS in fns and name != ULTRALYTICS else ""
        if name.startswith("tal") and vs:
            vs = f"**{vs}**"
        print(f"| {name} | {min(quiet[name]):.3f} | {q:.3f} | {min(loaded[name]):.3f} | {b:.3f} | "
              f"**{b / q:.2f}x** | {vs} | {statistics.median(cpu[name]['quiet']):.3f} / "
              f"{statistics.median(cpu[name]['busy']):.3f} |", flush=True)


def child(args: argparse.Namespace) -> None:
    """One case in this fresh process: first call (peak memory), then two more (time)."""
    torch.set_num_threads(args.threads)
    x = make_scene(args.size, args.gts)
    fn = side(args.child, args.dense_form)
    with torch.no_grad():
        first = peak_of(lambda: fn(x))
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - t0)
    print(json.dumps({**first, "warm_seconds": statistics.median(times)}))


def measure(name: str, size: int, gts: int, args: argparse.Namespace, dense: bool = False) -> dict:
    extra = ["--dense-form"] if dense else []
    return run_isolated(Path(__file__).name, [name, "--size", str(size), "--gts", str(gts),
                                              "--threads", str(args.threads), *extra])


def main() -> int:
    from detkit.assigners.presets import ASSIGNER_PRESETS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--gts", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--presets", nargs="+", default=list(ASSIGNER_PRESETS))
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--scaling-presets", nargs="+", default=["iou", "atss", "tal-ultralytics", "simota", "dsl"])
    parser.add_argument("--dense", nargs="*", default=["tal-ultralytics"],
                        help="presets whose dense form joins the scaling table (where N x M allows)")
    parser.add_argument("--busy", type=int, default=0,
                        help="contention mode: time every side quiet and with N busy background processes")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the contention mode")
    parser.add_argument("--caller-threads", action="store_true",
                        help="contention mode: also each preset on the caller's threads (detkit before issue 29)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: one case per process
    parser.add_argument("--dense-form", action="store_true", help=argparse.SUPPRESS)  # internal: the child's form
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0
    print(f"## Dense scene: one {args.size} px image, {args.gts} GTs, 80 classes, CPU, {args.threads} threads")
    print(f"torch {torch.__version__}; {load_line()} before\n")
    names = list(args.presets)
    try:
        import ultralytics  # noqa: F401

        names.append(ULTRALYTICS)
    except ImportError:
        pass
    if args.busy:
        print(f"Contention: {args.rounds} rounds, each every side quiet then with {args.busy} busy processes\n")
        contention(names, args)
        return 0
    print("| preset | first call (s) | warm call (s) | peak RSS growth (MiB) | process peak RSS (MiB) | "
          "under 3 s and 2 GiB |")
    print("|---|---:|---:|---:|---:|---|")
    for name in names:
        r = measure(name, args.size, args.gts, args)
        ok = "yes" if r["seconds"] < 3 and r["process_peak_mib"] < 2048 else "**no**"
        print(f"| {name} | {r['seconds']:.2f} | {r['warm_seconds']:.2f} | {r['peak_growth_mib']:.0f} | "
              f"{r['process_peak_mib']:.0f} | {ok if name != ULTRALYTICS else 'reference'} |", flush=True)
    print(f"\n{load_line()} after")
    if args.skip_scaling:
        return 0
    print("\n## Scaling: time (warm call, s) and peak RSS growth (MiB) against GTs and input size\n")
    print("| preset | size (px) | N priors | M GTs | N x M | candidate pairs | time (s) | peak RSS growth (MiB) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    rows = [(p, False) for p in args.scaling_presets] + [(p, True) for p in args.dense]
    for name, dense in rows:
        for size in (640, 1024, 1280):
            for gts in (50, 500, 5000):
                x = make_scene(size, gts)
                n = x["priors"].shape[0]
                if dense and n * gts > DENSE_LIMIT:
                    continue
                r = measure(name, size, gts, args, dense=dense)
                label = f"{name} (dense form)" if dense else name
                print(f"| {label} | {size} | {n} | {gts} | {n * gts:,} | {candidate_pairs(x):,} | "
                      f"{r['warm_seconds']:.3f} | {r['peak_growth_mib']:.0f} |", flush=True)
    print(f"\n{load_line()} after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
