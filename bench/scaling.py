#!/usr/bin/python3
"""bench/scaling.py — the capacity model past one machine (docs/scaling.md).

Reads the unit costs `make bench` measured (bench.json and the chatload JSON
beside it: CPU per answer, per send, per delivered frame, bytes per idle
WebSocket, WAL per send), stores them in bench.json under `unit_costs`, and
writes what a target load (1,000,000 connections, 50,000 sends/s with the
chat mix's reads by default) needs of each component. No figure is typed in:
every number is a parameter below or computed from the measured files.

    bench/scaling.py --bench docs/perf/bench.json --out docs/scaling.md [--param value ...]
"""
import argparse
import json
import math
import statistics
from pathlib import Path

# name, default, meaning — the assumptions, each a command-line option
PARAMS = [
    ("connections", 1_000_000, "concurrent WebSocket connections, idle-heavy"),
    ("sends_per_s", 50_000, "acknowledged sends per second"),
    ("reads_per_send", None, "REST reads per send; default: the chat mix's reads / sends"),
    ("cpu_target", 0.6, "CPU utilisation every component is sized to (headroom for bursts and failover)"),
    ("mem_target", 0.7, "memory utilisation chatd hosts are sized to"),
    ("chatd_host_cores", 16, "cores of one chatd host"),
    ("chatd_host_mem_gib", 32, "memory of one chatd host, GiB"),
    ("db_host_cores", 64, "cores of one PostgreSQL host (primary or replica)"),
    ("nic_gbps", 10, "network interface of every host, Gbit/s"),
    ("write_cost_ratio", 1.0, "PostgreSQL cost of a read marker, edit or delete of the mix, as a fraction of "
     "a send's (1: each costed as a send, an upper bound: a marker updates one row)"),
    ("page_limit", 50, "messages in the measured history page (bytes per message = page bytes / this)"),
    ("ws_frame_overhead_bytes", 60, "event envelope and WebSocket header around one message in a frame"),
]


def num(v):
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def cpu_us(bench, label):
    """Median CPU µs (user + system) per answer of each process group in the wrk runs of label."""
    runs = (bench.get("wrk") or {}).get("results", {}).get(label) or []
    secs = bench["ref_seconds"] if label in ("nginx", "pgbench") else bench["wrk"]["seconds"]
    groups = sorted({k[4:-7] for r in runs for k in r if k.startswith("cpu_") and k.endswith("_user_s")})
    out = {}
    for g in groups:
        per = [(r[f"cpu_{g}_user_s"] + r[f"cpu_{g}_sys_s"]) * 1e6 / (r["rps"] * secs)
               for r in runs if f"cpu_{g}_user_s" in r and r.get("rps")]
        if per:
            out[g] = statistics.median(per)
    return out


def mix_shares(mix):
    parts = dict((k, float(v)) for k, v in (x.split("=") for x in mix.split(",")))
    total = sum(parts.values())
    return {k: v / total for k, v in parts.items()}


def unit_costs(bench, perf):
    """The per-unit figures the model uses, each with the file and field it came from."""
    u = {}

    def put(name, value, source):
        u[name] = {"value": value, "source": source}

    cached, bypass, send = cpu_us(bench, "cached"), cpu_us(bench, "bypass"), cpu_us(bench, "send")
    for g in ("chatd", "redis", "db"):
        put(f"read_cached_{g}_us", cached.get(g), f"bench.json wrk.results.cached cpu_{g}_* / answers")
        put(f"read_uncached_{g}_us", bypass.get(g), f"bench.json wrk.results.bypass cpu_{g}_* / answers")
    for g in ("chatd", "pgbouncer", "pg", "redis"):
        put(f"send_{g}_us", send.get(g), f"bench.json wrk.results.send cpu_{g}_* / sends")
    runs = (bench.get("wrk") or {}).get("results", {}).get("send") or []
    sends = [r["rps"] * bench["wrk"]["seconds"] for r in runs if r.get("rps")]
    put("send_rps_closed_loop", statistics.median([r["rps"] for r in runs]) if runs else None,
        "bench.json wrk.results.send rps")
    put("send_wal_bytes", statistics.median(r["wal_bytes"] / n for r, n in zip(runs, sends)) if sends else None,
        "bench.json wrk.results.send wal_bytes / sends (pg_current_wal_lsn before and after)")
    put("send_db_queries", statistics.median(r["db_queries"] / n for r, n in zip(runs, sends)) if sends else None,
        "bench.json wrk.results.send db_queries (chatd_db_queries_total delta) / sends")
    q = u["send_db_queries"]["value"]
    pgb = u["send_pgbouncer_us"]["value"]
    put("pgbouncer_query_us", pgb / q if pgb is not None and q else None,
        "send_pgbouncer_us / send_db_queries")

    rt = json.loads((perf / "realtime.json").read_text()) if (perf / "realtime.json").exists() else None
    if rt:
        st = rt["stages"].get("steady") or {}
        fps, cores = num(st.get("delivered_frames_per_s")), num(st.get("chatd_cpu_cores"))
        put("frame_chatd_us", cores / fps * 1e6 if fps and cores is not None else None,
            "realtime.json stages.steady chatd_cpu_cores / delivered_frames_per_s")
        put("frames_per_send", num(rt["shape"].get("mean_fanout")), "realtime.json shape.mean_fanout")
        put("socket_bytes", num(rt["rss"].get("per_socket_bytes")), "realtime.json rss.per_socket_bytes")
        put("chatd_base_rss_bytes", rt["rss"]["before_kb"] * 1024, "realtime.json rss.before_kb × 1024")
        cpu = (bench.get("realtime") or {}).get("cpu")
        published = sum(x.get("sends_ok", 0) for x in rt["stages"].values())
        frames = sum(x.get("frames_received", 0) for x in rt["stages"].values())
        put("publish_redis_us", cpu["redis_s"] * 1e6 / published if cpu and published else None,
            "bench.json realtime.cpu.redis_s / realtime.json Σ stages.*.sends_ok (whole realtime run)")
        put("frame_chatd_us_whole_run", cpu["chatd_s"] * 1e6 / frames if cpu and frames else None,
            "bench.json realtime.cpu.chatd_s / realtime.json Σ stages.*.frames_received")
    chat = json.loads((perf / "chat.json").read_text()) if (perf / "chat.json").exists() else None
    if chat:
        st = chat["stages"][0]
        shares = mix_shares(chat["mix"])
        s = shares.get("send", 0)
        put("mix_reads_per_send", (1 - s) / s if s else None, "chat.json mix: (1 − send share) / send share")
        put("mix_hit_ratio", num(st.get("cache_hit_ratio")), "chat.json stages[0].cache_hit_ratio")
        qps, rate = num(st.get("db_queries_per_s_mean")), num(st.get("achieved_rate"))
        put("mix_db_queries_per_request", qps / rate if qps is not None and rate else None,
            "chat.json stages[0] db_queries_per_s_mean / achieved_rate")
        # the database work behind a request of the mix other than a send: each cacheable kind's
        # misses at its uncached cost (the inbox's measured; the others at the history page's, the
        # largest of them); read markers, edits and deletes are writes, counted on the primary
        inbox_db = cpu_us(bench, "bypass-inbox").get("db")
        put("read_uncached_inbox_db_us", inbox_db, "bench.json wrk.results.bypass-inbox cpu_db_* / answers")
        kinds = st.get("cache_hit_ratio_by_kind") or {}
        hist_db = u["read_uncached_db_us"]["value"]
        cost = lambda k: inbox_db if k == "inbox" else hist_db
        cacheable = [k for k in shares if k in kinds]
        ok = s < 1 and cacheable and all(cost(k) is not None for k in cacheable)
        put("mix_miss_ratio_per_read", sum(shares[k] * (1 - kinds[k]) for k in cacheable) / (1 - s) if ok else None,
            "chat.json: Σ over cacheable kinds of share × (1 − stages[0].cache_hit_ratio_by_kind) / non-send share")
        put("mix_miss_db_us_per_read",
            sum(shares[k] * (1 - kinds[k]) * cost(k) for k in cacheable) / (1 - s) if ok else None,
            "chat.json and wrk: Σ over cacheable kinds of share × miss ratio × uncached DB µs (inbox: "
            "read_uncached_inbox_db_us, others: read_uncached_db_us) / non-send share")
        writes = sum(shares.get(k, 0) for k in ("read", "edit", "delete"))
        put("mix_writes_per_send", writes / s if s else None,
            "chat.json mix: (read markers + edits + deletes) / sends")
    cl = cpu_us(bench, "cluster")
    put("lb_haproxy_us", cl.get("haproxy"), "bench.json wrk.results.cluster cpu_haproxy_* / answers (cluster stage)")
    put("cluster_read_cached_chatd_us", cl.get("chatd"),
        "bench.json wrk.results.cluster cpu_chatd_* (3 instances) / answers (cluster stage)")
    put("page_bytes", bench.get("page_bytes"), "bench.json page_bytes (the hot history page)")
    refs = bench.get("refs") or {}
    mem, keys = refs.get("redis_used_memory_bytes"), refs.get("redis_keys")
    put("redis_bytes_per_key", mem / keys if mem and keys else None,
        "bench.json refs.redis_used_memory_bytes / refs.redis_keys (after the cache-on runs)")
    return u


def model(u, p):
    """Every derived figure of the model: {name: value}, None where an input is missing."""
    v = {k: x["value"] for k, x in u.items()}
    m = {}

    def need(*names):
        return all(v.get(n) is not None for n in names)

    S = p["sends_per_s"]
    rps = p["reads_per_send"] if p["reads_per_send"] is not None else v.get("mix_reads_per_send")
    m["reads_per_send"] = rps
    m["reads_per_s"] = R = S * rps if rps is not None else None
    hit = v.get("mix_hit_ratio")
    m["frames_per_s"] = F = S * v["frames_per_send"] if need("frames_per_send") else None
    msg = v["page_bytes"] / p["page_limit"] if need("page_bytes") else None
    m["message_bytes"] = msg

    # chatd
    if R is not None and hit is not None and need("read_cached_chatd_us", "read_uncached_chatd_us"):
        m["chatd_read_us"] = hit * v["read_cached_chatd_us"] + (1 - hit) * v["read_uncached_chatd_us"]
        m["chatd_cores_reads"] = R * m["chatd_read_us"] / 1e6
    m["chatd_cores_sends"] = S * v["send_chatd_us"] / 1e6 if need("send_chatd_us") else None
    m["chatd_cores_frames"] = F * v["frame_chatd_us"] / 1e6 if F is not None and need("frame_chatd_us") else None
    parts = [m.get("chatd_cores_reads"), m["chatd_cores_sends"], m["chatd_cores_frames"]]
    m["chatd_cores"] = sum(parts) if None not in parts else None
    m["chatd_mem_bytes"] = p["connections"] * v["socket_bytes"] if need("socket_bytes") else None
    if m["chatd_cores"] is not None and m["chatd_mem_bytes"] is not None:
        by_cpu = math.ceil(m["chatd_cores"] / (p["chatd_host_cores"] * p["cpu_target"]))
        host_mem = p["chatd_host_mem_gib"] * 2**30 * p["mem_target"]
        by_mem = math.ceil(m["chatd_mem_bytes"] / (host_mem - v["chatd_base_rss_bytes"]))
        m["chatd_hosts_by_cpu"], m["chatd_hosts_by_mem"] = by_cpu, by_mem
        m["chatd_hosts"] = max(by_cpu, by_mem, 1)
        m["conns_per_host"] = p["connections"] / m["chatd_hosts"]

    # HAProxy in front: its CPU per proxied request (the frames through its tunnels are not measured)
    if R is not None and need("lb_haproxy_us"):
        m["haproxy_cores"] = (S + R) * v["lb_haproxy_us"] / 1e6
        m["haproxy_hosts"] = math.ceil(m["haproxy_cores"] / (p["chatd_host_cores"] * p["cpu_target"]))

    # PgBouncer (one process = one core at most)
    if R is not None and need("mix_db_queries_per_request", "pgbouncer_query_us"):
        m["db_queries_per_s"] = (S + R) * v["mix_db_queries_per_request"]
        m["pgbouncer_cores"] = m["db_queries_per_s"] * v["pgbouncer_query_us"] / 1e6
        m["pgbouncer_processes"] = math.ceil(m["pgbouncer_cores"] / p["cpu_target"])

    # PostgreSQL: the primary takes the sends, replicas the cache misses
    # (each read marker, edit and delete of the mix costed as write_cost_ratio of a send)
    if need("send_pg_us", "send_wal_bytes", "send_db_queries"):
        m["writes_per_send"] = W = 1 + (v.get("mix_writes_per_send") or 0) * p["write_cost_ratio"]
        m["primary_cores"] = S * W * v["send_pg_us"] / 1e6
        m["primary_core_share"] = m["primary_cores"] / (p["db_host_cores"] * p["cpu_target"])
        m["primary_statements_per_s"] = S * W * v["send_db_queries"]
        m["wal_bytes_per_s"] = S * W * v["send_wal_bytes"]
        m["primary_sends_ceiling"] = p["db_host_cores"] * p["cpu_target"] * 1e6 / (W * v["send_pg_us"])
    if R is not None and need("mix_miss_ratio_per_read", "mix_miss_db_us_per_read"):
        m["misses_per_s"] = R * v["mix_miss_ratio_per_read"]
        m["replica_cores"] = R * v["mix_miss_db_us_per_read"] / 1e6
        m["replicas"] = math.ceil(m["replica_cores"] / (p["db_host_cores"] * p["cpu_target"]))

    # Redis Cluster: one core per shard (Redis runs commands on one thread)
    if R is not None and hit is not None and need("read_cached_redis_us", "send_redis_us"):
        pub = max(v["send_redis_us"], v.get("publish_redis_us") or 0)
        m["redis_send_us"] = pub
        m["redis_cores"] = (R * v["read_cached_redis_us"] + S * pub) / 1e6
        m["redis_shards_by_cpu"] = math.ceil(m["redis_cores"] / p["cpu_target"])
    nic = p["nic_gbps"] * 1e9 / 8
    if R is not None and hit is not None and msg is not None and m.get("chatd_hosts") and need("frames_per_send"):
        # a send reaches each instance with a member connected once: at most one copy per instance
        copies = min(v["frames_per_send"], m["chatd_hosts"])
        m["pubsub_copies_per_send"] = copies
        m["redis_out_bytes_per_s"] = S * copies * msg + R * hit * v["page_bytes"]
        m["redis_shards_by_net"] = math.ceil(m["redis_out_bytes_per_s"] / (nic * p["cpu_target"]))
        m["redis_shards"] = max(m.get("redis_shards_by_cpu") or 0, m["redis_shards_by_net"], 1)
        # chatd hosts: answers and frames out
        m["chatd_out_bytes_per_s"] = R * v["page_bytes"] + F * (msg + p["ws_frame_overhead_bytes"])
        m["chatd_hosts_by_net"] = math.ceil(m["chatd_out_bytes_per_s"] / (nic * p["cpu_target"]))
    return m


# --- the document ------------------------------------------------------------

def f(x, spec=",.0f", unit=""):
    return "–" if x is None else f"{x:{spec}}{unit}"


def write(bench, u, m, p, src, out):
    L = []
    w = L.append
    v = {k: x["value"] for k, x in u.items()}
    w("# Scaling chatd past one machine\n")
    w("_Written by `bench/scaling.py` from `" + src + "`; regenerate with `bench/scaling.py --bench " + src +
      " --out docs/scaling.md`. Do not edit by hand._\n")
    quick = bench.get("quick")
    w(("**The unit costs below come from a shortened run (`make bench ARGS=--quick`)**: short stages, "
       f"{(bench.get('realtime') or {}).get('clients', 0):,} WebSocket clients, a seed of "
       f"{bench['seed']['messages']:,} messages. Read the figures as orders of magnitude until a full run "
       "replaces them.\n") if quick else
      f"Unit costs from a full `make bench` run ({bench.get('elapsed_s', 0) // 60} min).\n")
    w("What a target load would need of each component, computed from the CPU time and memory chatd, "
      "PgBouncer, PostgreSQL and Redis spent on this machine per unit of work. The model is linear: each "
      "component's demand is the target rate times its measured cost per unit, divided by what one host, "
      "process or shard offers at the CPU target. Costs measured on a 2-core machine that also ran the load "
      "generators; cache effects, lock contention and cross-host latency past one machine are not in them.\n")
    w("## Assumptions\n")
    w("| parameter | value | meaning |\n|---|---|---|")
    for name, _, what in PARAMS:
        val = p[name]
        shown = (f"{val:,}" if isinstance(val, int) else f"{val:g}") if val is not None else \
            f"from the mix: {f(m.get('reads_per_send'), '.1f')}"
        w(f"| `--{name.replace('_', '-')}` | {shown} | {what} |")
    w("")

    w("## Unit costs measured\n")
    w("CPU is user + system time from `/proc/<pid>/stat` of every process of the component before and after "
      "the run, divided by the units of work in it.\n")
    w("| unit cost | value | from |\n|---|---|---|")
    for name, x in u.items():
        spec = ",.0f" if name.endswith(("bytes", "per_key", "rps_closed_loop")) else ",.2f"
        w(f"| `{name}` | {f(x['value'], spec)} | {x['source']} |")
    w("")

    S, R = p["sends_per_s"], m.get("reads_per_s")
    w("## The load\n")
    w(f"{p['connections']:,} connections, {S:,} sends/s and {f(R)} reads/s "
      f"({f(m.get('reads_per_send'), '.1f')} reads per send) at the chat mix's hit ratio of "
      f"{f(100 * v['mix_hit_ratio'] if v.get('mix_hit_ratio') is not None else None, '.0f', ' %')}; "
      f"every send becomes {f(v.get('frames_per_send'), '.1f')} WebSocket frames (the realtime stage's mean "
      f"fan-out): {f(m.get('frames_per_s'))} frames/s of about {f(m.get('message_bytes'))} bytes of message "
      "each. Every read is counted at the hot history page's size in the network figures "
      f"({f(v.get('page_bytes'))} bytes): an upper bound, since counts, profiles and read markers answer far "
      "less.\n")

    w("## What it needs\n")
    w("| component | demand | sized as | count |\n|---|---|---|---|")
    w(f"| chatd, CPU | {f(m.get('chatd_cores'), ',.1f')} cores: reads {f(m.get('chatd_cores_reads'), ',.1f')}, "
      f"sends {f(m.get('chatd_cores_sends'), ',.1f')}, frames {f(m.get('chatd_cores_frames'), ',.1f')} | "
      f"{p['chatd_host_cores']} cores at {p['cpu_target']:.0%} | {f(m.get('chatd_hosts_by_cpu'))} hosts |")
    w(f"| chatd, memory | {f(m['chatd_mem_bytes'] / 2**30 if m.get('chatd_mem_bytes') else None, ',.1f')} GiB "
      f"for the connections | {p['chatd_host_mem_gib']} GiB at {p['mem_target']:.0%} | "
      f"{f(m.get('chatd_hosts_by_mem'))} hosts |")
    w(f"| chatd, network out | {f(m['chatd_out_bytes_per_s'] * 8 / 1e9 if m.get('chatd_out_bytes_per_s') else None, ',.1f')} "
      f"Gbit/s (answers of page size, frames) | {p['nic_gbps']} Gbit/s at {p['cpu_target']:.0%} | "
      f"{f(m.get('chatd_hosts_by_net'))} hosts |")
    w(f"| HAProxy | {f(m.get('haproxy_cores'), ',.1f')} cores for the requests (frames through its WebSocket "
      f"tunnels not measured) | {p['chatd_host_cores']} cores at {p['cpu_target']:.0%} | {f(m.get('haproxy_hosts'))} hosts |")
    w(f"| PgBouncer | {f(m.get('db_queries_per_s'))} statements/s, {f(m.get('pgbouncer_cores'), ',.1f')} cores | "
      f"one process per core at {p['cpu_target']:.0%} | {f(m.get('pgbouncer_processes'))} processes |")
    w(f"| PostgreSQL primary | {f(m.get('primary_statements_per_s'))} statements/s for the sends and the "
      f"mix's other writes ({f(m.get('writes_per_send'), '.2f')} send-equivalents per send), "
      f"{f(m.get('primary_cores'), ',.1f')} cores, WAL "
      f"{f(m['wal_bytes_per_s'] / 1e6 if m.get('wal_bytes_per_s') is not None else None, ',.1f')} MB/s | "
      f"{p['db_host_cores']} cores at {p['cpu_target']:.0%} | "
      f"{f(100 * m['primary_core_share'] if m.get('primary_core_share') is not None else None, '.0f')} % of one host |")
    w(f"| PostgreSQL replicas | {f(m.get('misses_per_s'))} cache misses/s (the inbox's at its own cost), "
      f"{f(m.get('replica_cores'), ',.1f')} cores | "
      f"{p['db_host_cores']} cores at {p['cpu_target']:.0%} | {f(m.get('replicas'))} replicas |")
    w(f"| Redis Cluster, CPU | {f(m.get('redis_cores'), ',.1f')} cores (lookups, sends and their publish) | "
      f"one core per shard at {p['cpu_target']:.0%} | {f(m.get('redis_shards_by_cpu'))} shards |")
    w(f"| Redis Cluster, network out | {f(m['redis_out_bytes_per_s'] * 8 / 1e9 if m.get('redis_out_bytes_per_s') else None, ',.1f')} "
      f"Gbit/s: cached pages and {f(m.get('pubsub_copies_per_send'))} pub/sub copies per send | "
      f"{p['nic_gbps']} Gbit/s at {p['cpu_target']:.0%} | {f(m.get('redis_shards_by_net'))} shards |")
    w("")
    hosts = max([x for x in (m.get("chatd_hosts"), m.get("chatd_hosts_by_net")) if x is not None], default=None)
    w(f"chatd: **{f(hosts)} hosts**, {f(p['connections'] / hosts if hosts else None)} connections each. "
      f"Redis Cluster: **{f(m.get('redis_shards'))} masters** (and as many replicas). PostgreSQL: one primary "
      f"and **{f(m.get('replicas'))} read replicas**, behind **{f(m.get('pgbouncer_processes'))} PgBouncer "
      "processes** (PgBouncer runs on one thread: several processes share a port with `so_reuseport`).\n")

    w("## What saturates first\n")
    w("Each component's ceiling in sends/s at this mix (its reads and frames included), for one unit of it at "
      "the CPU target: the lowest ceiling among the components that do not shard by adding instances is "
      "where the design stops.\n")
    rows = []
    if m.get("chatd_cores") and S:
        rows.append(("one chatd host (CPU)", p["chatd_host_cores"] * p["cpu_target"] * S / m["chatd_cores"], "add hosts"))
    if m.get("pgbouncer_cores"):
        rows.append(("one PgBouncer process", p["cpu_target"] * S / m["pgbouncer_cores"], "add processes"))
    if m.get("primary_sends_ceiling"):
        rows.append(("the PostgreSQL primary (writes)", m["primary_sends_ceiling"],
                     "one writer: partition messages by conversation"))
    if m.get("replica_cores"):
        rows.append(("one PostgreSQL replica", p["db_host_cores"] * p["cpu_target"] * S / m["replica_cores"],
                     "add replicas"))
    if m.get("redis_cores"):
        rows.append(("one Redis shard (CPU)", p["cpu_target"] * S / m["redis_cores"], "add shards"))
    if m.get("redis_out_bytes_per_s"):
        rows.append(("one Redis shard (network)", nic_cap(p) * S / m["redis_out_bytes_per_s"], "add shards"))
    w("| component | sends/s one unit carries | past it |\n|---|---|---|")
    for name, cap, then in sorted(rows, key=lambda r: r[1]):
        w(f"| {name} | {cap:,.0f} | {then} |")
    w("")
    if m.get("primary_sends_ceiling"):
        pr = m["primary_sends_ceiling"]
        w(f"Everything but the primary grows by adding units. The primary carries {pr:,.0f} sends/s on "
          f"{p['db_host_cores']} cores at {p['cpu_target']:.0%} ({f(v.get('send_pg_us'), '.0f')} µs of "
          f"PostgreSQL per send, {f(v.get('send_wal_bytes'))} WAL bytes, and the mix's read markers, edits and "
          f"deletes: {f(m.get('writes_per_send'), '.2f')} send-equivalents per send at `--write-cost-ratio` "
          f"{p['write_cost_ratio']:g}), "
          + ("so the target fits one primary" if pr >= S else
             f"short of the target's {S:,}: the messages must be partitioned before this load")
          + f"; the WAL it writes ({f(m['wal_bytes_per_s'] / 1e6, ',.1f')} MB/s) is also what every replica "
          "replays.\n")
    w("## What to shard next\n")
    w("- **PostgreSQL writes.** A send touches one conversation's rows (its message, its sequence, the "
      "sender's read marker), so messages, members and read state partition by a hash of `conversation_id` "
      "across primaries, each with its replicas and its PgBouncer; chatd would pick the database from the "
      "conversation, as the Redis transport picks the slot from the key's hash tag. Inbox reads span a user's "
      "conversations and would gather from every partition they live on.\n"
      "- **Redis.** Keys of one conversation share a hash tag, so shards are added with `CLUSTER` resharding "
      "and no chatd change. Cached pages dominate Redis' network out: the answer bytes of every hit leave "
      "Redis once and chatd once.\n"
      "- **Fan-out.** A send reaches each chatd instance with a member of its conversation connected once "
      "(sharded pub/sub on the conversation's channel); the frames per send are multiplied inside chatd. "
      "Past some thousands of instances, a tier of relays subscribing for groups of instances would keep "
      "Redis' copies per send bounded.\n")
    out.write_text("\n".join(L))


def nic_cap(p):
    return p["nic_gbps"] * 1e9 / 8 * p["cpu_target"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", required=True, help="bench.json (the chatload JSON files beside it)")
    ap.add_argument("--out", required=True, help="the Markdown to write (docs/scaling.md)")
    ap.add_argument("--no-store", action="store_true", help="do not write unit_costs into bench.json")
    ap.add_argument("--source-name", help="how the document names bench.json (default: the path given)")
    for name, default, what in PARAMS:
        ap.add_argument("--" + name.replace("_", "-"), type=type(default) if default is not None else float,
                        default=default, help=what)
    a = ap.parse_args()
    path = Path(a.bench)
    bench = json.loads(path.read_text())
    u = unit_costs(bench, path.parent)
    if not a.no_store:
        bench["unit_costs"] = u
        path.write_text(json.dumps(bench, indent=1))
    p = {name: getattr(a, name) for name, _, _ in PARAMS}
    m = model(u, p)
    write(bench, u, m, p, a.source_name or a.bench, Path(a.out))


if __name__ == "__main__":
    main()
