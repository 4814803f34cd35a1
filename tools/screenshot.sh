#!/usr/bin/env bash
# Open the real window under Xvfb, optionally run xdotool steps, and capture the screen.
# usage: tools/screenshot.sh OUT.png [BINARY_ARGS...]   (env STEPS='xdotool commands; …', WAIT=seconds)
set -euo pipefail
out=$1; shift
bin=${BIN:-./target/debug/quantscope}
export DISPLAY=:${DISPLAY_NUM:-99} XDG_RUNTIME_DIR=$(mktemp -d); chmod 700 "$XDG_RUNTIME_DIR"; unset WAYLAND_DISPLAY
Xvfb "$DISPLAY" -screen 0 1280x800x24 -nolisten tcp >/dev/null 2>&1 &
xvfb=$!
trap 'kill $app $xvfb 2>/dev/null || true' EXIT
sleep 1
"$bin" "$@" >/tmp/quantscope-window.log 2>&1 &
app=$!
WID=$(timeout 60 xdotool search --sync --name 'Quantscope' | head -1)
sleep "${WAIT:-4}"
if [ -n "${STEPS:-}" ]; then eval "$STEPS"; sleep 2; fi
import -window root -crop 1280x800+0+0 +repage "$out"
echo "saved $out (window $WID)"
