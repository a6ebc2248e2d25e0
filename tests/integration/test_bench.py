"""make bench, in small: bench/run.sh against the test stack with a small
seed, few connections and 2-second stages, then the report. It checks that
the pipeline works end to end (seed by COPY, references, chatload with the
cache bypassed and on, wrk, JSON, report, plots); the figures themselves are
the benchmark's to report and are never asserted here."""
import json
import os
import shutil
import subprocess

import pytest

from conftest import REPO, SANITIZER_MARKERS, chatd_bin, chatload_bin, free_port

STAGES = 5  # three base stages, the burst, back to base


@pytest.mark.skipif(not shutil.which("wrk") or not shutil.which("nginx"),
                    reason="wrk and nginx come from scripts/deps.sh")
def test_quick_bench_writes_results_and_report(stack, tmp_path):
    out, var = tmp_path / "docs", tmp_path / "var"
    env = dict(os.environ)
    env.update(CHATD_BIN=str(chatd_bin()), CHATLOAD_BIN=str(chatload_bin()),
               BENCH_DATABASE_URL=stack.chatd_database_url)
    cmd = ["bash", str(REPO / "bench" / "run.sh"), "--no-deps", "--quick",
           "--stack-env", str(stack.stack_dir / "env"), "--out", str(out), "--var", str(var),
           "--listen", f"127.0.0.1:{free_port()}", "--nginx-port", str(free_port()),
           "--users", "200", "--conversations", "100", "--messages", "5000",
           "--rate", "100", "--conns", "100,300,500",
           "--stage-seconds", "2", "--burst-seconds", "2", "--recover-seconds", "1",
           "--ref-seconds", "2", "--redis-requests", "5000",
           "--wrk-runs", "1", "--wrk-seconds", "2", "--wrk-conns", "20",
           "--rt-clients", "100", "--rt-frame-rate", "2000", "--rt-seconds", "2"]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-4000:]

    logs = sorted(var.glob("chatd-*.log"))
    assert [p.name for p in logs] == ["chatd-bypass.log", "chatd-cached.log", "chatd-realtime.log"]
    for p in logs:
        text = p.read_text(errors="replace")
        assert not any(m in text for m in SANITIZER_MARKERS), f"{p}:\n{text[-4000:]}"

    perf = out / "perf"
    bench = json.loads((perf / "bench.json").read_text())
    assert bench["quick"] is True and bench["seed"]["messages"] == 5000
    assert bench["page_bytes"] > 1000
    for k in ("pgbench_tps", "redis_get_rps"):
        assert bench["refs"].get(k, 0) > 0, (k, bench["refs"])
    assert set(bench["wrk"]["results"]) == {"nginx", "bypass", "cached", "bypass-inbox", "cached-inbox",
                                            "pgbench", "send"}
    chatd_groups = ("chatd", "redis", "db", "wrk")
    groups = {"nginx": ("nginx", "wrk"), "bypass": chatd_groups, "cached": chatd_groups,
              "bypass-inbox": chatd_groups, "cached-inbox": chatd_groups, "pgbench": ("db", "pgbench"),
              "send": ("chatd", "pg", "pgbouncer", "redis", "wrk")}
    for label, runs in bench["wrk"]["results"].items():
        assert runs and all(x["rps"] > 0 and x.get("non2xx", 0) == 0 for x in runs), (label, runs)
        # CPU accounting of every process group, user and system
        for x in runs:
            for g in groups[label]:
                assert x[f"cpu_{g}_user_s"] >= 0 and x[f"cpu_{g}_sys_s"] >= 0, (label, g, x)
        # the servers did some work in each run
        assert sum(x[f"cpu_{groups[label][0]}_user_s"] + x[f"cpu_{groups[label][0]}_sys_s"]
                   for x in runs) > 0, (label, runs)

    for label in ("bypass", "cached"):
        res = json.loads((perf / f"{label}.json").read_text())
        assert not res["interrupted"] and res["connect_errors"] == 0
        assert [st["connections"] for st in res["stages"]] == [100, 300, 500, 500, 500]
        assert [st["target_rate"] for st in res["stages"]] == [100, 100, 100, 200, 100]
        for st in res["stages"]:
            assert st["completed"] == st["due"] > 0
            assert st["errors"] == 0, (label, st["errors_by_status"])
            assert st["metrics_samples"] >= 1
        assert res["timeline"] and res["metrics"]
        assert (perf / f"{label}.md").read_text().startswith("# chatload report")
    # the cache is bypassed in one run and used in the other
    bypass = json.loads((perf / "bypass.json").read_text())
    cached = json.loads((perf / "cached.json").read_text())
    assert all(st["cache_hit_ratio"] is None for st in bypass["stages"])
    assert any(st["cache_hit_ratio"] is not None for st in cached["stages"])

    # the chat API mix: one stage at the most connections, every operation answered,
    # once with the cache bypassed and once with it on
    for label in ("chat-bypass", "chat"):
        chat = json.loads((perf / f"{label}.json").read_text())
        assert not chat["interrupted"] and len(chat["stages"]) == 1
        st = chat["stages"][0]
        assert st["connections"] == 500 and st["completed"] == st["due"] > 0
        assert st["errors"] == 0, (label, st["errors_by_status"])
        for op in ("history", "inbox", "send", "read"):
            assert st["latency_ms"][op]["count"] > 0, (label, op)
    assert json.loads((perf / "chat-bypass.json").read_text())["stages"][0]["cache_hit_ratio"] is None

    # the realtime stage: the seed's users on WebSockets, every frame checked
    rt = json.loads((perf / "realtime.json").read_text())
    rt_cpu = bench["realtime"].pop("cpu")
    assert bench["realtime"] == {"ran": True, "clients": 100, "frame_rate": 2000, "seconds": 2}
    assert rt_cpu["chatd_s"] > 0 and rt_cpu["redis_s"] >= 0 and rt_cpu["wall_s"] > 0
    assert rt["clients"] == 100 and rt["seedfile"] and rt["setup"]["signed_up"] is False
    assert not rt["interrupted"] and not rt["aborted"], rt["abort_reason"]
    assert rt["setup"]["in_sync_at_start"] == 100
    steady = rt["stages"]["steady"]
    assert steady["sends_ok"] > 0 and steady["frames_received"] > 0
    assert rt["rss"]["chatd_pid"] and rt["rss"]["per_socket_bytes"] is not None
    assert "reconnect" in rt["stages"] and rt["mass_reconnect"]["dropped"] == 100
    assert (perf / "realtime.md").read_text().startswith("# chatload realtime report")

    report = (out / "performance.md").read_text()
    assert "## Realtime" in report and "| steady |" in report and "**Mass reconnect.**" in report
    for target in ("realtime: ≥ 100,000 delivered frames/s", "realtime: p99 delivery < 100 ms",
                   "realtime: < 4 KB chatd RSS per idle WebSocket", "realtime: 0 frames lost",
                   "realtime: 0 frames duplicated", "realtime: every frame in rev order",
                   "mass reconnect: every client resumed", "mass reconnect: DB queries/s"):
        assert f"| {target}" in report, target
    assert "## The chat API mix" in report and "| inbox |" in report
    assert "inbox" in st["cache_hit_ratio_by_kind"] and "Hit ratio by kind (cache on): " in report
    assert "cache hit ratio > 90 %, chat API mix" in report and "inbox p95 with the cache" in report
    assert "inbox p95 without the cache" in report and "| p95 bypassed |" in report
    assert "cached inbox / cached history = " in report
    for heading in ("# chatd performance report", "Quick run", "## Machine", "## Targets",
                    "## References and ratios", "## Staged runs", "## Plots", "## Where the time goes"):
        assert heading in report, heading
    assert "| chatd, cache on |" in report and "| pgbench, the history query |" in report
    for target in ("queue wait p95 at 500 connections < 500 ms", "cache hit ratio > 60 %",
                   "p95 latency at least 30 % lower", "DB queries/s variance at least 30 % lower",
                   "0.8× the nginx ceiling", "0.9× the pgbench ceiling"):
        assert target in report, target
    assert "***" in (perf / "commands.txt").read_text() or "@" not in (perf / "commands.txt").read_text()
    assert stack.database_url.split("@")[0].split(":")[-1] not in report  # no password

    # the closed-loop sends: every one acknowledged, written to the WAL, through chatd's statements
    send = bench["wrk"]["results"]["send"][0]
    assert send["wal_bytes"] > 0 and send["db_queries"] > 0, send
    # the unit costs scaling.py stored, and the model it wrote
    u = {k: x["value"] for k, x in bench["unit_costs"].items()}
    for k in ("send_chatd_us", "send_pg_us", "send_wal_bytes", "send_db_queries", "read_cached_chatd_us",
              "read_uncached_db_us", "frame_chatd_us", "frames_per_send", "socket_bytes", "mix_reads_per_send",
              "mix_hit_ratio", "publish_redis_us"):
        assert u[k] is not None and u[k] > 0, (k, u[k])
    assert u["send_pgbouncer_us"] is not None and u["send_pgbouncer_us"] >= 0
    assert "## Unit costs" in report and "| `send_wal_bytes` |" in report
    scaling = (out / "scaling.md").read_text()
    for heading in ("# Scaling chatd past one machine", "## Assumptions", "## What it needs",
                    "## What saturates first", "## What to shard next", "shortened run"):
        assert heading in scaling, heading
    assert "| PostgreSQL primary |" in scaling and "| Redis Cluster, CPU |" in scaling

    if shutil.which("gnuplot"):
        for name in ("latency", "throughput", "hit_ratio", "queue_wait", "db_qps"):
            svg = perf / f"{name}.svg"
            assert svg.exists() and "<svg" in svg.read_text()[:2000], name
            assert f"perf/{name}.svg" in report


def _fixture(d):
    """A bench.json and the chatload files beside it with round figures (see the test below)."""
    d.mkdir()
    cpu = lambda **g: {f"cpu_{k}_{p}_s": v / 2 for k, v in g.items() for p in ("user", "sys")}
    bench = {
        "quick": True, "ref_seconds": 10, "page_bytes": 10000, "elapsed_s": 240, "send_conversations": 100,
        "seed": {"messages": 5000}, "realtime": {"clients": 100, "cpu": {"chatd_s": 2, "redis_s": 0.02, "wall_s": 20}},
        "refs": {"redis_used_memory_bytes": 1e6, "redis_keys": 1000},
        "wrk": {"seconds": 10, "results": {
            # answers: 1000/s x 10 s; sends 500/s x 10 s
            "cached": [dict(rps=1000, **cpu(chatd=0.2, redis=0.1, db=0))],
            "bypass": [dict(rps=1000, **cpu(chatd=0.3, redis=0, db=0.5))],
            "bypass-inbox": [dict(rps=1000, **cpu(chatd=0.5, redis=0, db=6.36))],
            "cluster": [dict(rps=3000, **cpu(chatd=0.6, haproxy=0.3, redis=0.3))],
            "send": [dict(rps=500, wal_bytes=5e6, db_queries=20000, **cpu(chatd=0.5, pgbouncer=0.1, pg=1, redis=0.05))],
        }},
    }
    (d / "bench.json").write_text(json.dumps(bench))
    (d / "chat.json").write_text(json.dumps({"mix": "history=66,inbox=10,send=4,read=20", "stages": [
        {"cache_hit_ratio": 0.75, "cache_hit_ratio_by_kind": {"history": 0.8, "inbox": 0.5},
         "db_queries_per_s_mean": 500, "achieved_rate": 1000}]}))
    (d / "realtime.json").write_text(json.dumps({
        "shape": {"mean_fanout": 100}, "rss": {"per_socket_bytes": 4000, "before_kb": 10240},
        "stages": {"steady": {"delivered_frames_per_s": 10000, "chatd_cpu_cores": 0.1, "sends_ok": 900,
                              "frames_received": 90000},
                   "reconnect": {"sends_ok": 100, "frames_received": 10000}}}))


def test_scaling_model_arithmetic(tmp_path):
    """bench/scaling.py on a fixture: the unit costs, the sizes and the document, each checked against
    the arithmetic done by hand on the fixture's round figures (default parameters)."""
    perf = tmp_path / "perf"
    _fixture(perf)
    out = tmp_path / "scaling.md"
    subprocess.run(["/usr/bin/python3", str(REPO / "bench" / "scaling.py"), "--bench", str(perf / "bench.json"),
                    "--out", str(out)], check=True, timeout=30)
    u = {k: x["value"] for k, x in json.loads((perf / "bench.json").read_text())["unit_costs"].items()}
    expect = {"read_cached_chatd_us": 20, "read_uncached_chatd_us": 30, "read_cached_redis_us": 10,
              "read_uncached_db_us": 50, "send_chatd_us": 100, "send_pgbouncer_us": 20, "send_pg_us": 200,
              "send_redis_us": 10, "send_wal_bytes": 1000, "send_db_queries": 4, "pgbouncer_query_us": 5,
              "frame_chatd_us": 10, "frames_per_send": 100, "socket_bytes": 4000, "publish_redis_us": 20,
              "frame_chatd_us_whole_run": 20, "mix_reads_per_send": 24, "mix_hit_ratio": 0.75,
              "mix_db_queries_per_request": 0.5, "redis_bytes_per_key": 1000, "lb_haproxy_us": 10,
              "cluster_read_cached_chatd_us": 20, "read_uncached_inbox_db_us": 636,
              # (66 % history x 0.2 missed + 10 % inbox x 0.5) / 96 % non-send; the same weighted by
              # 50 µs (history) and 636 µs (inbox): (6.6 + 31.8) / 0.96 = 40 µs; 20 markers / 4 sends
              "mix_miss_ratio_per_read": 0.182 / 0.96, "mix_miss_db_us_per_read": 40, "mix_writes_per_send": 5}
    for k, want in expect.items():
        assert u[k] == pytest.approx(want), (k, u[k])

    import sys
    sys.path.insert(0, str(REPO / "bench"))
    import scaling
    p = {name: default for name, default, _ in scaling.PARAMS}
    m = scaling.model(json.loads((perf / "bench.json").read_text())["unit_costs"], p)
    # 50,000 sends/s, 24 reads per send; chatd: reads 1.2M x (0.75 x 20 + 0.25 x 30) µs = 27 cores,
    # sends 5, frames 5M/s x 10 µs = 50: 82 cores / (16 x 0.6) -> 9 hosts; memory 4 GB -> 1 host
    assert m["reads_per_s"] == pytest.approx(1.2e6) and m["frames_per_s"] == pytest.approx(5e6)
    assert m["chatd_cores"] == pytest.approx(82)
    assert (m["chatd_hosts_by_cpu"], m["chatd_hosts_by_mem"], m["chatd_hosts"]) == (9, 1, 9)
    # HAProxy: 1.25M requests x 10 µs = 12.5 cores -> 2 hosts of 16 cores at 60 %
    assert m["haproxy_cores"] == pytest.approx(12.5) and m["haproxy_hosts"] == 2
    # PgBouncer: 1.25M requests x 0.5 statements x 5 µs = 3.125 cores -> 6 processes at 60 %
    assert m["pgbouncer_cores"] == pytest.approx(3.125) and m["pgbouncer_processes"] == 6
    # primary: each send and its 5 read markers costed as a send: 50,000 x 6 x 200 µs = 60 cores,
    # 300 MB/s of WAL, 1.2M statements/s; 64 x 0.6 / (6 x 200 µs) = 32,000 sends/s
    assert m["writes_per_send"] == pytest.approx(6) and m["primary_cores"] == pytest.approx(60)
    assert m["wal_bytes_per_s"] == pytest.approx(3e8) and m["primary_statements_per_s"] == pytest.approx(1.2e6)
    assert m["primary_sends_ceiling"] == pytest.approx(32000)
    # replicas: 1.2M reads/s x 40 µs = 48 cores -> 2 hosts of 64 at 60 %; 1.2M x 0.182 / 0.96 misses/s
    assert m["replica_cores"] == pytest.approx(48) and m["replicas"] == 2
    assert m["misses_per_s"] == pytest.approx(227500)
    # the same load with markers at a quarter of a send: 50,000 x 2.25 x 200 µs = 22.5 cores
    m4 = scaling.model(json.loads((perf / "bench.json").read_text())["unit_costs"], dict(p, write_cost_ratio=0.25))
    assert m4["primary_cores"] == pytest.approx(22.5)
    # Redis: 1.2M x 10 µs + 50,000 x max(10, 20) µs = 13 cores -> 22 shards; network out
    # 50,000 x min(100, 9) x 200 B + 1.2M x 0.75 x 10,000 B = 9.09 GB/s / (1.25 GB/s x 0.6) -> 13
    assert m["redis_cores"] == pytest.approx(13) and m["redis_shards_by_cpu"] == 22
    assert m["redis_out_bytes_per_s"] == pytest.approx(9.09e9) and m["redis_shards_by_net"] == 13
    assert m["redis_shards"] == 22
    # chatd network out: 1.2M x 10,000 B + 5M x 260 B = 13.3 GB/s -> 18 hosts
    assert m["chatd_hosts_by_net"] == 18

    doc = out.read_text()
    assert "shortened run" in doc and "| `--sends-per-s` | 50,000 |" in doc
    assert "| `send_wal_bytes` | 1,000 |" in doc
    assert "| 9 hosts |" in doc and "| 6 processes |" in doc and "| 2 replicas |" in doc
    assert "| 22 shards |" in doc and "| 13 shards |" in doc and "chatd: **18 hosts**" in doc
    assert "WAL 300.0 MB/s" in doc and "| the PostgreSQL primary (writes) | 32,000 |" in doc
    # the ceilings are sorted: the first row saturates first
    rows = [line for line in doc.split("## What saturates first")[1].split("\n\n")[2].splitlines()[2:]]
    caps = [float(r.split("|")[2].replace(",", "")) for r in rows]
    assert caps == sorted(caps) and len(caps) == 6
