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
                                            "pgbench"}
    chatd_groups = ("chatd", "redis", "db", "wrk")
    groups = {"nginx": ("nginx", "wrk"), "bypass": chatd_groups, "cached": chatd_groups,
              "bypass-inbox": chatd_groups, "cached-inbox": chatd_groups, "pgbench": ("db", "pgbench")}
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
    assert bench["realtime"] == {"ran": True, "clients": 100, "frame_rate": 2000, "seconds": 2}
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

    if shutil.which("gnuplot"):
        for name in ("latency", "throughput", "hit_ratio", "queue_wait", "db_qps"):
            svg = perf / f"{name}.svg"
            assert svg.exists() and "<svg" in svg.read_text()[:2000], name
            assert f"perf/{name}.svg" in report
