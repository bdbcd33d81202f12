#!/usr/bin/env bash
# Soak under faults (report in benches/SOAK.md):
#
#   bash scripts/soak.sh                  # the short run (3 min, one fault cycle), as in scripts/test.sh
#   bash scripts/soak.sh --minutes 20     # the long run (a fault cycle every 150 s)
#   bash scripts/soak.sh --release ...    # the release build of the service (default: debug)
#   bash scripts/soak.sh --report FILE    # where the run's report goes (default: target/soak/report.md)
#   bash scripts/soak.sh --publish ...    # also replace the committed pictures and data: the run's
#                                         # time series to benches/results/soak.jsonl, the picture
#                                         # benches/soak-timeline.svg and the verdict at the top of
#                                         # benches/SOAK.md (scripts/plots.py)
#
# Next to the report go the run's time series (report.series.jsonl: outcomes and latency per 5 s,
# RSS of each replica per second, the fault windows) and its picture (soak-timeline.svg).
#
# Starts a private Redis Sentinel set-up (master, replica, 3 sentinels) on spare ports and
# stops it on exit; the driver (examples/soak) starts and breaks everything else: a private
# PostgreSQL cluster behind a fault-injecting TCP proxy, the aiosmtpd sink, two service
# replicas. Exits non-zero if an invariant fails.
set -euo pipefail
cd "$(dirname "$0")/.."

MINUTES=3
RATE=2
PROFILE=debug
REPORT=""
PUBLISH=0
while (( $# )); do
  case "$1" in
    --minutes) MINUTES=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --release) PROFILE=release; shift ;;
    --report) REPORT=$2; shift 2 ;;
    --publish) PUBLISH=1; shift ;;
    *) echo "usage: $0 [--minutes N] [--rate R] [--release] [--report FILE] [--publish]" >&2; exit 2 ;;
  esac
done

python3 -c 'import aiosmtpd' 2>/dev/null || python3 -m pip install -q aiosmtpd

# Ports of this run's Sentinel set-up: away from the test set-up (7201-7213) and the cluster.
export REDIS_SENTINEL_DATA_PORTS=${SOAK_REDIS_DATA_PORTS:-7301 7302}
export REDIS_SENTINEL_PORTS=${SOAK_SENTINEL_PORTS:-7311 7312 7313}
export REDIS_SENTINEL_SERVICE=soak
export REDIS_SENTINEL_DIR=${SOAK_SENTINEL_DIR:-/tmp/recovery-soak-sentinel}
read -r -a sentinels <<<"$REDIS_SENTINEL_PORTS"
hosts=()
for port in "${sentinels[@]}"; do hosts+=("127.0.0.1:$port"); done
SENTINEL_URL="redis+sentinel://$(IFS=,; echo "${hosts[*]}")/soak"

bash scripts/redis-sentinel.sh start
trap 'bash scripts/redis-sentinel.sh stop >/dev/null 2>&1 || true' EXIT

cargo_args=(--locked)
[[ $PROFILE == release ]] && cargo_args+=(--release)
cargo build "${cargo_args[@]}" --bin recovery-service --example soak
TARGET=${CARGO_TARGET_DIR:-target}
WORK=$(mktemp -d /tmp/recovery-soak.XXXXXX)
chmod 755 "$WORK"   # the private PostgreSQL runs as user postgres and must reach its data
[[ -n $REPORT ]] || { mkdir -p "$TARGET/soak"; REPORT=$TARGET/soak/report.md; }
SERIES=${REPORT%.md}.series.jsonl

status=0
"$TARGET/$PROFILE/examples/soak" \
  --minutes "$MINUTES" --rate "$RATE" \
  --bin "$TARGET/$PROFILE/recovery-service" \
  --sentinel-url "$SENTINEL_URL" \
  --work "$WORK" --report "$REPORT" --series "$SERIES" || status=$?
# The pictures, pass or fail (a failed run is the one to look at). A picture that cannot be drawn
# does not change the soak's verdict.
if [[ -s $SERIES ]]; then
  python3 scripts/plots.py soak "$SERIES" --out "$(dirname "$REPORT")" ||
    echo "soak: the picture could not be drawn (scripts/plots.py; matplotlib from scripts/test-services.sh)" >&2
  if (( PUBLISH )); then
    mkdir -p benches/results
    cp "$SERIES" benches/results/soak.jsonl
    python3 scripts/plots.py soak benches/results/soak.jsonl --out benches
    python3 scripts/plots.py soak-report benches/results/soak.jsonl benches/SOAK.md
  fi
fi
if (( status == 0 )); then
  rm -rf -- "$WORK"
else
  echo "soak: failed; logs kept in $WORK" >&2
fi
exit $status
