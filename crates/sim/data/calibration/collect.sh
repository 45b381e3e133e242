#!/bin/sh
# Collects the measured migrations the simulator's judge is fitted to (see BENCHMARKS.md,
# "Dirty-rate migration model", "The judge, fitted to measured migrations").
#
# Usage (root, QEMU, release build): collect.sh DROVER_BINARY OUT.jsonl [STOP_EPOCH]
# Each configuration runs pre-copy, post-copy and hybrid once; a configuration is only started
# before STOP_EPOCH (seconds since 1970), and a running one is stopped cleanly (SIGINT) there.
set -u
drover=$1
out=$2
stop=${3:-0}
configs="
256M memtouch:wss=128M,rate=2500 50MB/s
256M memtouch:wss=128M,rate=10000 50MB/s
256M memtouch:wss=64M,rate=10000 25MB/s
512M memtouch:wss=256M,rate=5000 50MB/s
256M memtouch:wss=128M,rate=max 50MB/s
256M memtouch:wss=128M,rate=10000 100MB/s
1G memtouch:wss=512M,rate=5000 100MB/s
256M idle 50MB/s
512M memtouch:wss=64M,rate=25000 100MB/s
512M memtouch:wss=256M,rate=15000 50MB/s
256M memtouch:wss=128M,rate=7000 50MB/s
256M memtouch:wss=64M,rate=2500 25MB/s
256M memtouch:wss=128M,rate=10000 uncapped
256M memtouch:wss=128M,rate=25000 50MB/s
512M idle 50MB/s
256M memtouch:wss=128M,rate=14000 50MB/s
256M memtouch:wss=128M,rate=max 100MB/s
256M memtouch:wss=64M,rate=max 25MB/s
1G idle 50MB/s
512M memtouch:wss=256M,rate=max 50MB/s
256M memtouch:wss=128M,rate=25000 100MB/s
512M memtouch:wss=64M,rate=max 100MB/s
512M memtouch:wss=256M,rate=max uncapped
1G memtouch:wss=512M,rate=max 100MB/s
"
echo "$configs" | while read -r mem wl bw; do
  [ -z "$mem" ] && continue
  now=$(date +%s)
  if [ "$stop" -gt 0 ] && [ "$now" -ge "$stop" ]; then
    echo "stop time reached; not starting $mem $wl $bw" >&2
    break
  fi
  left=$(( stop > 0 ? stop - now : 3600 ))
  cap=""
  [ "$bw" != "uncapped" ] && cap="--bandwidth $bw"
  echo "$(date -u +%T) $mem $wl $bw" >&2
  # shellcheck disable=SC2086
  timeout -s INT "$left" "$drover" migrate-bench -t precopy -t postcopy -t hybrid \
    --memory "$mem" --workload "$wl" $cap --accel tcg --json >> "$out"
done
