#!/usr/bin/env python3
"""Plots on-call rollback latency against fleet size from lockstep-fleet-bench --json files.

    bench/plot_rollback.py OUT.svg RUN.json [RUN.json ...]

Writes a self-contained SVG (no plotting library needed): p50 and p99 of the rollbacks of
each run against its host count, log-scaled fleet size, with the 1 s goal drawn in.
"""
import json
import math
import sys


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    runs = []
    for path in argv[2:]:
        with open(path) as f:
            j = json.load(f)
        if "rollback_p50_ms" in j:
            runs.append((j["hosts"], j["rollback_p50_ms"], j["rollback_p99_ms"]))
    if not runs:
        sys.exit("no run with rollback figures")
    runs.sort()

    w, h = 640, 360
    left, right, top, bottom = 70, 20, 40, 50
    xs = [r[0] for r in runs]
    x_lo, x_hi = math.log10(min(xs)) - 0.1, math.log10(max(xs)) + 0.1
    y_hi = max(1100.0, max(r[2] for r in runs) * 1.1)

    def px(n):
        return left + (math.log10(n) - x_lo) / (x_hi - x_lo) * (w - left - right)

    def py(ms):
        return top + (1 - ms / y_hi) * (h - top - bottom)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{w / 2}" y="22" text-anchor="middle" font-size="14">'
        "On-call rollback: command to every host confirmed</text>",
    ]
    # Axes and grid.
    step = 200 if y_hi <= 2000 else 500
    ms = 0
    while ms <= y_hi:
        y = py(ms)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{w - right}" y2="{y:.1f}" '
                   'stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{ms}</text>')
        ms += step
    for n in xs:
        x = px(n)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{h - bottom}" '
                   'stroke="#eee"/>')
        out.append(f'<text x="{x:.1f}" y="{h - bottom + 16}" text-anchor="middle">{n:,}</text>')
    out.append(f'<text x="{w / 2}" y="{h - 12}" text-anchor="middle">hosts (log scale)</text>')
    out.append(f'<text x="16" y="{h / 2}" text-anchor="middle" '
               f'transform="rotate(-90 16 {h / 2})">ms</text>')
    goal = py(1000)
    out.append(f'<line x1="{left}" y1="{goal:.1f}" x2="{w - right}" y2="{goal:.1f}" '
               'stroke="#c00" stroke-dasharray="6 4"/>')
    out.append(f'<text x="{w - right - 4}" y="{goal - 6:.1f}" text-anchor="end" '
               'fill="#c00">goal: p99 &lt; 1 s at 1,000 hosts</text>')
    for idx, (name, colour) in ((1, ("p50", "#1f6fb4")), (2, ("p99", "#e07b00"))):
        pts = " ".join(f"{px(r[0]):.1f},{py(r[idx]):.1f}" for r in runs)
        out.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for r in runs:
            out.append(f'<circle cx="{px(r[0]):.1f}" cy="{py(r[idx]):.1f}" r="3.5" '
                       f'fill="{colour}"><title>{r[0]} hosts: {name} {r[idx]:.0f} ms</title>'
                       '</circle>')
        ly = top + 8 + 16 * (idx - 1)
        out.append(f'<line x1="{left + 12}" y1="{ly}" x2="{left + 32}" y2="{ly}" '
                   f'stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{left + 38}" y="{ly + 4}">{name}</text>')
    out.append("</svg>")
    with open(argv[1], "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main(sys.argv)
