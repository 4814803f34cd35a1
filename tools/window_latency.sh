#!/usr/bin/env bash
# Time spec toggles in the real window: open MODEL under Xvfb (tools/screenshot.sh), go to the
# Quantize tab, type each spec into "Layer spec" of the selected layer and press Enter, GAP seconds
# apart, then print from the window's trace (QUANTSCOPE_TRACE) how long each edit took to be drawn.
# usage: tools/window_latency.sh MODEL [SPEC...]   (env GAP=seconds, default 1.5; BIN as for screenshot.sh)
# The clicks assume the default 1280 × 800 layout with a fresh configuration (no restored plan).
set -euo pipefail
model=$1; shift
specs=("$@")
[ ${#specs[@]} -eq 0 ] && specs=(int8 int4:g128 nvfp4 uint4:g64 fp8_e5m2 int3:channel int4:channel:clip=mse int8)
steps='xdotool windowfocus $WID; xdotool mousemove 222 12 click 1; sleep 4;'
for s in "${specs[@]}"; do
  steps+=" xdotool mousemove 920 133 click 1; sleep 0.3; xdotool key ctrl+a; xdotool type --delay 5 '$s';"
  steps+=" xdotool key Return; sleep ${GAP:-1.5};"
done
cfg=$(mktemp -d)
XDG_CONFIG_HOME=$cfg QUANTSCOPE_TRACE=1 BIN=${BIN:-./target/release/quantscope} WAIT=${WAIT:-6} \
  STEPS="$steps" "$(dirname "$0")/screenshot.sh" "${OUT:-/tmp/window_latency.png}" "$model" >/dev/null
rm -rf "$cfg"
# "set L to S" starts an edit; the first "drawn: plots" and "drawn: plots and clip lines" after it end it
awk '
  / set .* to / { if (spec != "") report(); spec = $NF; t0 = $1; plots = ""; lines = ""; next }
  spec != "" && /drawn: plots of/ && plots == "" { plots = $1 - t0 }
  spec != "" && /drawn: plots and clip lines of/ && lines == "" {
    lines = $1 - t0; if (plots == "") plots = lines }
  / slow frame: / { slow++ }
  function report() {
    if (plots == "") printf "%-24s already drawn\n", spec
    else if (lines == "") printf "%-24s plots %7.1f ms   clip lines not drawn\n", spec, plots
    else printf "%-24s plots %7.1f ms   clip lines %7.1f ms\n", spec, plots, lines
  }
  END { if (spec != "") report(); printf "frames over 8 ms to build: %d\n", slow }
' /tmp/quantscope-window.log
