#!/usr/bin/env python3
"""Pictures of the benchmark and the soak, drawn from their committed run data.

    python3 scripts/plots.py bench RUNS.jsonl [--out DIR] [--png DIR]
        benchmark (scripts/bench.sh's runs.jsonl): DIR/bench-throughput.svg, bench-latency.svg,
        bench-ratio.svg (default DIR: benches)
    python3 scripts/plots.py soak SERIES.jsonl [--out DIR] [--png DIR]
        soak under faults (examples/soak's --series file): DIR/soak-timeline.svg
    python3 scripts/plots.py soak-report SERIES.jsonl SOAK.md
        rewrites the generated block at the top of SOAK.md (pictures and verdict)
    python3 scripts/plots.py check
        the committed pictures (benches/*.svg) are what this script draws from the committed data
        (benches/results/bench.jsonl, benches/results/soak.jsonl), byte for byte, and the
        verdicts in benches/REPORT.md and benches/SOAK.md are the ones written from that data

--png DIR also writes a PNG of each picture there (for looking at, not committed).

The SVGs are deterministic: fixed fonts (matplotlib's own DejaVu Sans), sizes and colours, no
date in the metadata, a fixed hash salt for the ids; matplotlib is pinned (MATPLOTLIB below, the
version scripts/test-services.sh installs), so the same data gives the same bytes.
"""
import io
import json
import os
import sys
import tempfile

MATPLOTLIB = "3.11.2"
ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
BENCHES = os.path.join(ROOT, "benches")

BACKENDS = [("embedded", "embedded (SQLite + in-process store)"), ("redis-postgres", "Redis + PostgreSQL")]
COLOURS = {"embedded": "#1f77b4", "redis-postgres": "#d95f02"}
MARKERS = {"embedded": "o", "redis-postgres": "s"}
LEVELS = [1, 16, 64]
# The RPC scenarios of scripts/bench.sh, in its report's order, with a title for each panel.
SCENARIOS = [
    ("get-recovery-flow", "GetRecoveryFlow"),
    ("verify-code-wrong", "VerifyCode (wrong code)"),
    ("cancel-recovery", "CancelRecovery"),
    ("start-recovery", "StartRecovery"),
    ("send-verification-code", "SendVerificationCode"),
    ("validate-password", "ValidatePassword"),
    ("validate-password-worst", "ValidatePassword (worst case)"),
    ("create-captcha", "CreateCaptcha"),
    ("verify-password", "VerifyPassword"),
    ("verify-code-right", "VerifyCode (right code)"),
    ("reset-password", "ResetPassword"),
    ("recovery", "whole recovery (6 calls)"),
]
# argon2id operations per call: these RPCs are bounded by the hasher, not by the service.
ARGON2_OPS = {"verify-password": 1, "reset-password": 2, "recovery": 3}
# The memory target of the report: 64 MiB + 4 permits × 19 MiB.
RSS_BOUND_MIB = 64 + 4 * 19


# ---------------------------------------------------------------- matplotlib, made deterministic

def _pyplot():
    import matplotlib

    if matplotlib.__version__ != MATPLOTLIB:
        sys.exit(f"plots.py: matplotlib {MATPLOTLIB} is pinned (scripts/test-services.sh installs it); "
                 f"found {matplotlib.__version__}: pip install matplotlib=={MATPLOTLIB}")
    matplotlib.use("Agg")
    from matplotlib import font_manager
    import matplotlib.pyplot as plt

    # Only the fonts matplotlib ships, whatever the machine has installed: the text's layout
    # (and so the SVG's bytes) depends on the font's metrics.
    bundled = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data")
    font_manager.fontManager.ttflist = [f for f in font_manager.fontManager.ttflist
                                        if f.fname.startswith(bundled)]
    matplotlib.rcdefaults()
    matplotlib.rcParams.update({
        "svg.hashsalt": "recovery-service",
        "svg.fonttype": "none",  # text stays text: small files, searchable
        "font.family": "DejaVu Sans",
        "font.size": 9,
        "axes.titlesize": 9.5,
        "axes.titleweight": "bold",
        "axes.labelsize": 8.5,
        "xtick.labelsize": 8,
        "ytick.labelsize": 8,
        "legend.fontsize": 8.5,
        "axes.grid": True,
        "grid.color": "#dddddd",
        "grid.linewidth": 0.6,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "lines.linewidth": 1.6,
        "lines.markersize": 5,
        "figure.dpi": 100,
        "savefig.dpi": 100,
        "path.simplify": False,
    })
    return plt


def _save(fig, out_dir, name, png_dir=None):
    path = os.path.join(out_dir, name)
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight", pad_inches=0.15)
    data = buf.getvalue()
    with open(path, "wb") as f:
        f.write(data)
    if png_dir:
        fig.savefig(os.path.join(png_dir, name.replace(".svg", ".png")), format="png", dpi=110,
                    bbox_inches="tight", pad_inches=0.15)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


# ---------------------------------------------------------------- benchmark

def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _pick(runs, backend, scenario, in_flight):
    """The plain timed runs (no flood, not the CPU-accounting runs), as scripts/bench.sh's
    report picks them."""
    return [r for r in runs
            if r.get("label") == backend and r.get("scenario") == scenario
            and r.get("in_flight") == in_flight and "flood" not in r and "cpu_s" not in r]


def _noop(runs, backend, n):
    rs = _pick(runs, backend, "health", n)
    return sum(r["rate"] for r in rs) / len(rs) if rs else None


def _argon2(runs, backend):
    rs = [r for r in runs if r.get("label") == backend and r.get("scenario") == "argon2"]
    return rs[0]["rate"] if rs else None


def _series(runs, backend, scenario, field):
    xs, ys = [], []
    for n in LEVELS:
        rs = _pick(runs, backend, scenario, n)
        if rs and rs[0].get(field) is not None:
            xs.append(n)
            ys.append(rs[0][field])
    return xs, ys


def _backends(runs):
    return [(b, t) for b, t in BACKENDS if any(r.get("label") == b for r in runs)]


def _in_flight_axis(ax):
    ax.set_xscale("log", base=2)
    ax.set_xticks(LEVELS)
    ax.set_xticklabels([str(n) for n in LEVELS])
    ax.set_xlim(0.75, 90)
    ax.minorticks_off()


def _log_ticks(ax):
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=12))
    ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(), numticks=12))

    def fmt(v, _):
        if v >= 1000:
            return f"{v / 1000:g}k"
        return f"{v:g}"

    ax.yaxis.set_major_formatter(FuncFormatter(fmt))


def _grid(plt, title, rows=3, cols=4):
    fig, axes = plt.subplots(rows, cols, figsize=(12.5, 8.6), sharex=True)
    fig.suptitle(title, fontsize=11.5, fontweight="bold", x=0.01, ha="left")
    return fig, [ax for row in axes for ax in row]


def _quick_note(quick):
    return " — QUICK run: short, indicative only" if quick else ""


def plot_bench(runs, out_dir, png_dir=None, quick=False):
    plt = _pyplot()
    from matplotlib.lines import Line2D

    backends = _backends(runs)
    written = []

    # Throughput: calls answered per second against calls in flight, one panel per RPC.
    fig, axes = _grid(plt, "Throughput against calls in flight (answered calls per second, log scale)"
                      + _quick_note(quick))
    for ax, (scenario, title) in zip(axes, SCENARIOS):
        for backend, _ in backends:
            c = COLOURS[backend]
            xs = [n for n in LEVELS if _noop(runs, backend, n)]
            ax.plot(xs, [_noop(runs, backend, n) for n in xs], color=c, lw=1.0, ls=(0, (2, 2)), alpha=0.7)
            xs, ys = _series(runs, backend, scenario, "rate")
            ax.plot(xs, ys, color=c, marker=MARKERS[backend])
            argon = _argon2(runs, backend)
            if scenario in ARGON2_OPS and argon:
                ax.axhline(argon / ARGON2_OPS[scenario], color=c, lw=1.0, ls=":")
        ax.set_title(title, loc="left")
        _in_flight_axis(ax)
        _log_ticks(ax)
        if scenario in ARGON2_OPS:
            ops = ARGON2_OPS[scenario]
            ax.text(0.98, 0.04, f"dotted: argon2 ceiling ({ops} hash{'es' if ops > 1 else ''}/call)",
                    transform=ax.transAxes, ha="right", va="bottom", fontsize=7, color="#444444")
    for ax in axes[-4:]:
        ax.set_xlabel("calls in flight")
    for ax in axes[::4]:
        ax.set_ylabel("calls / s")
    handles = [Line2D([], [], color=COLOURS[b], marker=MARKERS[b], label=t) for b, t in backends]
    handles += [Line2D([], [], color="#666666", lw=1.0, ls=(0, (2, 2)), label="no-op Health/Check, same server"),
                Line2D([], [], color="#666666", lw=1.0, ls=":", label="argon2 ceiling (raw hash rate ÷ hashes per call)")]
    fig.legend(handles=handles, loc="lower center", ncol=4, frameon=False, bbox_to_anchor=(0.5, -0.035))
    fig.tight_layout(rect=(0, 0.02, 1, 0.97))
    written.append(_save(fig, out_dir, "bench-throughput.svg", png_dir))

    # Latency: p50 and p99 against calls in flight.
    fig, axes = _grid(plt, "Latency against calls in flight (ms, log scale; solid p50, dashed p99)"
                      + _quick_note(quick))
    for ax, (scenario, title) in zip(axes, SCENARIOS):
        for backend, _ in backends:
            c = COLOURS[backend]
            xs, ys = _series(runs, backend, scenario, "p50_ms")
            ax.plot(xs, ys, color=c, marker=MARKERS[backend])
            xs, ys = _series(runs, backend, scenario, "p99_ms")
            ax.plot(xs, ys, color=c, marker=MARKERS[backend], ls="--", mfc="white")
        ax.set_title(title, loc="left")
        _in_flight_axis(ax)
        _log_ticks(ax)
    for ax in axes[-4:]:
        ax.set_xlabel("calls in flight")
    for ax in axes[::4]:
        ax.set_ylabel("latency, ms")
    handles = [Line2D([], [], color=COLOURS[b], marker=MARKERS[b], label=t) for b, t in backends]
    handles += [Line2D([], [], color="#666666", label="p50"),
                Line2D([], [], color="#666666", ls="--", marker="o", mfc="white", label="p99")]
    fig.legend(handles=handles, loc="lower center", ncol=4, frameon=False, bbox_to_anchor=(0.5, -0.035))
    fig.tight_layout(rect=(0, 0.02, 1, 0.97))
    written.append(_save(fig, out_dir, "bench-latency.svg", png_dir))

    # Ratio to the no-op: one row per RPC, one panel per backend.
    fig, axes = plt.subplots(1, len(backends), figsize=(12.5, 5.4), sharey=True, squeeze=False)
    axes = axes[0]
    fig.suptitle("Throughput as a share of the no-op Health/Check on the same server "
                 "(log scale; 1 = as fast as the no-op)" + _quick_note(quick),
                 fontsize=11.5, fontweight="bold", x=0.01, ha="left")
    level_style = {1: ("#9e9ac8", "o"), 16: ("#6a51a3", "^"), 64: ("#252525", "s")}
    rows = list(reversed(SCENARIOS))
    all_ratios = [r["rate"] / _noop(runs, b, r["in_flight"]) for b, _ in backends for s, _ in SCENARIOS
                  for n in LEVELS for r in _pick(runs, b, s, n) if _noop(runs, b, n)]
    lowest = min([0.0003] + [0.6 * x for x in all_ratios if x > 0])
    for ax, (backend, title) in zip(axes, backends):
        for y, (scenario, _) in enumerate(rows):
            ratios = []
            for n in LEVELS:
                rs, base = _pick(runs, backend, scenario, n), _noop(runs, backend, n)
                if rs and base:
                    ratios.append((n, rs[0]["rate"] / base))
            if ratios:
                vals = [r for _, r in ratios]
                ax.plot([min(vals), max(vals)], [y, y], color="#bbbbbb", lw=1.0, zorder=1)
            for n, r in ratios:
                colour, marker = level_style[n]
                ax.plot([r], [y], marker=marker, color=colour, ls="none", ms=6, zorder=2)
        ax.axvline(1.0, color="#2ca02c", lw=1.2)
        ax.axvspan(0.5, 2.0, color="#2ca02c", alpha=0.07, lw=0)
        ax.set_xscale("log")
        ax.set_xlim(lowest, 2.0)
        ax.set_xticks([0.001, 0.01, 0.1, 0.5, 1.0])
        ax.set_xticklabels(["0.001", "0.01", "0.1", "0.5", "1"])
        ax.minorticks_off()
        ax.set_title(title, loc="left", color=COLOURS[backend])
        ax.set_xlabel("rate ÷ no-op rate at the same calls in flight")
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([t for _, t in rows])
        ax.grid(axis="y", color="#eeeeee")
    handles = [Line2D([], [], color=level_style[n][0], marker=level_style[n][1], ls="none", ms=6,
                      label=f"{n} in flight") for n in LEVELS]
    handles.append(Line2D([], [], color="#2ca02c", alpha=0.25, lw=8, label="≥ 0.5 of the no-op"))
    fig.legend(handles=handles, loc="lower center", ncol=4, frameon=False, bbox_to_anchor=(0.5, -0.05))
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    written.append(_save(fig, out_dir, "bench-ratio.svg", png_dir))
    return written


def _names(items):
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def bench_verdict(runs, quick=False):
    """One paragraph, written from the numbers: which RPCs stay near the no-op, which are
    bounded by argon2, whether peak RSS met its target."""
    titles = dict(SCENARIOS)
    short = {b: ("embedded" if b == "embedded" else "Redis + PostgreSQL") for b, _ in BACKENDS}
    parts = []
    n = 64
    for backend, _ in _backends(runs):
        base = _noop(runs, backend, n)
        if not base:
            continue
        near, mid, far = [], [], []
        for scenario, title in SCENARIOS:
            if scenario in ARGON2_OPS:
                continue
            rs = _pick(runs, backend, scenario, n)
            if not rs:
                continue
            ratio = rs[0]["rate"] / base
            entry = f"{title} {ratio:.2f}×"
            (near if ratio >= 0.5 else mid if ratio >= 0.1 else far).append(entry)
        text = f"on {short[backend]}"
        groups = []
        if near:
            groups.append(f"near the no-op (≥ 0.5×): {_names(near)}")
        if mid:
            groups.append(f"at 0.1–0.5×: {_names(mid)}")
        if far:
            groups.append(f"below 0.1×: {_names(far)}")
        parts.append(text + ", " + "; ".join(groups))
    lead = ("At 64 calls in flight, throughput against the no-op Health/Check of the same server — "
            + "; ".join(parts) + ".") if parts else ""
    argon_parts = []
    shares = []
    for backend, _ in _backends(runs):
        argon = _argon2(runs, backend)
        if not argon:
            continue
        bits = []
        for scenario, ops in ARGON2_OPS.items():
            best = max((r["rate"] for m in LEVELS for r in _pick(runs, backend, scenario, m)), default=None)
            if best is not None:
                shares.append(best / (argon / ops))
                bits.append(f"{titles[scenario]} {best:.1f}/s of {argon / ops:.1f} ({best / (argon / ops):.0%})")
        if bits:
            argon_parts.append(f"on {short[backend]} (argon2id {argon:.1f} hashes/s) " + ", ".join(bits))
    argon_text = ""
    if argon_parts and max(shares) <= 1.1:
        argon_text = (" Whatever hashes a password is bounded by argon2, not by the service: the best rate "
                      "against the ceiling (raw hash rate ÷ hashes per call) " + "; ".join(argon_parts) + ".")
    elif argon_parts:
        # The ceiling is measured once, for a few seconds; when the machine's load changed between
        # that sample and the RPCs, the RPCs can beat it, and the comparison says nothing.
        argon_text = (" The argon2 ceiling of this run is not a usable yardstick: the hashing RPCs beat the "
                      "raw hash rate measured a few seconds apart (best rate against raw rate ÷ hashes per "
                      "call: " + "; ".join(argon_parts) + "), so the machine's load changed between the "
                      "samples; only a calmer run can show how close they come to argon2.")
    rss_bits = []
    for backend, _ in _backends(runs):
        for r in runs:
            if r.get("label") == backend and r.get("scenario") == "rss":
                peak = r["peak_kib"] / 1024
                rss_bits.append(f"{peak:.0f} MiB on {short[backend]}")
                rss_ok = peak <= RSS_BOUND_MIB
                rss_bits[-1] += "" if rss_ok else " (over)"
    rss_text = ""
    if rss_bits:
        clients = next((r["clients"] for r in runs if r.get("scenario") == "rss"), "?")
        all_ok = all(r["peak_kib"] / 1024 <= RSS_BOUND_MIB for r in runs if r.get("scenario") == "rss")
        rss_text = (f" Peak RSS under {clients} concurrent ResetPassword on a fresh server: "
                    f"{_names(rss_bits)}, target ≤ {RSS_BOUND_MIB} MiB: {'met' if all_ok else 'missed'}.")
    kinds = {}
    for r in runs:
        if "errors" not in r:
            continue
        for kind, n in list(r.get("errors", {}).items()) + list(r.get("wrong", {}).items()):
            key = (f"{dict(SCENARIOS).get(r['scenario'], r['scenario'])} at {r.get('in_flight')} in flight",
                   kind.split("/")[-1])
            kinds[key] = kinds.get(key, 0) + n
    failed = sum(kinds.values())
    fail_text = (" Every call of every scenario was answered correctly." if failed == 0
                 else f" {failed} calls failed or were answered wrongly: "
                 + _names([f"{scenario} {kind} ×{n}" for (scenario, kind), n in sorted(kinds.items())])
                 + (" (RATE_LIMITED: a hashing permit was not free within the queue timeout, the "
                    "service's answer to more hashing than argon2 can do)" if any(k == "RATE_LIMITED" for _, k in kinds)
                    else "") + "; see the tables.")
    quick_text = (" This was a quick run (short measurements on a shared, loaded machine): the figures "
                  "are indicative, the ratios within the run are what to compare." if quick else "")
    return (lead + argon_text + rss_text + fail_text + quick_text).strip()


# ---------------------------------------------------------------- soak

SETTLE_S = 30.0  # examples/soak: errors count towards a fault until this long after its end
FAULT_COLOURS = {
    "Redis master killed": "#e41a1c",
    "PostgreSQL restarted": "#377eb8",
    "SMTP stopped": "#4daf4a",
    "replica 1 SIGKILLed": "#984ea3",
    "PostgreSQL +200 ms": "#ff7f00",
    "PostgreSQL connections cut": "#a65628",
}


def _soak_parts(series):
    meta = next(s for s in series if s["kind"] == "meta")
    buckets = [s for s in series if s["kind"] == "bucket"]
    faults = [s for s in series if s["kind"] == "fault"]
    return meta, buckets, faults


def plot_soak(series, out_dir, png_dir=None):
    plt = _pyplot()
    from matplotlib.patches import Patch

    meta, buckets, faults = _soak_parts(series)
    width = meta["bucket_s"]
    load_end = max(meta["load_end_s"], max((b["t"] + width for b in buckets if b["calls"]), default=0))
    # The RSS goes on until the queue has drained and the invariants are checked.
    end = max([load_end] + [s["t"] for s in series if s["kind"] == "rss"])
    labels = []
    for f in faults:
        if f["label"] not in labels:
            labels.append(f["label"])
    fig, axes = plt.subplots(4, 1, figsize=(12.5, 9.6), sharex=True,
                             gridspec_kw={"height_ratios": [0.22 * max(len(labels), 1), 2.2, 1.6, 1.6]})
    lane, lat, err, rss = axes
    load = ""
    if meta.get("load_average_start") is not None:
        load = (f"; machine load average {meta['load_average_start']:g} → {meta.get('load_average_end', 0):g}"
                f" on {meta.get('cpus', '?')} cores")
    fig.suptitle(f"Soak under faults: {meta['minutes']:g} min at {meta['rate']:g} recoveries/s, "
                 f"{meta['replicas']} replicas on Redis Sentinel + PostgreSQL + SMTP{load}", fontsize=11.5,
                 fontweight="bold", x=0.01, ha="left")

    def shade(ax):
        for f in faults:
            c = FAULT_COLOURS.get(f["label"], "#888888")
            if f["end"] - f["start"] < 0.5:
                ax.axvline(f["start"], color=c, lw=1.2, alpha=0.6)
            else:
                ax.axvspan(f["start"], f["end"], color=c, alpha=0.12, lw=0)
        ax.axvspan(0, meta["warm_up_s"], color="#000000", alpha=0.04, lw=0)
        if end > load_end + 1:
            ax.axvspan(load_end, end, color="#000000", alpha=0.04, lw=0, hatch="//", fill=False)

    # Fault lanes: one row per kind of fault, a bar for each window.
    for i, label in enumerate(labels):
        c = FAULT_COLOURS.get(label, "#888888")
        for f in faults:
            if f["label"] != label:
                continue
            w = max(f["end"] - f["start"], end / 300)
            lane.barh(i, w, left=f["start"], height=0.6, color=c)
    lane.set_yticks(range(len(labels)))
    lane.set_yticklabels(labels)
    lane.invert_yaxis()
    lane.set_ylim(len(labels) - 0.5, -0.5)
    lane.grid(axis="y", visible=False)
    lane.set_title("faults (bars: from the fault's start until it is over); grey below: the "
                   f"first {meta['warm_up_s']:g} s, warm-up; hatched: the load has stopped, the queue drains",
                   loc="left")

    t = [b["t"] + width / 2 for b in buckets]
    shade(lat)
    p50 = [b["p50_ms"] for b in buckets]
    p99 = [b["p99_ms"] for b in buckets]
    lat.plot([x for x, v in zip(t, p50) if v is not None], [v for v in p50 if v is not None],
             color="#1f77b4", label="p50")
    lat.plot([x for x, v in zip(t, p99) if v is not None], [v for v in p99 if v is not None],
             color="#d62728", label="p99")
    _log_ticks(lat)
    lat.set_ylabel("latency of a try, ms")
    lat.set_title(f"latency of every try (each attempt of a call, whatever its answer), per {width:g} s",
                  loc="left")
    lat.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), frameon=False)

    shade(err)
    base = [0.0] * len(buckets)
    kinds = [("unavailable", "answered\nUNAVAILABLE\n(retried)", "#fdae61"),
             ("no_answer", "no answer\n(connection lost,\nretried)", "#d7191c"),
             ("other_error", "another error\n(not UNAVAILABLE;\nsee the report)", "#7b3294")]
    for key, label, colour in kinds:
        share = [100.0 * b[key] / b["calls"] if b["calls"] else 0.0 for b in buckets]
        top = [a + s for a, s in zip(base, share)]
        err.fill_between(t, base, top, step="mid", color=colour, alpha=0.85, lw=0, label=label)
        base = top
    err.set_ylim(0, max(5.0, min(100.0, max(base, default=0) * 1.15)))
    err.set_ylabel("% of tries")
    err.set_title(f"tries not answered OK, per {width:g} s (replayed codes and tokens left out: "
                  "their refusal is the expected answer)", loc="left")
    err.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), frameon=False)

    shade(rss)
    replicas = sorted({s["replica"] for s in series if s["kind"] == "rss"})
    rss_colours = ["#1b9e77", "#7570b3", "#e7298a", "#66a61e"]
    for r in replicas:
        pts = [(s["t"], s["kib"] / 1024) for s in series if s["kind"] == "rss" and s["replica"] == r]
        # A gap where the replica was down.
        xs, ys = [], []
        for i, (x, y) in enumerate(pts):
            if i and x - pts[i - 1][0] > 3:
                xs.append(float("nan"))
                ys.append(float("nan"))
            xs.append(x)
            ys.append(y)
        c = rss_colours[r % len(rss_colours)]
        rss.plot(xs, ys, color=c, lw=1.3, label=f"replica {r}")
        baselines = [s for s in series if s["kind"] == "rss_baseline" and s["replica"] == r]
        for i, b in enumerate(baselines):
            mib = b["kib"] / 1024
            until = baselines[i + 1]["t"] if i + 1 < len(baselines) else end
            rss.hlines([mib * 0.9, mib * 1.1], b["t"], until, colors=c, lw=0.8, linestyles=":")
            rss.plot([b["t"]], [mib], marker="D", color=c, ms=4)
    rss.set_ylabel("RSS, MiB")
    rss.set_xlabel("seconds since the load started")
    rss.set_title("resident memory of each replica, every second (diamond: the baseline after warm-up; "
                  "dotted: ±10 %, the bound at the end)", loc="left")
    rss.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), frameon=False)
    rss.set_xlim(0, end)

    handles = [Patch(color=FAULT_COLOURS.get(label, "#888888"), alpha=0.35, label=label) for label in labels]
    handles.append(Patch(color="#000000", alpha=0.08, label="warm-up"))
    if end > load_end + 1:
        handles.append(Patch(fill=False, hatch="//", edgecolor="#999999", label="draining"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False,
               bbox_to_anchor=(0.5, -0.03))
    fig.tight_layout(rect=(0, 0.02, 1, 0.97))
    return [_save(fig, out_dir, "soak-timeline.svg", png_dir)]


def soak_verdict(series):
    meta, buckets, faults = _soak_parts(series)
    checks = [s for s in series if s["kind"] == "check"]
    failed = [c["name"] for c in checks if not c["ok"]]
    width = meta["bucket_s"]
    cycles = sum(1 for f in faults if f["label"] == "Redis master killed")

    def in_fault(b):
        # The latest fault that started before the stretch ended and ended (plus the settling
        # time) after it began, as the soak's report assigns errors.
        hits = [f for f in faults if b["t"] < f["end"] + SETTLE_S and b["t"] + width > f["start"]]
        return max(hits, key=lambda f: f["start"], default=None)

    loaded = [b for b in buckets if b["calls"]]
    calm = [b for b in loaded if not in_fault(b) and b["t"] >= meta["warm_up_s"]]
    bad = lambda b: b["calls"] - b["ok"]
    tries = sum(b["calls"] for b in loaded)
    outside = sum(bad(b) for b in loaded if not in_fault(b))
    worst = max(loaded, key=lambda b: bad(b) / b["calls"], default=None)
    text = (f"{meta['minutes']:g} minutes at {meta['rate']:g} recoveries/s, {len(faults)} faults "
            f"({cycles} cycle{'s' if cycles != 1 else ''})")
    if meta.get("load_average_start") is not None:
        text += (f", on a machine whose load average went {meta['load_average_start']:g} → "
                 f"{meta.get('load_average_end', 0):g} ({meta.get('cpus', '?')} cores, shared)")
    text += ": "
    if checks:
        text += (f"all {len(checks)} invariants passed. " if not failed else
                 f"**{len(failed)} of {len(checks)} invariants failed** ({'; '.join(failed)}). ")
    if worst is not None and bad(worst):
        f = in_fault(worst)
        text += (f"The worst {width:g}-second stretch had {100 * bad(worst) / worst['calls']:.0f} % of its tries "
                 f"not answered OK ({worst['t']:.0f}–{worst['t'] + width:.0f} s"
                 + (f", during or after “{f['name']}”" if f else "") + "); ")
    text += (f"outside the fault windows (start to end + {SETTLE_S:.0f} s) {outside} of {tries} tries failed. ")
    if calm:
        p99 = sorted(b["p99_ms"] for b in calm if b["p99_ms"] is not None)
        peak = max(loaded, key=lambda b: b["p99_ms"] or 0)
        f = in_fault(peak)
        text += (f"p99 latency of a try was {p99[len(p99) // 2]:.0f} ms in a typical quiet stretch and peaked at "
                 f"{peak['p99_ms']:.0f} ms ({peak['t']:.0f} s" + (f", “{f['label']}”" if f else "") + "). ")
    rss_bits = []
    for b in (s for s in series if s["kind"] == "rss_baseline"):
        last = [s for s in series if s["kind"] == "rss_baseline" and s["replica"] == b["replica"]][-1]
        if b is not last:
            continue
        end = next((s["kib"] for s in series if s["kind"] == "rss_end" and s["replica"] == b["replica"]), None)
        if end is not None:
            rss_bits.append(f"replica {b['replica']} {b['kib'] / 1024:.0f} → {end / 1024:.0f} MiB "
                            f"({100 * (end / b['kib'] - 1):+.1f} %)")
    if rss_bits:
        within = all(0.9 <= s["kib"] / b["kib"] <= 1.1
                     for s in series if s["kind"] == "rss_end"
                     for b in [[x for x in series if x["kind"] == "rss_baseline" and x["replica"] == s["replica"]][-1]])
        text += (f"RSS from the baseline after warm-up to the end: {_names(rss_bits)}, "
                 f"{'within' if within else 'outside'} the 10 % bound.")
    return text.strip()


SOAK_BEGIN = "<!-- soak:begin — generated by scripts/plots.py soak-report from benches/results/soak.jsonl -->"
SOAK_END = "<!-- soak:end -->"


def soak_block(series):
    return "\n".join([
        SOAK_BEGIN,
        "![Soak: faults, latency, errors and RSS over time](soak-timeline.svg)",
        "",
        "**Verdict.** " + soak_verdict(series),
        SOAK_END,
    ])


def write_soak_report(series, path):
    old = open(path).read() if os.path.exists(path) else "# Soak under faults\n"
    block = soak_block(series)
    begin = old.find("<!-- soak:begin")
    if begin >= 0 and SOAK_END in old:
        new = old[:begin] + block + old[old.index(SOAK_END) + len(SOAK_END):]
    else:
        # After the title and its first paragraph.
        lines = old.split("\n")
        at = 1
        while at < len(lines) and lines[at].strip() == "":
            at += 1
        while at < len(lines) and lines[at].strip() != "":
            at += 1
        new = "\n".join(lines[:at] + ["", block] + lines[at:])
    with open(path, "w") as f:
        f.write(new)


# ---------------------------------------------------------------- check

def check():
    problems = []
    bench_data = os.path.join(BENCHES, "results", "bench.jsonl")
    soak_data = os.path.join(BENCHES, "results", "soak.jsonl")
    with tempfile.TemporaryDirectory() as tmp:
        drawn = []
        if os.path.exists(bench_data):
            runs = read_jsonl(bench_data)
            quick = any(r.get("scenario") == "meta" and r.get("quick") for r in runs)
            drawn += plot_bench(runs, tmp, quick=quick)
            report = open(os.path.join(BENCHES, "REPORT.md")).read()
            if bench_verdict(runs, quick) not in report:
                problems.append("benches/REPORT.md: its verdict is not the one written from "
                                "benches/results/bench.jsonl (re-render: bash scripts/bench.sh --render DIR)")
        else:
            problems.append("benches/results/bench.jsonl is missing")
        if os.path.exists(soak_data):
            series = read_jsonl(soak_data)
            drawn += plot_soak(series, tmp)
            if soak_block(series) not in open(os.path.join(BENCHES, "SOAK.md")).read():
                problems.append("benches/SOAK.md: its generated block is not the one written from "
                                "benches/results/soak.jsonl (python3 scripts/plots.py soak-report "
                                "benches/results/soak.jsonl benches/SOAK.md)")
        else:
            problems.append("benches/results/soak.jsonl is missing")
        for path in drawn:
            name = os.path.basename(path)
            committed = os.path.join(BENCHES, name)
            if not os.path.exists(committed):
                problems.append(f"benches/{name} is missing")
            elif open(committed, "rb").read() != open(path, "rb").read():
                problems.append(f"benches/{name} differs from what scripts/plots.py draws from the committed data")
    for p in problems:
        print(f"plots.py check: {p}", file=sys.stderr)
    if not problems:
        print(f"plots.py check: {len(drawn)} pictures and 2 verdicts match the committed data")
    return 1 if problems else 0


def main(argv):
    def opt(name, default=None):
        if name in argv:
            i = argv.index(name)
            value = argv[i + 1]
            del argv[i:i + 2]
            return value
        return default

    out = opt("--out", BENCHES)
    png = opt("--png")
    if png:
        os.makedirs(png, exist_ok=True)
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "check" and len(argv) == 2:
        return check()
    if cmd == "bench" and len(argv) == 3:
        runs = read_jsonl(argv[2])
        quick = any(r.get("scenario") == "meta" and r.get("quick") for r in runs)
        for path in plot_bench(runs, out, png, quick):
            print(f"wrote {os.path.relpath(path)}")
        return 0
    if cmd == "soak" and len(argv) == 3:
        for path in plot_soak(read_jsonl(argv[2]), out, png):
            print(f"wrote {os.path.relpath(path)}")
        return 0
    if cmd == "soak-report" and len(argv) == 4:
        write_soak_report(read_jsonl(argv[2]), argv[3])
        print(f"wrote {argv[3]}")
        return 0
    if cmd == "bench-verdict" and len(argv) == 3:
        runs = read_jsonl(argv[2])
        print(bench_verdict(runs, any(r.get("scenario") == "meta" and r.get("quick") for r in runs)))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
