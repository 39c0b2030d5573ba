#!/usr/bin/env bash
# Refresh the dashboard's graph layout library, @dagrejs/dagre, vendored as one pinned,
# minified file with its license (dagd/net/web/vendor/). Needs npm (only here: nothing of the
# dashboard is built at install or test time).
#
#   scripts/vendor-dagre.sh            # the version pinned below
#   scripts/vendor-dagre.sh 3.2.0      # another version (then update VERSION below and
#                                      # docs/dashboard.md)
set -euo pipefail
VERSION="${1:-3.1.3}"
cd "$(dirname "$0")/.."
dest=dagd/net/web/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "@dagrejs/dagre@${VERSION}" >/dev/null && tar xzf dagrejs-dagre-*.tgz)
mkdir -p "$dest"
# The file ends with a sourceMappingURL comment; the map is not vendored, so drop the comment
# (a browser with developer tools open would ask for it).
grep -v '^//# sourceMappingURL=' "$work/package/dist/dagre.min.js" > "$dest/dagre.min.js"
cp "$work/package/dist/dagre.min.js.LEGAL.txt" "$dest/dagre.min.js.LEGAL.txt"
cp "$work/package/LICENSE" "$dest/dagre.LICENSE"
{
  echo "@dagrejs/dagre ${VERSION} (https://github.com/dagrejs/dagre), MIT license: dagre.LICENSE"
  echo "dist/dagre.min.js from the npm package, refreshed by scripts/vendor-dagre.sh"
  echo "sha256 $(sha256sum "$dest/dagre.min.js" | cut -d' ' -f1)  dagre.min.js"
} > "$dest/README.txt"
echo "vendored @dagrejs/dagre ${VERSION} into $dest"
