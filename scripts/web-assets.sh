#!/usr/bin/env bash
# Fetches the web pages' third-party browser libraries from the npm registry (versions pinned by
# web/package-lock.json) and copies the files the pages load into src/agora/web/static/vendor/.
# Nothing third-party is committed and nothing is loaded from a CDN at run time.
#
# Quick when already done: a stamp keyed on the lock file and this script skips the work while
# every copied file is present. Set AGORA_WEB_ASSETS_FORCE=1 to fetch again.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
web="$root/web"
vendor="$root/src/agora/web/static/vendor"
stamp="$vendor/.stamp"

# source (under web/node_modules) -> name in vendor/
files=(
  "marked/lib/marked.umd.js marked.umd.js"
  "dompurify/dist/purify.min.js purify.min.js"
  "@highlightjs/cdn-assets/highlight.min.js highlight.min.js"
  "@highlightjs/cdn-assets/styles/github-dark.min.css highlight-github-dark.min.css"
  "uplot/dist/uPlot.iife.min.js uPlot.iife.min.js"
  "uplot/dist/uPlot.min.css uPlot.min.css"
  "swagger-ui-dist/swagger-ui-bundle.js swagger-ui-bundle.js"
  "swagger-ui-dist/swagger-ui.css swagger-ui.css"
  "marked/LICENSE licenses/marked.txt"
  "dompurify/LICENSE licenses/dompurify.txt"
  "@highlightjs/cdn-assets/LICENSE licenses/highlight.js.txt"
  "uplot/LICENSE licenses/uplot.txt"
  "swagger-ui-dist/LICENSE licenses/swagger-ui.txt"
  "swagger-ui-dist/NOTICE licenses/swagger-ui-NOTICE.txt"
  "swagger-ui-dist/swagger-ui-bundle.js.LICENSE.txt licenses/swagger-ui-bundle.txt"
)

key="$(cat "$web/package-lock.json" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)"
all_present() {
  local entry
  for entry in "${files[@]}"; do
    [ -s "$vendor/${entry#* }" ] || return 1
  done
}
if [ -z "${AGORA_WEB_ASSETS_FORCE:-}" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ] \
  && all_present; then
  echo "web assets up to date in ${vendor#"$root"/}"
  exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "error: npm is missing; the web pages' libraries (marked, DOMPurify, highlight.js, uPlot," >&2
  echo "Swagger UI) come from the npm registry. Install Node.js and npm (Debian: apt-get install npm)." >&2
  exit 1
fi

echo "fetching web assets with npm ci (web/package-lock.json)"
# No install scripts: only files are copied, and swagger-ui-dist's dependency @scarf/scarf
# would report the install to its analytics service.
(cd "$web" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error)

rm -rf "$vendor"
mkdir -p "$vendor/licenses"
for entry in "${files[@]}"; do
  source="$web/node_modules/${entry% *}"
  if [ ! -s "$source" ]; then
    echo "error: $source is missing after npm ci: did a package change its layout?" >&2
    exit 1
  fi
  cp "$source" "$vendor/${entry#* }"
done
echo "$key" > "$stamp"
rm -rf "$web/node_modules"  # only the copies are used; npm ci starts afresh anyway
echo "web assets copied to ${vendor#"$root"/}"
