#!/usr/bin/python3
"""bench/report.py — docs/performance.md and docs/perf/*.svg from a bench run.

    bench/report.py --perf docs/perf --out docs/performance.md

Reads what bench/run.sh left in --perf: bench.json (settings, references, wrk
runs, seed), bypass.json and cached.json (chatload), chat.json and
realtime.json when present (the chat mix; `chatload realtime`), commands.txt. Writes the
plots with gnuplot (SVG; skipped with a note when gnuplot is missing) and the
report. Every figure in the report comes from those files; verdicts are
computed, never written by hand. Standard library only.
"""
import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def num(v):
    return v if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)) else None


def fmt(v, spec=".1f", unit=""):
    v = num(v)
    return "–" if v is None else f"{v:{spec}}{unit}"


def pct(v):
    v = num(v)
    return "–" if v is None else f"{100 * v:.1f} %"


# --- the machine -------------------------------------------------------------

def first_line(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        out = (r.stdout or r.stderr).strip().splitlines()
        return out[0].strip() if out else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"


def machine():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    os_name = "?"
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    load = "?"
    try:
        load = " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        pass
    commit = first_line(["git", "-C", str(Path(__file__).resolve().parents[1]), "rev-parse", "--short", "HEAD"])
    return [
        ("cores", str(os.cpu_count())),
        ("CPU", cpu),
        ("memory", mem),
        ("kernel", platform.release()),
        ("OS", os_name),
        ("load average when the report was written", load),
        ("chatd commit", commit),
        ("compiler", first_line(["gcc", "--version"])),
        ("PostgreSQL", first_line(["/usr/lib/postgresql/15/bin/postgres", "--version"])),
        ("PgBouncer", first_line(["/usr/sbin/pgbouncer", "--version"])),
        ("Redis", first_line(["redis-server", "--version"])),
        ("nginx", first_line(["nginx", "-v"])),
        ("wrk", first_line(["wrk", "--version"])),
        ("pgbench", first_line(["pgbench", "--version"])),
        ("gnuplot", first_line(["gnuplot", "--version"])),
    ]


# --- figures from chatload's JSON -----------------------------------------------

def run_db_qps(res):
    """Per-second DB query rates over the whole staged run (ramp, burst, recovery)."""
    tl = res.get("timeline") or []
    last = tl[-1]["t"] if tl else float("inf")
    return [q for t, _, _, q in per_scrape(res) if t <= last and q is not None]


def stage_var(st):
    m, cv = num(st.get("db_queries_per_s_mean")), num(st.get("db_queries_per_s_cv"))
    if m is None or cv is None:
        return None
    return (cv * m) ** 2


def median_wrk(bench, label):
    runs = bench["wrk"]["results"].get(label) or []
    if not runs:
        return None
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def cpu_per_request(bench, label):
    """Median CPU microseconds per answer of each process group in the wrk runs of label:
    {group: (user, system)}, from the cpu_<group>_user_s / _sys_s fields bench/run.sh adds."""
    runs = bench["wrk"]["results"].get(label) or []
    secs = bench["ref_seconds"] if label in ("nginx", "pgbench") else bench["wrk"]["seconds"]
    groups = sorted({k[4:-7] for r in runs for k in r if k.startswith("cpu_") and k.endswith("_user_s")})
    out = {}
    for g in groups:
        per = [((r[f"cpu_{g}_user_s"], r[f"cpu_{g}_sys_s"]), r["rps"] * secs) for r in runs
               if f"cpu_{g}_user_s" in r and r.get("rps")]
        if per:
            out[g] = (statistics.median(u * 1e6 / n for (u, _), n in per),
                      statistics.median(s_ * 1e6 / n for (_, s_), n in per))
    return out


def where_time_goes(w, bench):
    w("## Where the time goes\n")
    rows = [(label, what, cpu_per_request(bench, label), median_wrk(bench, label))
            for label, what in (("nginx", "nginx, static page"), ("cached", "chatd, cache on"),
                                ("bypass", "chatd, `CACHE_BYPASS=true`"),
                                ("pgbench", "pgbench, the history query"))]
    rows = [r for r in rows if r[2]]
    if not rows:
        w("No CPU accounting in this run.\n")
        return
    cores = os.cpu_count() or 1
    w("CPU time per answer in the wrk hot-page runs (medians over the runs), read from `/proc/<pid>/stat` "
      "of every process involved before and after each run, user + system. Client and servers share "
      f"{cores} cores, so a closed loop that keeps them busy answers at most cores / (CPU per answer): "
      "the last column. Where chatd's throughput falls short of nginx's, this table says which process "
      "spends the difference.\n")
    order = ["nginx", "chatd", "redis", "db", "wrk", "pgbench"]
    groups = sorted({g for r in rows for g in r[2]}, key=lambda g: order.index(g) if g in order else 9)
    w("| run | req/s | " + " | ".join(f"{g} µs (user+sys)" for g in groups) + " | total µs | ceiling req/s |")
    w("|---|---|" + "---|" * len(groups) + "---|---|")
    totals = {}
    for label, what, cpu, med in rows:
        total = sum(u + s_ for u, s_ in cpu.values())
        totals[label] = (total, cpu)
        cells = [f"{cpu[g][0] + cpu[g][1]:.1f} ({cpu[g][0]:.1f}+{cpu[g][1]:.1f})" if g in cpu else "–" for g in groups]
        w(f"| {what} | {fmt(med and med['rps'], ',.0f')} | " + " | ".join(cells) +
          f" | {total:.1f} | {cores * 1e6 / total:,.0f} |" if total else "| – |")
    if "nginx" in totals and "cached" in totals:
        tn, cn = totals["nginx"]
        tc, cc = totals["cached"]
        server = sum(sum(v) for g, v in cc.items() if g != "wrk")
        w(f"\nA cached answer costs {tc:.1f} µs of CPU in all, {tc / tn:.1f}× nginx's {tn:.1f} µs: chatd itself "
          f"{fmt(sum(cc['chatd']) if 'chatd' in cc else None, '.1f')} µs "
          f"({fmt(100 * cc['chatd'][1] / sum(cc['chatd']) if 'chatd' in cc and sum(cc['chatd']) else None, '.0f')} % "
          f"of it in the kernel: sockets), Redis {fmt(sum(cc['redis']) if 'redis' in cc else None, '.1f')} µs for "
          f"the lookup round trip, against {fmt(sum(cn['nginx']) if 'nginx' in cn else None, '.1f')} µs for nginx "
          f"to send a file it keeps open. The servers' share: {server:.1f} µs for chatd's stack, "
          f"{tn - sum(cn.get('wrk', (0, 0))):.1f} µs for nginx.\n")
    if "bypass" in totals and "pgbench" in totals:
        tb, cb = totals["bypass"]
        tp, cp = totals["pgbench"]
        dbb, dbp = sum(cb.get("db", (0, 0))), sum(cp.get("db", (0, 0)))
        w(f"An uncached answer costs {tb:.1f} µs of CPU in all against {tp:.1f} µs per pgbench transaction: "
          f"PostgreSQL and PgBouncer spend {dbb:.1f} µs on chatd's statement and {dbp:.1f} µs on pgbench's copy "
          f"of it, chatd {fmt(sum(cb['chatd']) if 'chatd' in cb else None, '.1f')} µs, wrk "
          f"{fmt(sum(cb['wrk']) if 'wrk' in cb else None, '.1f')} µs, pgbench itself "
          f"{fmt(sum(cp['pgbench']) if 'pgbench' in cp else None, '.1f')} µs.\n")

def cluster_section(w, bench, chat, perf):
    """The cluster stage beside the single process: the same chat mix stage and wrk hot page through HAProxy."""
    cl = bench.get("cluster") or {}
    if not cl.get("ran"):
        return
    n = cl.get("instances") or 3
    w("## Cluster stage\n")
    w(f"`scripts/cluster.sh` ({n} chatd instances behind HAProxy, a Redis Cluster of 3 masters + 3 replicas, "
      "PostgreSQL primary + streaming replica, each behind its PgBouncer), seeded alike, on the same machine: "
      f"the instances, HAProxy, the six Redis nodes and the load generator share {os.cpu_count()} cores, so the "
      "throughput per instance shows what the layout costs on one host, not what a host per instance gives. "
      "Its chat mix stage holds fewer connections than the single process's largest stage (`--cluster-conns`, "
      "5,000 by default): HAProxy holds two descriptors per proxied connection, and under this machine's limit "
      "of 20,000 open files per process it derives a maxconn of 9,983, so at 10,000 clients the last ones wait "
      "unaccepted and fail. Before that stage the primary takes a checkpoint, the replica replays the seed, and "
      "the same mix runs for a sixth of the stage's length, not counted: the single process's chat stage comes "
      "after its staged runs, with its connections and cache warm.\n")
    single, clw = median_wrk(bench, "cached"), median_wrk(bench, "cluster")
    cs, cc = cpu_per_request(bench, "cached"), cpu_per_request(bench, "cluster")
    us = lambda d, g: fmt(sum(d[g]) if g in d else None, ".1f")
    w("| wrk hot page, cache on | req/s | req/s per instance | p95 ms | chatd µs/answer | HAProxy µs/answer | "
      "Redis µs/answer |\n|---|---|---|---|---|---|---|")
    w(f"| one chatd | {fmt(single and single['rps'], ',.0f')} | {fmt(single and single['rps'], ',.0f')} | "
      f"{fmt(single and single['p95_ms'], '.2f')} | {us(cs, 'chatd')} | – | {us(cs, 'redis')} |")
    w(f"| {n} chatd behind HAProxy | {fmt(clw and clw['rps'], ',.0f')} | "
      f"{fmt(clw['rps'] / n if clw else None, ',.0f')} | {fmt(clw and clw['p95_ms'], '.2f')} | {us(cc, 'chatd')} | "
      f"{us(cc, 'haproxy')} | {us(cc, 'redis')} |")
    w("")
    p = perf / "cluster-chat.json"
    if p.exists():
        cst = json.loads(p.read_text())["stages"][0]
        w("| chat API mix stage | connections | achieved/s | p50 | p95 | p99 | errors | hit ratio |\n"
          "|---|---|---|---|---|---|---|---|")
        for name, st in (("one chatd", chat["stages"][0] if chat else None), (f"{n} chatd behind HAProxy", cst)):
            if st:
                lat = st["latency_ms"].get("overall") or {}
                w(f"| {name} | {st['connections']:,} | {fmt(st.get('achieved_rate'), ',.0f')} | "
                  f"{fmt(lat.get('p50'), '.2f')} | {fmt(lat.get('p95'), '.2f')} | {fmt(lat.get('p99'), '.2f')} | "
                  f"{st['errors']} | {pct(st.get('cache_hit_ratio'))} |")
        w("")
    reads = cl.get("reads")
    if reads and reads.get("primary", 0) + reads.get("replica", 0):
        total = reads["primary"] + reads["replica"]
        w(f"During the chat mix stage, {total:,} cache misses could use the replica "
          "(`chatd_db_reads_total`, summed over the instances): "
          f"{reads['replica']:,} went to it and {reads['primary']:,} to the primary "
          f"(replica read share {pct(reads['replica'] / total)}). A miss goes to the primary when its version "
          "records no write position (a conversation or user not written through chatd since its version key "
          "was made, as most of the seed's, loaded by COPY: docs/architecture.md, \"Read replicas\"), when the "
          "replica has not yet replayed that position, or when it is left out.\n")


def unit_costs_section(w, bench):
    """The unit costs bench/scaling.py stored in bench.json (the model past this machine)."""
    u = bench.get("unit_costs")
    if not u:
        return
    w("## Unit costs\n")
    w("The cost of one unit of work, as bench/scaling.py reads it from this run's files and stores it in "
      "bench.json (`unit_costs`); docs/scaling.md scales them to a load past this machine. CPU in µs of user + "
      "system time from `/proc/<pid>/stat`. The sends are a closed loop of wrk POSTs "
      f"({bench.get('send_conversations', 0):,} conversations, each sent to by one of its members, a fresh "
      "`client_msg_id` each).\n")
    w("| unit cost | value | from |\n|---|---|---|")
    for name, x in u.items():
        spec = ",.0f" if name.endswith(("bytes", "per_key", "rps_closed_loop")) else ",.2f"
        w(f"| `{name}` | {fmt(x['value'], spec)} | {x['source']} |")
    w("")


def ratio(a, b):
    a, b = num(a), num(b)
    return a / b if a is not None and b else None


def reduction(cached, bypass):
    """1 - cached/bypass: how much lower the cached figure is."""
    c, b = num(cached), num(bypass)
    return 1 - c / b if c is not None and b else None


def lower(red):
    """'12.3 % lower' or '4.5 % higher' for a reduction 1 - new/old."""
    red = num(red)
    if red is None:
        return "–"
    return f"{100 * red:.1f} % lower" if red >= 0 else f"{-100 * red:.1f} % higher"


def verdict(ok):
    return "–" if ok is None else ("**met**" if ok else "**not met**")


# --- the realtime stage ------------------------------------------------------------

RT_FRAMES_GOAL = 100_000   # delivered frames/s
RT_P99_GOAL_MS = 100.0     # send -> frame received
RT_RSS_GOAL_B = 4096       # chatd RSS per idle WebSocket


def rt_targets(rt):
    """The issue's realtime goals as target rows (name, measured on, value, verdict)."""
    if rt is None:
        on = "realtime stage not run"
        return [(n, on, "–", None) for n in (
            f"realtime: ≥ {RT_FRAMES_GOAL:,} delivered frames/s", f"realtime: p99 delivery < {RT_P99_GOAL_MS:.0f} ms",
            "realtime: < 4 KB chatd RSS per idle WebSocket", "realtime: 0 frames lost",
            "realtime: 0 frames duplicated", "realtime: every frame in rev order (0 gaps, 0 out of order)",
            "mass reconnect: every client resumed")]
    st = rt["stages"].get("steady") or {}
    rc = rt["stages"].get("reconnect")
    stages = [x for x in (st, rc) if x]
    n = rt["clients"]
    on = f"{n:,} clients, {st.get('seconds') or 0:.0f} s steady"
    fps, p99 = num(st.get("delivered_frames_per_s")), num((st.get("latency_ms") or {}).get("p99"))
    offered = num(rt["shape"].get("offered_frames_per_s"))
    per = num(rt["rss"].get("per_socket_bytes"))
    lost = sum(x["lost"] for x in stages)
    dups = sum(x["duplicates"] + x["stale"] for x in stages)
    gaps = sum(x["gaps"] for x in stages)
    ooo = sum(x["out_of_order"] for x in stages)
    drained = all(x["drained"] for x in stages)
    where = "steady + reconnect" if rc else "steady (no reconnect)"
    m = rt.get("mass_reconnect")
    rows = [
        (f"realtime: ≥ {RT_FRAMES_GOAL:,} delivered frames/s", on + f", {fmt(offered, ',.0f')} offered",
         fmt(fps, ",.0f"), None if fps is None else fps >= RT_FRAMES_GOAL),
        (f"realtime: p99 delivery < {RT_P99_GOAL_MS:.0f} ms", on + ", send due time → frame", fmt(p99, ".1f", " ms"),
         None if p99 is None else p99 < RT_P99_GOAL_MS),
        ("realtime: < 4 KB chatd RSS per idle WebSocket", f"VmRSS delta / {rt['rss'].get('sockets') or 0:,} sockets",
         fmt(per, ",.0f", " B"), None if per is None else per < RT_RSS_GOAL_B),
        ("realtime: 0 frames lost", where + ("" if drained else ", drain timed out"), f"{lost:,}",
         lost == 0 and drained),
        ("realtime: 0 frames duplicated", where, f"{dups:,}", dups == 0),
        ("realtime: every frame in rev order (0 gaps, 0 out of order)", where, f"{gaps:,} gaps, {ooo:,} out of order",
         gaps == 0 and ooo == 0),
    ]
    if m:
        allr = m.get("all_resumed_seconds")
        rows.append(("mass reconnect: every client resumed", f"{m['dropped']:,} dropped at once",
                     f"{m['resumed']:,} of {n:,}" + (f" in {allr:.2f} s" if allr is not None else ""),
                     m["resumed"] == n and allr is not None))
        rows.append(("mass reconnect: DB queries/s (reported)", "drop → all resumed, chatd_db_queries_total",
                     f"{fmt(m.get('db_queries_per_s'), ',.0f')} (steady {fmt(st.get('db_queries_per_s'), ',.0f')})",
                     None))
    else:
        rows.append(("mass reconnect: every client resumed", "not run", "–", None))
    return rows


def realtime_section(w, rt, rel):
    w("## Realtime\n")
    if rt is None:
        w("The realtime stage did not run (`--no-realtime`, or an older run).\n")
        return
    sh, su, rss = rt["shape"], rt["setup"], rt["rss"]
    w(f"`chatload realtime`: {rt['clients']:,} WebSocket clients, one per user of the seed, in {sh['conversations']:,} "
      f"conversations ({sh['by_size']['largest']} of {sh['size_max']:,} members, {sh['by_size']['101-999']} of "
      f"101–999, {sh['by_size']['11-100']} of 11–100, {sh['by_size']['2-10']:,} of 2–10; {sh['memberships']:,} "
      f"memberships) created over REST in {su['conversations_seconds']:.1f} s. {rt['senders']} keep-alive "
      f"connections POST {rt['rate']:,.1f} messages/s (a conversation drawn in proportion to its size, "
      f"{sh['mean_fanout']:.1f} frames per send: {sh['offered_frames_per_s']:,.0f} frames/s offered), each body "
      "carrying its due time and a unique id. Every client checks every event frame: the conversation's `rev` "
      "must be the previous one + 1, never repeated, and every message must reach every member's socket "
      "(counted after a drain). Latency runs from a message's due time to its frame's arrival; a send that "
      "finds chatload's queue full (10 s of sends waiting) is dropped, not made. The sockets "
      f"opened and got in sync (`resume` → `resumed`) in {su['connect_seconds']:.1f} s.\n")
    w("| stage | seconds | sends ok | sends failed / dropped | frames expected | received | lost | delivered frames/s | "
      "p50 ms | p95 ms | p99 ms | max ms | gaps | out of order | duplicates | DB q/s | chatd CPU cores |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, stg in rt["stages"].items():
        lat = stg["latency_ms"]
        w(f"| {name} | {fmt(stg['seconds'], '.1f')} | {stg['sends_ok']:,} | {stg['sends_failed']:,} / {stg['sends_dropped']:,} | "
          f"{stg['frames_expected']:,} | {stg['frames_received']:,} | {stg['lost']:,}{'' if stg['drained'] else ' (drain timed out)'} | "
          f"{fmt(stg['delivered_frames_per_s'], ',.0f')} | {lat['p50']:.1f} | {lat['p95']:.1f} | {lat['p99']:.1f} | "
          f"{lat['max']:.1f} | {stg['gaps']:,} | {stg['out_of_order']:,} | {stg['duplicates'] + stg['stale']:,} | "
          f"{fmt(stg.get('db_queries_per_s'), ',.0f')} | {fmt(stg.get('chatd_cpu_cores'), '.2f')} |")
    w("")
    per = num(rss.get("per_socket_bytes"))
    w(f"chatd RSS (VmRSS of its process): {fmt(rss.get('before_kb'), ',.0f')} kB before the sockets, "
      f"{fmt(rss.get('after_kb'), ',.0f')} kB with {rss.get('sockets') or 0:,} idle sockets in sync: "
      f"{fmt(per, ',.0f')} bytes per socket.\n")
    m = rt.get("mass_reconnect")
    if m:
        allr = m.get("all_resumed_seconds")
        rl = m["resume_ms"]
        w(f"**Mass reconnect.** {m['dropped']:,} sockets dropped at once while the senders went on "
          f"({fmt(rt.get('rc_rate'), ',.1f')} messages/s); each reconnected "
          f"(at most {rt.get('max_connecting', 512)} handshakes at a time) and sent `resume` with the last rev it held per conversation. "
          f"{m['resumed']:,} of {rt['clients']:,} got `resumed`"
          + (f", the last {allr:.2f} s after the drop" if allr is not None else f" (gave up after {m['seconds']:.1f} s)")
          + f"; per client p50 {rl['p50']:,.0f} ms, p99 {rl['p99']:,.0f} ms. `reset` frames: {m['resets']:,}; "
          f"`resumed` positions differing from what the client held: {m['resumed_mismatch']:,}; resumes refused: "
          f"{su['resume_unsupported']:,}. DB queries/s from just before the drop until all resumed: "
          f"{fmt(m.get('db_queries_per_s'), ',.0f')} (highest second {fmt(m.get('db_queries_per_s_max'), ',.0f')}; "
          f"{fmt(rt['stages']['steady'].get('db_queries_per_s'), ',.0f')} in the steady stage).\n")
    w(f"chatload's own report: [{rel}/realtime.md]({rel}/realtime.md); raw results: `{rel}/realtime.json`.\n")


# --- plots ---------------------------------------------------------------------

def per_scrape(res):
    """(t, hit ratio, queue-wait p95 ms, DB queries/s) from consecutive /metrics scrapes."""
    out = []
    ms = res.get("metrics") or []
    for a, b in zip(ms, ms[1:]):
        dt = b["t"] - a["t"]
        if dt <= 0:
            continue
        h, m = b["cache_hits"] - a["cache_hits"], b["cache_misses"] - a["cache_misses"]
        out.append((b["t"], h / (h + m) if h + m > 0 else None, num(b.get("queue_wait_p95_ms")),
                    (b["db_queries"] - a["db_queries"]) / dt))
    return out


def write_dat(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(" ".join("NaN" if v is None else f"{v:.6g}" for v in r) + "\n")


def stage_marks(res):
    """Start time of each stage (from the timeline) for vertical lines."""
    marks, seen = [], set()
    for t in res.get("timeline") or []:
        if t["stage"] not in seen:
            seen.add(t["stage"])
            marks.append((t["t"], t["stage"]))
    return marks


def plots(perf, runs, bench):
    """Writes the .dat files, one gnuplot script and the SVGs; returns [(file, title)] or a reason."""
    for label, res in runs.items():
        tl = res.get("timeline") or []
        write_dat(perf / f"{label}-timeline.dat",
                  [(t["t"], t["p50_ms"], t["p95_ms"], t["p99_ms"], t["completed"], t["errors"], t["queued"],
                    t["open_connections"]) for t in tl])
        write_dat(perf / f"{label}-metrics.dat", per_scrape(res))
    stages = bench["stages"].split(",")
    marks = []
    for t, s in stage_marks(runs.get("bypass") or {}):
        c, r, _ = stages[s - 1].split(":")
        marks.append(f'set arrow from {t},graph 0 to {t},graph 1 nohead dt 3 lc rgb "#999999"\n'
                     f'set label "{int(c) // 1000 if int(c) >= 1000 else c}{"k" if int(c) >= 1000 else ""}'
                     f', {r}/s" at {t},graph 0.97 offset 0.3,0 font ",9" tc rgb "#666666" noenhanced')
    common = ("set terminal svg size 1000,420 dynamic font 'sans,11' background '#ffffff'\n"
              "set grid\nset key outside right top noenhanced\nset xlabel 'seconds since the start of the run'\n"
              + "\n".join(marks) + "\n")
    figs = [
        ("latency.svg", "Latency percentiles per second (ms, log scale)",
         "set logscale y\nset ylabel 'ms'\n"
         "plot 'bypass-timeline.dat' u 1:2 w l lw 1 lc rgb '#f4a582' t 'bypass p50', "
         "'' u 1:3 w l lw 2 lc rgb '#d6604d' t 'bypass p95', '' u 1:4 w l lw 1 lc rgb '#b2182b' t 'bypass p99', "
         "'cached-timeline.dat' u 1:2 w l lw 1 lc rgb '#92c5de' t 'cache p50', "
         "'' u 1:3 w l lw 2 lc rgb '#4393c3' t 'cache p95', '' u 1:4 w l lw 1 lc rgb '#2166ac' t 'cache p99'"),
        ("throughput.svg", "Answers per second (2xx and errors)",
         "set ylabel 'answers/s'\n"
         "plot 'bypass-timeline.dat' u 1:($5-$6) w l lw 2 lc rgb '#d6604d' t 'bypass 2xx', "
         "'' u 1:6 w l lc rgb '#b2182b' dt 2 t 'bypass errors', "
         "'cached-timeline.dat' u 1:($5-$6) w l lw 2 lc rgb '#4393c3' t 'cache 2xx', "
         "'' u 1:6 w l lc rgb '#2166ac' dt 2 t 'cache errors'"),
        ("hit_ratio.svg", "Cache hit ratio per second (cache on)",
         "set ylabel 'hit ratio'\nset yrange [0:1.05]\n"
         "plot 'cached-metrics.dat' u 1:2 w l lw 2 lc rgb '#4393c3' t 'cache on', "
         "0.6 w l dt 2 lc rgb '#999999' t 'target 0.6', 0.9 w l dt 3 lc rgb '#666666' t 'stretch 0.9'"),
        ("queue_wait.svg", "Pool queue wait p95 per second (ms, from chatd_db_tx_queue_wait_seconds)",
         "set ylabel 'ms'\n"
         "plot 'bypass-metrics.dat' u 1:3 w l lw 2 lc rgb '#d6604d' t 'bypass', "
         "'cached-metrics.dat' u 1:3 w l lw 2 lc rgb '#4393c3' t 'cache on'"),
        ("db_qps.svg", "Database queries per second (chatd_db_queries_total)",
         "set ylabel 'queries/s'\n"
         "plot 'bypass-metrics.dat' u 1:4 w l lw 2 lc rgb '#d6604d' t 'bypass', "
         "'cached-metrics.dat' u 1:4 w l lw 2 lc rgb '#4393c3' t 'cache on'"),
    ]
    script = []
    for name, title, body in figs:
        script.append(f"reset\n{common}set output '{name}'\nset title '{title}'\n{body}\nunset output\n")
    (perf / "plots.gp").write_text("\n".join(script))
    if not shutil.which("gnuplot"):
        return None, "gnuplot is not installed (scripts/deps.sh installs gnuplot-nox); plots/plots.gp is ready"
    r = subprocess.run(["gnuplot", "plots.gp"], cwd=perf, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        return None, f"gnuplot failed: {r.stderr.strip()[-500:]}"
    return [(name, title) for name, title, _ in figs], None


# --- the report ----------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--perf", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    perf, out = Path(a.perf), Path(a.out)
    bench = json.loads((perf / "bench.json").read_text())
    runs = {k: json.loads((perf / f"{k}.json").read_text()) for k in ("bypass", "cached")}
    rt_path = perf / "realtime.json"
    rt = json.loads(rt_path.read_text()) if rt_path.exists() else None
    chat_path, chatb_path = perf / "chat.json", perf / "chat-bypass.json"
    chat = json.loads(chat_path.read_text()) if chat_path.exists() else None
    chatb = json.loads(chatb_path.read_text()) if chatb_path.exists() else None
    chat_st = chat["stages"][0] if chat else None
    chatb_st = chatb["stages"][0] if chatb else None
    chat_hit = num(chat_st.get("cache_hit_ratio")) if chat_st else None
    inbox_p95 = chat_st["latency_ms"].get("inbox", {}).get("p95") if chat_st else None
    inbox_p95_b = chatb_st["latency_ms"].get("inbox", {}).get("p95") if chatb_st else None
    figs, plot_note = plots(perf, runs, bench)
    rel = os.path.relpath(perf, out.parent)

    B, C = runs["bypass"]["stages"], runs["cached"]["stages"]
    i10k = 2  # the third base stage: the most connections at the base rate
    ib = 3    # the burst
    refs = bench["refs"]
    nginx, wb, wc = median_wrk(bench, "nginx"), median_wrk(bench, "bypass"), median_wrk(bench, "cached")
    wib, wic = median_wrk(bench, "bypass-inbox"), median_wrk(bench, "cached-inbox")
    pg_tps, redis_rps = refs.get("pgbench_tps"), refs.get("redis_get_rps")
    c3 = bench["conns"][2]

    qw = [num(B[i10k].get("queue_wait_p95_ms")), num(C[i10k].get("queue_wait_p95_ms"))]
    qw_worst = max((v for v in qw if v is not None), default=None)
    hit = num(C[i10k].get("cache_hit_ratio"))
    p95b, p95c = B[i10k]["latency_ms"]["overall"]["p95"], C[i10k]["latency_ms"]["overall"]["p95"]
    p95_red = reduction(p95c, p95b)
    # The cache is to steady the database: how much its load swings over the
    # whole run while client load ramps, bursts and falls back.
    qb, qc = run_db_qps(runs["bypass"]), run_db_qps(runs["cached"])
    varb = statistics.pvariance(qb) if len(qb) > 1 else None
    varc = statistics.pvariance(qc) if len(qc) > 1 else None
    var_red = reduction(varc, varb)
    cv_b = statistics.pstdev(qb) / statistics.mean(qb) if len(qb) > 1 and statistics.mean(qb) else None
    cv_c = statistics.pstdev(qc) / statistics.mean(qc) if len(qc) > 1 and statistics.mean(qc) else None
    svb, svc = stage_var(B[i10k]), stage_var(C[i10k])
    r_nginx = ratio(wc and wc["rps"], nginx and nginx["rps"])
    r_pg = ratio(wb and wb["rps"], pg_tps)
    conns_label = f"{c3:,}"
    targets = [
        (f"queue wait p95 at {conns_label} connections < 500 ms", "worse of bypass / cache on",
         f"{fmt(qw[0], '.1f', ' ms')} / {fmt(qw[1], '.1f', ' ms')}", None if qw_worst is None else qw_worst < 500),
        ("cache hit ratio > 60 %", f"cache on, {conns_label} connections", pct(hit),
         None if hit is None else hit > 0.6),
        ("p95 latency at least 30 % lower with the cache", f"{conns_label} connections, p95 bypass → cache on",
         f"{fmt(p95b, '.2f')} → {fmt(p95c, '.2f')} ms ({lower(p95_red)})",
         None if p95_red is None else p95_red >= 0.3),
        ("DB queries/s variance at least 30 % lower", "whole staged run (ramp, burst, back), variance of the "
         "per-second rate",
         f"{fmt(varb, ',.0f')} → {fmt(varc, ',.0f')} (q/s)² ({lower(var_red)}; CV {fmt(cv_b, '.3f')} → "
         f"{fmt(cv_c, '.3f')}; steady {conns_label}-connection stage alone: {fmt(svb, ',.0f')} → "
         f"{fmt(svc, ',.0f')})", None if var_red is None else var_red >= 0.3),
        ("stretch: cached reads ≥ 0.8× the nginx ceiling", "wrk hot page, cache on / nginx static page",
         f"{fmt(wc and wc['rps'], '.0f')} / {fmt(nginx and nginx['rps'], '.0f')} req/s = {fmt(r_nginx, '.2f')}×",
         None if r_nginx is None else r_nginx >= 0.8),
        ("stretch: uncached reads ≥ 0.9× the pgbench ceiling", "wrk hot page, bypass / pgbench tps",
         f"{fmt(wb and wb['rps'], '.0f')} / {fmt(pg_tps, '.0f')} = {fmt(r_pg, '.2f')}×",
         None if r_pg is None else r_pg >= 0.9),
        (f"stretch: queue wait p95 at {conns_label} connections < 50 ms", "worse of bypass / cache on",
         fmt(qw_worst, ".1f", " ms"), None if qw_worst is None else qw_worst < 50),
        ("stretch: cache hit ratio > 90 %", f"cache on, {conns_label} connections", pct(hit),
         None if hit is None else hit > 0.9),
        ("cache hit ratio > 90 %, chat API mix", f"cache on, {conns_label} connections, chat mix",
         pct(chat_hit), None if chat_hit is None else chat_hit > 0.9),
        ("inbox p95 with the cache (reported)", f"cache on, {conns_label} connections, chat mix",
         fmt(inbox_p95, '.2f', ' ms'), None),
        ("inbox p95 without the cache (reported)", f"`CACHE_BYPASS=true`, {conns_label} connections, chat mix",
         fmt(inbox_p95_b, '.2f', ' ms'), None),
        ("zero stale reads", "not checked by the load run: the integration suite's freshness loops",
         "—", None),
    ] + rt_targets(rt)

    L = []
    w = L.append
    w("# chatd performance report\n")
    w("*Written by `bench/report.py` from the measurements of one `make bench` run; "
      "no figure here is typed by hand.*\n")
    if bench["quick"]:
        w("> **Quick run (`--quick`).** Every stage is shortened to a smoke test "
          f"({bench['stage_seconds']} s stages, {bench['burst_seconds']} s burst): the figures show that the "
          "pipeline works, not what chatd sustains. The validation is the full `make bench`.\n")
    elif not bench.get("own_stack", True):
        w("> **Run against an existing stack** (`--stack-env`), not the bench's own.\n")
    w(f"Generated {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}; the run took "
      f"{bench['elapsed_s'] / 60:.1f} min.\n")

    w("## Machine\n")
    w("| | |\n|---|---|")
    for k, v in machine():
        w(f"| {k} | {v} |")
    w("\nchatload, wrk, nginx, pgbench, redis-benchmark and the servers all share these cores, so every figure "
      "includes the load generator's own cost. Nothing else is controlled: on a shared machine other work "
      "shows up as noise.\n")

    w("## How it was run\n")
    w(f"`make bench{' ARGS=--quick' if bench['quick'] else ''}` (`bench/run.sh`): its own PostgreSQL 15, "
      f"PgBouncer (transaction pooling) and Redis under `var/bench-stack`, chatd with its defaults "
      f"(workers = cores, pool 20) except `CHATD_HEADER_TIMEOUT_MS=60000` (chatload opens each stage's "
      f"connections up front, and a connection that has sent nothing yet would otherwise be closed after "
      f"the default 10 s), talking to {'PgBouncer' if bench['chatd_db'] == 'pgbouncer' else 'PostgreSQL'}. "
      "The data set, seeded by `chatload seed --copy`: "
      f"{bench['seed']['users']:,} users, {bench['seed']['conversations']:,} conversations, "
      f"{bench['seed']['messages']:,} messages (Zipf 1.1 over conversations) in {bench['seed']['seconds']:.1f} s. "
      f"The hot page is the newest 50 messages of the most popular conversation: {bench['page_bytes']:,} bytes.\n")
    w(f"Staged runs (`chatload run`, open model, latency from each request's due time, mix history 90 / count 4 / "
      f"metadata 2 / profile 2 / send 2, Zipf 1.1, 20 % of history reads at an older offset): stages "
      f"`{bench['stages']}` (connections:rate:seconds) — three base stages at {bench['rate']:,} req/s, a burst at "
      f"{bench['burst_rate']:,} req/s, then back. Once with `CACHE_BYPASS=true`, once with the cache on.\n")
    w("Commands, in order (passwords masked):\n")
    w("```")
    w((perf / "commands.txt").read_text().rstrip())
    w("```\n")

    w("## Targets\n")
    w(f"Measured at the {conns_label}-connection stage at the base rate ({bench['rate']:,} req/s) unless "
      "said otherwise.\n")
    w("| target | measured on | measured | verdict |\n|---|---|---|---|")
    for name, on, val, ok in targets:
        w(f"| {name} | {on} | {val} | {verdict(ok)} |")
    w("")
    short = [name for name, _, _, ok in targets if ok is False]
    unknown = [name for name, _, val, ok in targets if ok is None and val in ("–", "—", "n/a")]
    if short:
        w("**Short of target:** " + "; ".join(short) + ".\n")
    if unknown:
        w("**Not measured in this run:** " + "; ".join(unknown) + ".\n")
    if not short and not unknown:
        w("Every target was met in this run.\n")

    if chat_st:
        w("## The chat API mix\n")
        w(f"`{chat.get('mix', '')}` at {chat_st['connections']:,} connections, {chat_st['target_rate']:,.0f} req/s, "
          f"{chat_st['seconds']:.0f} s: cache on, hit ratio {pct(chat_hit)}, {chat_st['errors']} errors"
          + (f"; cache bypassed, {chatb_st['errors']} errors" if chatb_st else "")
          + ". Latency in ms per operation, from the due time.\n")
        kinds = chat_st.get("cache_hit_ratio_by_kind") or {}
        if kinds:
            w("Hit ratio by kind (cache on): " + ", ".join(f"{k} {pct(v)}" for k, v in kinds.items()) + ".\n")
        lb = chatb_st["latency_ms"] if chatb_st else {}
        w("| operation | requests | p50 | p95 | p99 | p95 bypassed | p99 bypassed |\n|---|---|---|---|---|---|---|")
        for op, h in chat_st["latency_ms"].items():
            if h.get("count"):
                hb = lb.get(op) or {}
                w(f"| {op} | {h['count']:,} | {h['p50']:.2f} | {h['p95']:.2f} | {h['p99']:.2f} | "
                  f"{fmt(hb.get('p95'), '.2f')} | {fmt(hb.get('p99'), '.2f')} |")
        w("")

    realtime_section(w, rt, rel)
    cluster_section(w, bench, chat, perf)

    w("## References and ratios\n")
    w("Closed-loop throughput on the same machine, same page size: the ceilings chatd is compared with.\n")
    w("| what | how | throughput | chatd ratio |\n|---|---|---|---|")
    wd = f"wrk -t2 -c{bench['wrk']['connections']}, median of {bench['wrk']['runs']} × {bench['wrk']['seconds']} s"
    w(f"| nginx, static page ({bench['page_bytes']:,} B) | {wd.replace(str(bench['wrk']['seconds']) + ' s', str(bench['ref_seconds']) + ' s')} "
      f"| {fmt(nginx and nginx['rps'], ',.0f')} req/s | cached / nginx = {fmt(r_nginx, '.2f')}× |")
    w(f"| pgbench, chatd's history query, hot conversation | 20 clients, -M extended, {bench['ref_seconds']} s, "
      f"through PgBouncer | {fmt(pg_tps, ',.0f')} tps | bypass / pgbench = {fmt(r_pg, '.2f')}× |")
    w(f"| redis-benchmark GET, {bench['page_bytes']:,} B value | 100 clients, {bench['redis_requests']:,} "
      f"requests | {fmt(redis_rps, ',.0f')} req/s | cached / redis = {fmt(ratio(wc and wc['rps'], redis_rps), '.2f')}× |")
    w(f"| chatd, hot page, cache on | {wd} | {fmt(wc and wc['rps'], ',.0f')} req/s "
      f"(p50 {fmt(wc and wc['p50_ms'], '.2f')} ms, p95 {fmt(wc and wc['p95_ms'], '.2f')} ms) | |")
    w(f"| chatd, hot page, `CACHE_BYPASS=true` | {wd} | {fmt(wb and wb['rps'], ',.0f')} req/s "
      f"(p50 {fmt(wb and wb['p50_ms'], '.2f')} ms, p95 {fmt(wb and wb['p95_ms'], '.2f')} ms) | |")
    if wic or wib:
        w(f"| chatd, the hot page's member's inbox (first page), cache on | {wd} | {fmt(wic and wic['rps'], ',.0f')} req/s "
          f"(p50 {fmt(wic and wic['p50_ms'], '.2f')} ms, p95 {fmt(wic and wic['p95_ms'], '.2f')} ms) | "
          f"cached inbox / cached history = {fmt(ratio(wic and wic['rps'], wc and wc['rps']), '.2f')}× |")
        w(f"| chatd, the same inbox, `CACHE_BYPASS=true` | {wd} | {fmt(wib and wib['rps'], ',.0f')} req/s "
          f"(p50 {fmt(wib and wib['p50_ms'], '.2f')} ms, p95 {fmt(wib and wib['p95_ms'], '.2f')} ms) | "
          f"cache on / bypass = {fmt(ratio(wic and wic['rps'], wib and wib['rps']), '.2f')}× |")
    w(f"\nCache on / bypass on the hot page: throughput {fmt(ratio(wc and wc['rps'], wb and wb['rps']), '.2f')}×, "
      f"p95 {lower(reduction(wc and wc['p95_ms'], wb and wb['p95_ms']))}. "
      f"wrk errors (bypass / cache on): {fmt(wb and wb['errors'], '.0f')} / {fmt(wc and wc['errors'], '.0f')}, "
      f"non-2xx {fmt(wb and wb['non2xx'], '.0f')} / {fmt(wc and wc['non2xx'], '.0f')}.\n")

    w("## Staged runs\n")
    w("Latency in ms, from the due time of each request. Hit ratio, queue wait, DB q/s and pool waiting come "
      "from chatd's `/metrics`, scraped every second.\n")
    w("| run | stage | conns | target/s | achieved/s | p50 | p95 | p99 | p99.9 | max | errors | hit ratio | "
      "queue-wait p95 ms | DB q/s mean | DB q/s variance | DB q/s CV | pool waiting max |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    names = ["base", "base", "base", "burst 2×", "back to base"]
    for label, stages in (("bypass", B), ("cache on", C)):
        for i, st in enumerate(stages):
            lat = st["latency_ms"]["overall"]
            errs = st["errors"]
            if errs:
                errs = f"{errs} ({', '.join(f'{k}: {v}' for k, v in st['errors_by_status'].items())})"
            w(f"| {label} | {i + 1} {names[i] if i < len(names) else ''} | {st['connections']:,}"
              f"{' (capped)' if st.get('connections_capped') else ''} | {st['target_rate']:,.0f} | "
              f"{st['achieved_rate']:,.1f} | {lat['p50']:.2f} | {lat['p95']:.2f} | {lat['p99']:.2f} | "
              f"{lat['p999']:.2f} | {lat['max']:.2f} | {errs} | {pct(st.get('cache_hit_ratio'))} | "
              f"{fmt(st.get('queue_wait_p95_ms'), '.2f')} | {fmt(st.get('db_queries_per_s_mean'), '.1f')} | "
              f"{fmt(stage_var(st), '.0f')} | {fmt(st.get('db_queries_per_s_cv'), '.3f')} | "
              f"{fmt(st.get('pool_waiting_max'), '.0f')} |")
    w("")
    for label, stages in (("bypass", B), ("cache on", C)):
        if len(stages) > ib:
            bst, base = stages[ib], stages[i10k]
            w(f"- Burst, {label}: {bst['achieved_rate']:,.0f} of {bst['target_rate']:,.0f} req/s answered with 2xx "
              f"(counted in the stage they were due in, however late), p95 "
              f"{bst['latency_ms']['overall']['p95']:.2f} ms against {base['latency_ms']['overall']['p95']:.2f} ms "
              f"at the base rate, queue-wait p95 {fmt(bst.get('queue_wait_p95_ms'), '.1f', ' ms')}, hit ratio "
              f"{pct(bst.get('cache_hit_ratio'))}, {bst['errors']} errors.")
    for label, res in runs.items():
        w(f"- chatload, {label}: {res['connect_errors']} connect errors, {res['retries']} reads retried after a "
          f"keep-alive close, {res['dropped']} requests dropped{', interrupted' if res.get('interrupted') else ''}.")
    w(f"\nchatload's own reports: [{rel}/bypass.md]({rel}/bypass.md), [{rel}/cached.md]({rel}/cached.md); "
      f"raw results: `{rel}/bypass.json`, `{rel}/cached.json`, `{rel}/bench.json`.\n")

    w("## Plots\n")
    if figs:
        w("Dotted vertical lines mark the start of each stage (connections, rate).\n")
        for name, title in figs:
            w(f"### {title}\n\n![{title}]({rel}/{name})\n")
    else:
        w(f"No plots: {plot_note}.\n")

    where_time_goes(w, bench)
    unit_costs_section(w, bench)

    out.write_text("\n".join(L) + "\n")
    print(f"report: {out}" + (f" ({len(figs)} plots)" if figs else f" (no plots: {plot_note})"), file=sys.stderr)
    for name, _, val, ok in targets:
        print(f"  {verdict(ok).strip('*'):9} {name}: {val}", file=sys.stderr)


if __name__ == "__main__":
    main()
