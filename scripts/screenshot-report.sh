#!/usr/bin/env bash
# Renders a report.html to a PNG with headless Chromium, to look at a report without a
# desktop (or to check that it renders with no network).
#
# Usage: scripts/screenshot-report.sh REPORT.html [OUT.png] [WIDTHxHEIGHT]
#   OUT.png defaults to REPORT.png beside the report; the window defaults to 1200x3000.
#   Set CHROMIUM to pick the browser binary (default: the first of chromium,
#   chromium-browser, google-chrome found on PATH).
#
# The browser runs with a throw-away profile and with every host name made unresolvable, so
# a report that tried to fetch anything would show it missing instead of fetching it.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 3 || "$1" == -h || "$1" == --help ]]; then
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi

report=$1
out=${2:-"${report%.*}.png"}
size=${3:-1200x3000}

if [[ ! -f "$report" ]]; then
    echo "screenshot-report: $report: no such file" >&2
    exit 2
fi
if [[ ! "$size" =~ ^[0-9]+x[0-9]+$ ]]; then
    echo "screenshot-report: window size must be WIDTHxHEIGHT, not $size" >&2
    exit 2
fi

browser=${CHROMIUM:-}
if [[ -z "$browser" ]]; then
    for candidate in chromium chromium-browser google-chrome; do
        if command -v "$candidate" >/dev/null 2>&1; then
            browser=$candidate
            break
        fi
    done
fi
if [[ -z "$browser" ]]; then
    echo "screenshot-report: no Chromium found (install chromium or set CHROMIUM)" >&2
    exit 2
fi

# Absolute file:// URL and output path (Chromium resolves relative ones against its own cwd).
abs_report=$(cd "$(dirname "$report")" && pwd)/$(basename "$report")
out_dir=$(dirname "$out")
mkdir -p "$out_dir"
abs_out=$(cd "$out_dir" && pwd)/$(basename "$out")

profile=$(mktemp -d "${TMPDIR:-/tmp}/screenshot-report.XXXXXX")
trap 'rm -rf "$profile"' EXIT

"$browser" \
    --headless \
    --no-sandbox \
    --disable-gpu \
    --hide-scrollbars \
    --no-first-run \
    --disable-extensions \
    --disable-background-networking \
    --disable-sync \
    --disable-component-update \
    --host-resolver-rules="MAP * ~NOTFOUND" \
    --user-data-dir="$profile" \
    --window-size="${size/x/,}" \
    --screenshot="$abs_out" \
    "file://$abs_report" >/dev/null 2>&1 || {
    echo "screenshot-report: $browser failed on $report" >&2
    exit 1
}

if [[ ! -s "$abs_out" ]]; then
    echo "screenshot-report: no screenshot was written to $out" >&2
    exit 1
fi
echo "$out"
