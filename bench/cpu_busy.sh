#!/usr/bin/env bash
# How busy the whole CPU is, minute by minute: one line per interval with the busy share of all
# cores (per mille, from /proc/stat: user+nice+system+irq+softirq+steal over all but iowait/idle)
# and the 1-minute load average. Used to check that a long study keeps both cores busy:
#   nohup bench/cpu_busy.sh 60 > cpu.log &     (then: awk on the busy= column)
set -euo pipefail
interval="${1:-60}"
read -r _ u n s i w q sq st _ < /proc/stat
prev_busy=$((u + n + s + q + sq + st)); prev_total=$((prev_busy + i + w))
while true; do
  sleep "$interval"
  read -r _ u n s i w q sq st _ < /proc/stat
  busy=$((u + n + s + q + sq + st)); total=$((busy + i + w))
  echo "$(date -u +%FT%T) busy=$((1000 * (busy - prev_busy) / (total - prev_total))) load=$(cut -d' ' -f1 /proc/loadavg)"
  prev_busy=$busy; prev_total=$total
done
