"""The benchmark's table and its verdict on the budgets (DESIGN.md, "Budgets that shape the
design")."""

from __future__ import annotations

from typing import Any

TARGET_LEVEL_LATENCY = 10
TARGET_LEVEL_LOAD = 500
MAX_RATIO = 1.05
MAX_HOP_MS = 1.0
MAX_CPU_MS = 15.0
MIN_SPEEDUP = 30.0
MAX_KIB_PER_RUN = 64.0


def _level(rows: list[dict[str, Any]], level: int) -> dict[str, Any] | None:
    return next((r for r in rows if r["level"] == level), None)


def _verdict(value: float | None, limit: float, *, at_most: bool = True) -> dict[str, Any]:
    if value is None:
        return {"value": None, "limit": limit, "met": None}
    met = value <= limit if at_most else value >= limit
    return {"value": round(value, 4), "limit": limit, "met": met}


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """Each budget with its measured value and whether it was met (None: not measured)."""
    podcrew, baseline = result.get("podcrew", []), result.get("baseline", [])
    out: dict[str, Any] = {}
    at10 = _level(podcrew, TARGET_LEVEL_LATENCY)
    if at10:
        out["a_e2e_p50_over_critical_at_10"] = _verdict(
            at10["e2e_over_critical"]["p50_over_p50"], MAX_RATIO
        )
        llm = at10.get("llm_hop_overhead_ms", {}).get("all", {}).get("p50")
        out["a_llm_hop_overhead_p50_ms_at_10"] = _verdict(llm, MAX_HOP_MS)
        for target, hop in (at10.get("internal_hops_ms") or {}).items():
            name = target.replace("-", "_")
            if hop.get("hop_overhead_p50") is not None:
                out[f"a_{name}_hop_overhead_p50_ms_at_10"] = _verdict(
                    hop["hop_overhead_p50"], MAX_HOP_MS
                )
            else:
                out[f"a_{name}_hop_overhead_mean_ms_at_10"] = _verdict(
                    hop.get("hop_overhead_mean"), MAX_HOP_MS
                )
    cpu_levels = [r for r in podcrew if r["level"] >= TARGET_LEVEL_LATENCY]
    if cpu_levels:
        worst = max(cpu_levels, key=lambda r: r["cpu"]["ms_per_run"])
        out["b_cpu_ms_per_run_worst_level"] = {
            **_verdict(worst["cpu"]["ms_per_run"], MAX_CPU_MS),
            "level": worst["level"],
        }
    at500 = _level(podcrew, TARGET_LEVEL_LOAD)
    if at500:
        failed = at500["runs"] - at500["succeeded"]
        out["c_all_runs_complete_at_500"] = {
            "value": f"{at500['succeeded']}/{at500['runs']}",
            "errors": at500["errors"],
            "met": failed == 0,
        }
        base = _level(baseline, TARGET_LEVEL_LOAD)
        if base and base["throughput"]["steady_rps"]:
            speedup = at500["throughput"]["steady_rps"] / base["throughput"]["steady_rps"]
            out["c_throughput_vs_baseline_at_500"] = _verdict(speedup, MIN_SPEEDUP, at_most=False)
        out["c_kib_per_inflight_run_at_500"] = _verdict(
            at500["memory"]["kib_per_inflight_run"], MAX_KIB_PER_RUN
        )
    streams = result.get("streams")
    if streams:
        out["streams_every_event_delivered"] = {
            "value": f"{streams['complete']}/{streams['subscribers']}",
            "met": streams["complete"] == streams["subscribers"],
        }
    return out


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render(result: dict[str, Any]) -> str:
    """Markdown: the levels table, memory, streams, the budgets."""
    rows = [*result.get("podcrew", []), *result.get("baseline", [])]
    lines = [_title(result), "", *_levels_table(result, rows), ""]
    lines += _processes(rows)
    lines += _timeline_table([r for r in result.get("podcrew", []) if r.get("timeline_ms")])
    streams = result.get("streams")
    if streams:
        lines += ["", _streams(streams)]
    lines += _budgets(result.get("targets") or {})
    return "\n".join(lines)


def _title(result: dict[str, Any]) -> str:
    cfg, machine = result["config"], result["machine"]
    return (
        f"podcrew bench — {machine['cpus']} CPUs ({machine['cpu_model']}), "
        f"LLM latency {cfg['latency_s'] * 1000:.0f} ms/call, {cfg['workers']} worker(s)"
    )


def _levels_table(result: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """One row per level of each system; podcrew's runs/s also as a multiple of the
    baseline's at the same level."""
    lines = [
        "| system | conc. | runs ok/all | runs/s | e2e p50 | p95 | p99 (ms) | critical p50 "
        "| e2e÷crit | LLM hop p50 (ms) | research hop p50 (ms) | CPU ms/run | KiB/in-flight "
        "| errors |",
        "|" + "---|" * 14,
    ]
    base_by_level = {r["level"]: r for r in result.get("baseline", [])}
    return lines + [_level_row(row, base_by_level.get(row["level"])) for row in rows]


def _level_row(row: dict[str, Any], base: dict[str, Any] | None) -> str:
    hops = row.get("internal_hops_ms") or {}
    research = hops.get("research-agent") or {}
    research_hop = research.get("hop_overhead_p50", research.get("hop_overhead_mean"))
    llm = (row.get("llm_hop_overhead_ms") or {}).get("all", {}).get("p50")
    rps = row["throughput"]["steady_rps"]
    speed = ""
    if row["system"] == "podcrew" and base and base["throughput"]["steady_rps"]:
        speed = f" ({rps / base['throughput']['steady_rps']:.1f}x baseline)"
    errors = ", ".join(f"{k}: {v}" for k, v in row["errors"].items()) or "0"
    return (
        f"| {row['system']}{' (window)' if row.get('duration_limited') else ''} "
        f"| {row['level']} | {row['succeeded']}/{row['runs']} | {rps:.2f}{speed} "
        f"| {_ms(row['e2e_ms']['p50'])} | {_ms(row['e2e_ms']['p95'])} "
        f"| {_ms(row['e2e_ms']['p99'])} | {_ms(row['critical_path_ms']['p50'])} "
        f"| {_num(row['e2e_over_critical']['p50_over_p50'], 3)} | {_num(llm)} "
        f"| {_num(research_hop)} | {_num(row['cpu']['ms_per_run'], 1)} "
        f"| {_num(row['memory']['kib_per_inflight_run'], 1)} | {errors} |"
    )


def _processes(rows: list[dict[str, Any]]) -> list[str]:
    """Per level: each process's peak RSS and CPU, how busy the cores were, Redis commands."""
    lines = ["Peak RSS per process (MiB) and CPU ms per run by process:", ""]
    for row in rows:
        peaks = ", ".join(
            f"{n} {kib / 1024:.0f}" for n, kib in sorted(row["memory"]["rss_peak_kib"].items())
        )
        cpu = ", ".join(
            f"{n} {v:.1f}" for n, v in sorted(row["cpu"]["ms_per_run_by_process"].items())
        )
        busy = row["cpu"]["cores_busy"]
        lines.append(
            f"- {row['system']} @ {row['level']}: RSS {peaks}; CPU {cpu}; simulator "
            f"{row['cpu']['simulator_ms_per_run']:.1f}; cores busy: measured "
            f"{busy['measured']:.2f}, simulator {busy['simulator']:.2f}, load generator "
            f"{busy['loadgen']:.2f}, other processes {busy['other_processes']:.2f}"
        )
        commands = row.get("redis_commands_per_run")
        if commands:
            top = ", ".join(f"{k} {v:g}" for k, v in list(commands.items())[1:9])
            lines.append(f"  Redis commands per run: {commands['all']:g} ({top})")
    return lines


def _timeline_table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    keys = list(rows[0]["timeline_ms"])
    lines = ["", "Time outside the LLM along the critical path, p50 ms per segment:", ""]
    lines.append("| conc. | " + " | ".join(keys) + " |")
    lines.append("|" + "---|" * (len(keys) + 1))
    for row in rows:
        cells = " | ".join(_ms(row["timeline_ms"][k]["p50"]) for k in keys)
        lines.append(f"| {row['level']} | {cells} |")
    return lines


def _streams(streams: dict[str, Any]) -> str:
    rss = streams["api_rss_kib"]
    return (
        f"SSE: {streams['subscribers']} subscribers on one api process, "
        f"{streams['open_at_once']} open at once; {streams['complete']} received every "
        f"event of their run ({streams['events_delivered']} events, "
        f"{streams['events_per_stream']} per stream), {streams['errors']} errors, "
        f"{streams.get('streams_reconnected', 0)} streams resumed after the server closed "
        f"them ({streams.get('reconnects', 0)} reconnects: "
        f"{streams.get('closing_reasons') or 'none'}), "
        f"{streams['seconds_to_finish']} s to finish. api RSS idle "
        f"{rss['idle'] / 1024:.0f} MiB, all open {rss['all_open'] / 1024:.0f} MiB, peak "
        f"{rss['peak'] / 1024:.0f} MiB, after {rss['after'] / 1024:.0f} MiB: "
        f"{streams['api_kib_per_open_stream']:.1f} KiB per open stream, "
        f"{streams['api_peak_kib_per_stream']:.1f} KiB per stream at peak."
    )


def _budgets(verdicts: dict[str, Any]) -> list[str]:
    if not verdicts:
        return []
    lines = ["", "Budgets:", ""]
    for name, v in verdicts.items():
        mark = {True: "met", False: "MISSED", None: "not measured"}[v.get("met")]
        limit = f" (limit {v['limit']})" if "limit" in v else ""
        lines.append(f"- {name}: {v.get('value')}{limit} — {mark}")
    return lines
