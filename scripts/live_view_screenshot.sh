#!/usr/bin/env bash
# The picture of docs/live_view.md: the simulated pipeline with `perception launch --view`, and after
# ~20 s a screenshot of the Rerun web viewer in headless Chromium (software GL: SwiftShader).
#
#   bash scripts/live_view_screenshot.sh [OUT.png] [SECONDS_BEFORE_SHOT]
#
# Needs: the venv with '.[dev]' (rerun-sdk, websocket-client), and chromium (apt-get install -y chromium).
# Uses the default launch's TCP ports 5550-5560 and 19090 (web) / 19876 (gRPC) / 19222 (DevTools).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-docs/images/live_view.png}
SETTLE=${2:-20}
PY=${PYTHON:-.venv/bin/python}
WEB=19090; GRPC=19876
LOGS=$(mktemp -d)
mkdir -p "$(dirname "$OUT")"

"$PY" -m perception.cli launch --view --quiet --duration $((SETTLE + 40)) --log-dir "$LOGS" \
    --view-arg=--web-port=$WEB --view-arg=--grpc-port=$GRPC > "$LOGS/launch.out" 2>&1 &
LAUNCH=$!
trap 'kill -TERM $LAUNCH 2>/dev/null || true' EXIT
sleep "$SETTLE"
URL="http://127.0.0.1:$WEB/?url=rerun%2Bhttp%3A%2F%2F127.0.0.1%3A$GRPC%2Fproxy"
"$PY" scripts/cdp_screenshot.py "$URL" "$OUT.full.png" --wait 15 --size 1600x900 --port 19222
kill -TERM $LAUNCH 2>/dev/null || true
wait $LAUNCH || true
trap - EXIT
# keep it small enough to commit (< 500 KB): palette PNG at full size, else scaled down
"$PY" - "$OUT.full.png" "$OUT" <<'PYEOF'
import sys

import cv2

img = cv2.imread(sys.argv[1])
for width in (1600, 1400, 1200, 1000):
    small = img if width == img.shape[1] else cv2.resize(img, (width, round(img.shape[0] * width / img.shape[1])), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".png", small, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if len(buf) < 500_000:
        break
open(sys.argv[2], "wb").write(buf.tobytes())
print(f"{sys.argv[2]}: {small.shape[1]}x{small.shape[0]}, {len(buf)} bytes")
PYEOF
rm -f "$OUT.full.png"
echo "view log: $LOGS/view.log"; tail -n 2 "$LOGS/view.log"
